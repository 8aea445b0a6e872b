"""A first run as a new user tries it (issue 18): the emulator `run` starts never outlives it,
and every bad setting stops `run` with one line naming the variable, exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from execution_service.adapters import emulator_record
from execution_service.adapters.emulator import free_port
from tests.fakes.waiting import wait_until

pytestmark = pytest.mark.emulator


def local_env(**extra) -> dict:
    """No emulator given, the local project: `run` starts its own emulator."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "MONGODB_URI")}
    return {**env, "MONGODB_URI": "mongomock://", **extra}


def start_run(workdir: Path, env: dict) -> subprocess.Popen:
    out = open(workdir / "run.out", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "execution_service", "run"], cwd=workdir,
                            env=env, stdout=out, stderr=subprocess.STDOUT)




def recorded_emulator(workdir: Path) -> tuple[int, int]:
    path = workdir / "logs" / emulator_record.RECORD_FILE

    def read():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record["emulator_pid"], record["emulator_start"]

    return wait_until(read, what="the emulator record")


def gone(pid: int, ticks: int) -> bool:
    return not emulator_record.is_alive(pid, ticks)


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path
    if not _daemon_alive(tmp_path):  # nothing a test starts may outlive it
        emulator_record.stop_leftover(tmp_path / "logs")


def _daemon_alive(workdir: Path) -> bool:
    try:
        record = json.loads((workdir / "logs" / emulator_record.RECORD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return emulator_record.is_alive(record["daemon_pid"], record["daemon_start"])


def test_given_run_when_sigterm_arrives_while_the_emulator_starts_then_no_emulator_is_left(
        workdir):
    daemon = start_run(workdir, local_env())
    try:
        pid, ticks = recorded_emulator(workdir)  # spawned; not answering yet, or just
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        wait_until(lambda: gone(pid, ticks), timeout=60, what="the emulator to stop")
        assert not (workdir / "logs" / emulator_record.HOST_FILE).exists()
        output = (workdir / "run.out").read_text()
        assert "Starting the Pub/Sub emulator (log: " in output
        assert "Traceback" not in output
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_given_a_running_daemon_when_killed_with_sigkill_then_its_emulator_goes_and_the_next_run_starts_clean(workdir):  # noqa: E501
    daemon = start_run(workdir, local_env())
    try:
        wait_until(lambda: "Running." in (workdir / "run.out").read_text(), what="Running.")
        output = (workdir / "run.out").read_text()
        assert "emulator log " + str(workdir / "logs" / "pubsub-emulator.log") in output
        pid, ticks = recorded_emulator(workdir)
        daemon.kill()
        daemon.wait(timeout=10)
        wait_until(lambda: gone(pid, ticks), timeout=60, what="the orphaned emulator to stop")
        # the record is still there: the next run must not trust it, and start cleanly
        assert (workdir / "logs" / emulator_record.RECORD_FILE).exists()
        again = start_run(workdir, local_env())
        try:
            wait_until(lambda: (workdir / "run.out").read_text().count("Running.") == 2,
                       what="the second run")
            second = recorded_emulator(workdir)
            assert second[0] != pid
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=30) == 0
            wait_until(lambda: gone(*second), timeout=60, what="the second emulator to stop")
        finally:
            if again.poll() is None:
                again.kill()
                again.wait()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


BAD_SETTINGS = {
    "log level": ({"LOG_LEVEL": "LOUD"}, "configuration: LOG_LEVEL: must be one of DEBUG"),
    "malformed uri": ({"MONGODB_URI": "mongodb://user:pw@"},
                      "configuration: MONGODB_URI: malformed: "),
    "unreachable uri": ({"MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}"},
                        "configuration: MONGODB_URI: cannot reach MongoDB"),
    "empty embedded path": ({"MONGODB_URI": "embedded://"},
                            "configuration: MONGODB_URI: embedded:// needs a directory"),
    "embedded path is a file": ({"MONGODB_URI": "embedded:///etc/hostname"},
                                "configuration: MONGODB_URI: cannot use /etc/hostname for the "
                                "embedded store"),
    "bad number": ({"ORDER_TIMEOUT_SECONDS": "abc"},
                   "configuration: ORDER_TIMEOUT_SECONDS: Input should be a valid number"),
    "admin chats": ({"TELEGRAM_ADMIN_CHAT_IDS": "42,desk"},
                    "configuration: TELEGRAM_ADMIN_CHAT_IDS: must be numeric chat ids"),
}


@pytest.mark.parametrize("env, expected", BAD_SETTINGS.values(), ids=BAD_SETTINGS)
def test_given_a_bad_setting_when_run_then_one_line_naming_it_exit_2_and_nothing_started(
        workdir, env, expected):
    done = subprocess.run([sys.executable, "-m", "execution_service", "run"], cwd=workdir,
                          env=local_env(**env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: " + expected), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "pw@" not in done.stderr
    assert not (workdir / "logs" / emulator_record.RECORD_FILE).exists()
    assert "Starting the Pub/Sub emulator" not in done.stdout
