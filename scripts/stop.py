"""`python scripts/stop.py [--force]`: SIGTERM the daemon named in logs/execution_service.pid,
wait for it to exit (15 s), remove the pid file. Only our daemon is ever signalled; SIGKILL
only with --force."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import _common


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait (15)")
    parser.add_argument("--force", action="store_true", help="SIGKILL it if it does not stop")
    args = parser.parse_args()
    pid_path = _common.pid_file()
    pid = _common.read_pid(pid_path)
    if pid is None:
        print(f"not running (no pid file at {pid_path})")
        return 0
    if not _common.is_our_daemon(pid):
        pid_path.unlink(missing_ok=True)
        print(f"not running (pid {pid} is not our daemon): stale pid file removed")
        return 0
    send(pid, signal.SIGTERM)
    if wait_gone(pid, args.timeout):
        pid_path.unlink(missing_ok=True)
        print(f"stopped (pid {pid})")
        return 0
    if not args.force:
        print(f"pid {pid} did not stop within {args.timeout:g}s (see {_common.output_file()}); "
              f"`stop.py --force` kills it")
        return 1
    send(pid, signal.SIGKILL, group=True)
    if wait_gone(pid, 5.0):
        pid_path.unlink(missing_ok=True)
        print(f"killed (pid {pid}): it did not stop within {args.timeout:g}s")
        return 0
    print(f"pid {pid} survived SIGKILL")
    return 1


def send(pid: int, signum: int, group: bool = False) -> None:
    """`group`: its whole process group when start.py made it the leader (its emulator)."""
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _common.is_our_daemon(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


if __name__ == "__main__":
    sys.exit(main())
