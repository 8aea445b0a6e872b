"""Wait on a condition with a deadline (never on a fixed sleep)."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """The first truthy value of `predicate()`, polled every 50 ms; AssertionError at the
    deadline naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
