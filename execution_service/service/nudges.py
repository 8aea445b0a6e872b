"""Per-order wake-ups for the tracker: a command changed the stored record, read it now."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


class Nudges:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def _event(self, signal_id: str) -> asyncio.Event:
        event = self._events.get(signal_id)
        if event is None:
            event = self._events[signal_id] = asyncio.Event()
        return event

    def nudge(self, signal_id: str) -> None:
        self._event(signal_id).set()

    def take(self, signal_id: str) -> bool:
        """Whether this order was nudged since the last look (and forget that it was)."""
        event = self._events.get(signal_id)
        if event is None or not event.is_set():
            return False
        event.clear()
        return True

    async def wait(self, signal_id: str, other: Awaitable) -> None:
        """Until a nudge or `other` (the broker's news, or its timeout), whichever is first."""
        nudged = self._event(signal_id)
        if nudged.is_set():
            if asyncio.iscoroutine(other):
                other.close()  # never started: nothing to wait for
            return
        waits = [asyncio.ensure_future(other), asyncio.ensure_future(nudged.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def forget(self, signal_id: str) -> None:
        self._events.pop(signal_id, None)
