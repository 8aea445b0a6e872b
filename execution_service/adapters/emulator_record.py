"""Which emulator the daemon started, kept in LOG_DIR so that nothing outlives it.

`pubsub-emulator.pid` holds the emulator's pid and its kernel start time, and the daemon's;
`pubsub-emulator.host` its address for the CLI. A process is ours only if its pid *and* its
start time match the record (a pid alone may have been reused): nothing else is ever signalled.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from execution_service.adapters.emulator import Emulator, emulator_answers
from execution_service.errors import FatalConfigError

HOST_FILE = "pubsub-emulator.host"
RECORD_FILE = "pubsub-emulator.pid"


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_alive(pid: int | None, ticks: int | None) -> bool:
    return pid is not None and ticks is not None and start_ticks(pid) == ticks


def write_record(log_dir: Path, emulator: Emulator) -> None:
    pid = emulator.process.pid
    record = {"emulator_pid": pid, "emulator_start": start_ticks(pid), "host": emulator.host,
              "daemon_pid": os.getpid(), "daemon_start": start_ticks(os.getpid())}
    (log_dir / RECORD_FILE).write_text(json.dumps(record))
    (log_dir / HOST_FILE).write_text(emulator.host)


def remove_record(log_dir: Path) -> None:
    for name in (RECORD_FILE, HOST_FILE):
        (log_dir / name).unlink(missing_ok=True)


def stop_leftover(log_dir: Path, wait: float = 10.0) -> str | None:
    """Before starting an emulator: stop the one a killed daemon left (proven ours), refuse
    while the daemon that started it still runs. Returns what it did, for the operator."""
    path = log_dir / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        remove_record(log_dir)
        return f"ignored an unreadable {path}"
    if is_alive(record.get("daemon_pid"), record.get("daemon_start")):
        raise FatalConfigError(
            f"another daemon (pid {record['daemon_pid']}) runs with its emulator on "
            f"{record.get('host')} from {log_dir}: stop it first, or give this one another "
            "LOG_DIR")
    pid, ticks = record.get("emulator_pid"), record.get("emulator_start")
    said = None
    if is_alive(pid, ticks):
        _terminate_group(pid, ticks, wait)
        said = f"stopped the Pub/Sub emulator (pid {pid}) an earlier run left behind"
    remove_record(log_dir)
    return said


def _terminate_group(pid: int, ticks: int, wait: float) -> None:
    """The emulator leads its own process group (started in a new session)."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait / 2
        while time.monotonic() < deadline:
            if not is_alive(pid, ticks) or _zombie(pid):
                return
            time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def read_host(log_dir: Path) -> str | None:
    """The address a running daemon's emulator answers on; FatalConfigError when the file is
    stale (the daemon that wrote it is gone): at once when nothing listens there, within 1 s
    when something else holds the port and does not answer."""
    host_file = log_dir / HOST_FILE
    try:
        host = host_file.read_text().strip()
    except FileNotFoundError:
        return None
    for _ in range(2):
        if emulator_answers(host):
            return host
    raise FatalConfigError(
        f"{host_file} names {host}, but no emulator answers there: the daemon that wrote it "
        "is gone. Start the daemon (`execution-service run`; it clears the file), or set "
        "PUBSUB_EMULATOR_HOST to a running emulator")
