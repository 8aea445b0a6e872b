"""`python scripts/status.py [--json]`: the daemon's status; exit 0 when it is running."""

from __future__ import annotations

import argparse
import subprocess
import sys

import _common


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    args = parser.parse_args()
    return subprocess.run(_common.cli("status", *(["--json"] if args.json else []))).returncode


if __name__ == "__main__":
    sys.exit(main())
