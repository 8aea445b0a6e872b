"""The operators' scripts on a plain host (SPEC §10): start, status, send a signal, show it,
stop, from a working directory of their own, against the session's emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, SIGNALS
from tests.fakes.waiting import wait_until

SCRIPTS = REPO / "scripts"
SHOW = ("import sys; from execution_service.cli import main; "
        "from execution_service.cli_ops import register; register(main); main()")
UNSET = ("ACCOUNTS_FILE", "MONGODB_URI", "MONGODB_DATABASE", "LOG_DIR", "DATA_DIR",
         "USE_MOCK_BROKER", "TELEGRAM_ENABLED")


@pytest.fixture
def host(emulator_host, project_id, tmp_path):
    """A working directory and the environment an operator's shell would have."""
    env = {key: value for key, value in os.environ.items() if key not in UNSET}
    env.update(PUBSUB_EMULATOR_HOST=emulator_host, GOOGLE_CLOUD_PROJECT=project_id)
    return tmp_path, env


def run(host, *command: str, timeout: float = 90) -> subprocess.CompletedProcess:
    workdir, env = host
    return subprocess.run([sys.executable, *command], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout)


def script(host, name: str, *args: str) -> subprocess.CompletedProcess:
    return run(host, str(SCRIPTS / name), *args)


def wait_for_status(host, signal_id: str, timeout: float = 60) -> dict:
    def final() -> dict | None:
        orders = json.loads(run(host, "-m", "execution_service", "orders", "--json").stdout)
        record = next((o for o in orders if o["signal_id"] == signal_id), None)
        if record is not None and record["status"] in ("FILLED", "REJECTED", "CANCELLED"):
            return record
        return None

    return wait_until(final, timeout, f"{signal_id} final", poll=0.5)


def stop_if_running(pid: int | None) -> None:
    """Only the process start.py started, and only while it is still that daemon."""
    if pid is None:
        return
    for signum, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        if not _is_daemon(pid):
            return
        os.kill(pid, signum)
        deadline = time.monotonic() + wait
        while _is_daemon(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _is_daemon(pid: int) -> bool:
    try:
        return b"execution_service" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_given_a_plain_host_then_start_status_signal_show_stop(host):
    workdir, _ = host
    pid_file = workdir / "logs" / "execution_service.pid"
    pid = None
    try:
        started = script(host, "start.py")
        assert started.returncode == 0, started.stdout + started.stderr
        pid = int(pid_file.read_text())
        assert f"running: pid {pid}" in started.stdout
        assert (workdir / "logs" / "daemon.out").exists() and (workdir / "data").is_dir()

        again = script(host, "start.py")
        assert again.returncode == 1
        assert again.stdout.strip() == f"already running: pid {pid} (pid file {pid_file})"
        assert int(pid_file.read_text()) == pid

        status = script(host, "status.py", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["service"]["pid"] == pid

        signal_id = f"sig_ops_{uuid.uuid4().hex[:10]}"
        sent = script(host, "send_test_signal.py", "--file",
                      str(SIGNALS / "equity_market_buy.json"), "--signal-id", signal_id)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        record = wait_for_status(host, signal_id)
        assert record["status"] == "FILLED" and record["account_id"] == "acc_abc123"

        shown = run(host, "-c", SHOW, "show", signal_id, "--json")
        assert shown.returncode == 0, shown.stderr
        journey = json.loads(shown.stdout)
        assert [e["status"] for e in journey["events"]] == ["PENDING", "SUBMITTED", "FILLED"]
        assert journey["positions"] and journey["signal"]["execution_status"] == "FILLED"
        unknown = run(host, "-c", SHOW, "show", "sig_nobody")
        assert unknown.returncode == 2 and "no signal 'sig_nobody'" in unknown.stderr

        stopped = script(host, "stop.py")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert stopped.stdout.strip() == f"stopped (pid {pid})"
        assert not pid_file.exists() and not _is_daemon(pid)
        assert script(host, "status.py").returncode != 0
    finally:
        stop_if_running(pid)


def test_given_a_stale_pid_file_then_stop_never_signals_it_and_start_replaces_it(host):
    workdir, _ = host
    pid_file = workdir / "logs" / "execution_service.pid"
    pid_file.parent.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pid = None
    try:
        pid_file.write_text(f"{bystander.pid}\n")
        stopped = script(host, "stop.py")
        assert stopped.returncode == 0 and "stale pid file removed" in stopped.stdout
        assert bystander.poll() is None and not pid_file.exists()

        pid_file.write_text(f"{bystander.pid}\n")
        started = script(host, "start.py")
        assert started.returncode == 0, started.stdout + started.stderr
        pid = int(pid_file.read_text())
        assert pid != bystander.pid and "stale pid file" in started.stdout
        assert bystander.poll() is None
        assert script(host, "stop.py").returncode == 0
    finally:
        stop_if_running(pid)
        bystander.kill()
        bystander.wait()


def test_given_nothing_running_then_stop_says_so_and_status_fails(host):
    stopped = script(host, "stop.py")
    assert stopped.returncode == 0 and stopped.stdout.startswith("not running (no pid file")
    assert script(host, "status.py").returncode == 1
