"""Waiting on conditions with a deadline: a bound on how long a test may hang, never a timing
assertion and never a fixed sleep standing in for "it has happened by now"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.01


def wait_until(condition: Callable[[], T], timeout: float = 60.0,
               what: str = "condition", poll: float = POLL_SECONDS) -> T:
    """Poll `condition` (from a thread that may block) until it returns something truthy;
    `poll` apart (longer for a condition that runs a CLI process: each costs a second of CPU)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


async def eventually(condition: Callable[[], T], timeout: float = 20.0,
                     what: str = "condition") -> T:
    """Poll `condition` without blocking the event loop until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)
