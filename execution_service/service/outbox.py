"""The confirmation outbox: confirmations are in the record before they are published.

Workers publish them in `sequence` order per signal (a signal always maps to the same
worker), mark them published, and retry with back-off while Pub/Sub refuses. On start, what a
previous run left unpublished is loaded from the store.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable

from execution_service.domain.backoff import compute_backoff
from execution_service.domain.records import confirmation_message
from execution_service.errors import StoreUnavailable

logger = logging.getLogger(__name__)


class ConfirmationOutbox:
    def __init__(self, store, publisher, *, workers: int = 16, retry_base: float = 0.2,
                 retry_cap: float = 10.0):
        self._store = store
        self._publisher = publisher
        self._queues = [asyncio.Queue() for _ in range(workers)]
        self._tasks: list[asyncio.Task] = []
        self._queued: set[tuple[str, int]] = set()
        self._retry = (retry_base, retry_cap)
        self.published = 0
        self.failures = 0

    @property
    def backlog(self) -> int:
        return len(self._queued)

    def enqueue(self, confirmations: Iterable[dict]) -> None:
        for payload in confirmations:
            key = (payload["signal_id"], payload["sequence"])
            if key in self._queued:
                continue
            self._queued.add(key)
            worker = zlib.crc32(payload["signal_id"].encode()) % len(self._queues)
            self._queues[worker].put_nowait(payload)

    def load_unpublished(self) -> int:
        before = self.backlog
        for doc in self._store.records_with_unpublished():
            published = doc.get("published_sequence", 0)
            self.enqueue(c for c in doc.get("confirmations", []) if c["sequence"] > published)
        return self.backlog - before

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(queue), name=f"outbox-{n}")
                       for n, queue in enumerate(self._queues)]

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued is published, at most `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queued and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self._queued

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self, queue: asyncio.Queue) -> None:
        while True:
            payload = await queue.get()
            await self._publish_until_accepted(payload)
            self._queued.discard((payload["signal_id"], payload["sequence"]))

    async def _publish_until_accepted(self, payload: dict) -> None:
        data, attributes = confirmation_message(payload)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._publisher.publish(data, attributes)
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any publish failure: keep it, retry later
                self.failures += 1
                wait = compute_backoff(attempt, *self._retry)
                logger.warning("Publishing confirmation %s #%s failed (%s: %s); retry in %.1fs",
                               payload["signal_id"], payload["sequence"], type(e).__name__, e,
                               wait)
                await asyncio.sleep(wait)
        self.published += 1
        logger.info("Published execution confirmation: %s %s #%s", payload["status"],
                    payload["signal_id"], payload["sequence"])
        await self._mark_published(payload)

    async def _mark_published(self, payload: dict) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                self._store.mark_published(payload["signal_id"], payload["sequence"])
                return
            except StoreUnavailable as e:
                # Published but not marked: a restart publishes it again (a duplicate with the
                # same sequence, which consumers tolerate), never a gap.
                await asyncio.sleep(compute_backoff(attempt, *self._retry))
                logger.warning("Marking confirmation published failed: %s", e)
