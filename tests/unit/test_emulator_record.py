"""The emulator record in LOG_DIR: a leftover emulator is stopped only when pid and start time
prove it is the one a killed daemon started (issue 18)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from execution_service.adapters import emulator_record
from execution_service.adapters.emulator import free_port
from execution_service.errors import FatalConfigError


@pytest.fixture
def sleeper():
    """A process of our own, in its own session like the emulator."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               start_new_session=True)
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def write(log_dir, **record) -> None:
    (log_dir / emulator_record.RECORD_FILE).write_text(json.dumps(record))
    (log_dir / emulator_record.HOST_FILE).write_text(record.get("host", "127.0.0.1:1"))


def test_given_a_record_from_a_killed_daemon_then_its_emulator_is_stopped_and_the_files_go(
        tmp_path, sleeper):
    write(tmp_path, emulator_pid=sleeper.pid,
          emulator_start=emulator_record.start_ticks(sleeper.pid), daemon_pid=dead_pid(),
          daemon_start=1)
    said = emulator_record.stop_leftover(tmp_path)
    assert said == f"stopped the Pub/Sub emulator (pid {sleeper.pid}) an earlier run left behind"
    assert sleeper.wait(timeout=10) is not None
    assert list(tmp_path.iterdir()) == []


def test_given_a_reused_pid_with_another_start_time_then_nothing_is_signalled(tmp_path, sleeper):
    write(tmp_path, emulator_pid=sleeper.pid,
          emulator_start=emulator_record.start_ticks(sleeper.pid) - 1, daemon_pid=dead_pid(),
          daemon_start=1)
    assert emulator_record.stop_leftover(tmp_path) is None
    assert sleeper.poll() is None  # not ours: left alone
    assert list(tmp_path.iterdir()) == []


def test_given_the_recording_daemon_still_running_then_refused_and_nothing_touched(tmp_path,
                                                                                   sleeper):
    write(tmp_path, emulator_pid=sleeper.pid,
          emulator_start=emulator_record.start_ticks(sleeper.pid), daemon_pid=os.getpid(),
          daemon_start=emulator_record.start_ticks(os.getpid()), host="127.0.0.1:5")
    with pytest.raises(FatalConfigError, match=rf"another daemon \(pid {os.getpid()}\) runs "
                                               r"with its emulator on 127.0.0.1:5"):
        emulator_record.stop_leftover(tmp_path)
    assert sleeper.poll() is None
    assert (tmp_path / emulator_record.RECORD_FILE).exists()


def test_given_an_unreadable_record_then_it_is_dropped(tmp_path):
    (tmp_path / emulator_record.RECORD_FILE).write_text("{not json")
    assert emulator_record.stop_leftover(tmp_path).startswith("ignored an unreadable")
    assert emulator_record.stop_leftover(tmp_path) is None


def test_given_a_stale_host_file_then_the_cli_is_told_the_fix(tmp_path):
    (tmp_path / emulator_record.HOST_FILE).write_text(f"127.0.0.1:{free_port()}")
    with pytest.raises(FatalConfigError, match=r"no emulator answers there: the daemon that "
                                               r"wrote it is gone. Start the daemon"):
        emulator_record.read_host(tmp_path)
    assert emulator_record.read_host(tmp_path / "nowhere") is None
