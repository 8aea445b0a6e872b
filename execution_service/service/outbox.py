"""The confirmation outbox: confirmations are in the record before they are published.

One loop takes everything queued (up to BATCH), publishes it at once, then marks each
signal published up to its highest sequence whose predecessors in the batch all went out.
What Pub/Sub refused goes back to the front of the queue, in order, and is retried with
back-off before anything newer, so a signal's confirmations are marked without gaps. On
start, what a previous run left unpublished is loaded from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable

from execution_service.domain.backoff import compute_backoff
from execution_service.domain.records import confirmation_message
from execution_service.errors import StoreUnavailable

logger = logging.getLogger(__name__)
BATCH = 500


class ConfirmationOutbox:
    def __init__(self, store, publisher, *, retry_base: float = 0.2, retry_cap: float = 10.0):
        self._store = store
        self._publisher = publisher
        self._pending: deque[dict] = deque()
        self._queued: set[tuple[str, int]] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._retry = (retry_base, retry_cap)
        self.published = 0
        self.failures = 0

    @property
    def backlog(self) -> int:
        return len(self._queued)

    def enqueue(self, confirmations: Iterable[dict]) -> None:
        for payload in confirmations:
            key = (payload["signal_id"], payload["sequence"])
            if key not in self._queued:
                self._queued.add(key)
                self._pending.append(payload)
        if self._pending:
            self._wakeup.set()

    def load_unpublished(self) -> int:
        before = self.backlog
        for doc in self._store.records_with_unpublished():
            published = doc.get("published_sequence", 0)
            self.enqueue(c for c in doc.get("confirmations", []) if c["sequence"] > published)
        return self.backlog - before

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued is published, at most `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queued and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self._queued

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            refused = await self._publish(batch)
            retry = self._mark(batch, refused)
            if retry:
                self._pending.extendleft(reversed(retry))
                failures += 1
                await asyncio.sleep(compute_backoff(failures, *self._retry))
            else:
                failures = 0

    async def _publish(self, batch: list[dict]) -> list[dict]:
        """Publish the batch at once; returns the confirmations Pub/Sub refused."""
        messages = [confirmation_message(p) for p in batch]
        publish_many = getattr(self._publisher, "publish_many", None)
        if publish_many is not None:
            results = await publish_many(messages)
        else:
            results = await asyncio.gather(*(self._publisher.publish(*m) for m in messages),
                                           return_exceptions=True)
        refused = [p for p, r in zip(batch, results, strict=True) if isinstance(r, BaseException)]
        if refused:
            self.failures += len(refused)
            error = next(r for r in results if isinstance(r, BaseException))
            logger.warning("Publishing %d confirmations failed (%s: %s); retrying",
                           len(refused), type(error).__name__, error)
        self.published += len(batch) - len(refused)
        return refused

    def _mark(self, batch: list[dict], refused: list[dict]) -> list[dict]:
        """Mark what went out without a gap; returns what must go again, in order (a refused
        confirmation and the same signal's later ones, which may go out twice)."""
        blocked = {p["signal_id"]: p["sequence"] for p in reversed(refused)}  # lowest refused
        highest: dict[str, int] = {}
        retry = []
        for payload in batch:
            signal_id, sequence = payload["signal_id"], payload["sequence"]
            if sequence >= blocked.get(signal_id, sequence + 1):
                retry.append(payload)
                continue
            highest[signal_id] = max(highest.get(signal_id, 0), sequence)
            self._queued.discard((signal_id, sequence))
            logger.info("Published execution confirmation: %s %s #%s", payload["status"],
                        signal_id, sequence)
        for signal_id, sequence in highest.items():
            try:
                self._store.mark_published(signal_id, sequence)
            except StoreUnavailable as e:
                # Published, not marked: a restart publishes it again (a duplicate with the
                # same sequence, which consumers tolerate), never a gap.
                logger.warning("Marking %s #%s published failed: %s", signal_id, sequence, e)
        return retry
