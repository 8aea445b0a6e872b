"""`python scripts/send_test_signal.py --file F [--signal-id ID]`: publish a signal file to
trading-orders (to the daemon's own emulator when it started one)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import _common


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", required=True, type=Path, help="a JSON signal file")
    parser.add_argument("--signal-id", help="send it under this signal_id instead")
    args = parser.parse_args()
    extra = ["--signal-id", args.signal_id] if args.signal_id else []
    command = _common.cli("send-test-signal", "--file", str(args.file.absolute()), *extra)
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
