"""Waiting on a condition with a deadline (never a fixed sleep)."""

from __future__ import annotations

import time


def wait_until(condition, timeout: float, what: str):
    """The condition's first truthy result, polled every 0.1 s; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
