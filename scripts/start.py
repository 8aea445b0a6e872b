"""`python scripts/start.py`: start the daemon in the background, from the current directory.

Output goes to logs/daemon.out, the pid to logs/execution_service.pid. Refuses (exit 1) when
the pid file names our daemon, still running; waits until `status` reports it running.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _common

SCRIPTS = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (30)")
    args = parser.parse_args()
    pid_path, output = _common.pid_file(), _common.output_file()
    old = _common.read_pid(pid_path)
    if old is not None and _common.is_our_daemon(old):
        print(f"already running: pid {old} (pid file {pid_path})")
        return 1
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    offset = output.stat().st_size if output.exists() else 0
    with open(output, "ab") as out:
        process = subprocess.Popen(_common.cli("run"), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    pid_path.write_text(f"{process.pid}\n")
    problem = wait_running(process, args.timeout)
    said = new_output(output, offset)
    if problem is not None:
        print(f"execution service did not start: {problem}")
        print("\n".join(f"  | {line}" for line in said[-20:]))
        if process.poll() is not None:
            pid_path.unlink(missing_ok=True)
        return 1
    print(f"Execution service running: pid {process.pid}"
          + (f" (stale pid file for pid {old} replaced)" if old is not None else ""))
    print(f"  pid file: {pid_path}\n  output:   {output}\n"
          f"  status:   python {SCRIPTS / 'status.py'}\n  stop:     python {SCRIPTS / 'stop.py'}")
    print("\n".join(f"  {line}" for line in said if not line.startswith("20")))
    return 0


def wait_running(process: subprocess.Popen, timeout: float) -> str | None:
    """None once `status` reports this process running; else what went wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"it exited with code {process.returncode}"
        probe = subprocess.run(_common.cli("status", "--json"), capture_output=True, text=True)
        if probe.returncode == 0 and _service_pid(probe.stdout) == process.pid:
            return None
        time.sleep(0.5)
    return f"not running after {timeout:g}s (pid {process.pid} still starting?)"


def _service_pid(text: str) -> int | None:
    try:
        return (json.loads(text).get("service") or {}).get("pid")
    except (ValueError, AttributeError):
        return None


def new_output(output: Path, offset: int) -> list[str]:
    with open(output, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace").splitlines()


if __name__ == "__main__":
    sys.exit(main())
