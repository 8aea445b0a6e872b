"""Shared by the scripts: where the pid file and output live, and whether a pid is our daemon.

Everything is relative to the current directory (like the daemon's logs/ and data/); the
installed package is run as `sys.executable -m execution_service`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PID_NAME = "execution_service.pid"
OUTPUT_NAME = "daemon.out"


def log_dir() -> Path:
    return Path(os.environ.get("LOG_DIR") or "logs").absolute()


def pid_file() -> Path:
    return log_dir() / PID_NAME


def output_file() -> Path:
    return log_dir() / OUTPUT_NAME


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "execution_service", *args]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def command_line(pid: int) -> list[str]:
    """The process's arguments; [] when it is gone (or a zombie)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return [part for part in proc.read_bytes().decode(errors="replace").split("\0")
                    if part]
        except OSError:
            return []
    shown = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                           text=True)
    return shown.stdout.split() if shown.returncode == 0 else []


def is_our_daemon(pid: int) -> bool:
    """A live `... execution_service run` process: never signal anything else."""
    args = command_line(pid)
    return any("execution_service" in arg for arg in args) and "run" in args
