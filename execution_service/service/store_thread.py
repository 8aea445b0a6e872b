"""Store work off the event loop: one dedicated thread runs it in submission order (so every
record's writes keep their order), and a store that hangs holds up that thread, never the
loop (heartbeats, Pub/Sub flow, Telegram and broker sockets go on)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from execution_service.errors import StoreUnavailable

T = TypeVar("T")
ANSWER_SECONDS = 5.0  # how long someone at a door (HTTP, Telegram) waits for the store


class StoreThread:
    """`inline`: run the work in place instead (the embedded store: sqlite objects belong to
    the thread that made them)."""

    def __init__(self, inline: bool = False, answer_seconds: float = ANSWER_SECONDS) -> None:
        self._executor = None if inline else ThreadPoolExecutor(1, thread_name_prefix="store")
        self.answer_seconds = answer_seconds
        self._busy_since: float | None = None  # read from the metrics thread too

    @property
    def inline(self) -> bool:
        return self._executor is None

    async def run(self, work: Callable[..., T], *args, **kwargs) -> T:
        call = functools.partial(self._timed, work, *args, **kwargs)
        if self._executor is None:
            return call()
        return await asyncio.wrap_future(self._executor.submit(call))

    async def answer(self, work: Callable[..., T], *args) -> T:
        """`run` for someone waiting at a door (HTTP, Telegram): StoreUnavailable after
        `answer_seconds` (a call still queued then is dropped; one already running finishes
        unseen)."""
        try:
            return await asyncio.wait_for(self.run(work, *args), self.answer_seconds)
        except TimeoutError:
            raise self.no_answer() from None

    def no_answer(self, detail: str = "") -> StoreUnavailable:
        return StoreUnavailable(f"store unavailable: no answer within "
                                f"{self.answer_seconds:g}s{detail}")

    def _timed(self, work: Callable[..., T], *args, **kwargs) -> T:
        self._busy_since = time.monotonic()
        try:
            return work(*args, **kwargs)
        finally:
            self._busy_since = None

    def stalled_for(self) -> float:
        """Seconds the store call now running has taken (0 when none runs)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
