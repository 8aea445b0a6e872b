"""The confirmation outbox: confirmations are in the record before they are published.

A confirmation is handed to Pub/Sub as soon as it is queued (the record is already durable),
gathered per event-loop turn, so publishing never waits behind a burst of other work. Results
come back in bulk; a signal is marked published up to its highest sequence whose
predecessors have all been accepted, so the marks never leave a gap. What Pub/Sub refused is
retried with back-off by one loop, and while it fails newly queued confirmations wait behind
it instead of piling onto Pub/Sub.
On start, what a previous run left unpublished is loaded from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

from execution_service.domain.backoff import Backoff
from execution_service.domain.records import confirmation_message
from execution_service.errors import StoreUnavailable
from execution_service.service.ports import JOURNEY_LOGGER, ConfirmationPublisher, OutboxStore

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)
BATCH = 500
FLUSH_AT = 100  # confirmations handed over at once when they pile up within one loop turn
MARKS_PER_TURN = 50  # store writes before the loop gets a turn back

PENDING, ACCEPTED, REFUSED = "pending", "accepted", "refused"


class ConfirmationOutbox:
    def __init__(self, store: OutboxStore, publisher: ConfirmationPublisher, *,
                 retry_base: float = 0.2,
                 retry_cap: float = 10.0):
        self._store = store
        self._send = sender(publisher)
        # signal_id -> {sequence: state}, in sequence order: everything not yet marked
        self._outstanding: dict[str, dict[int, str]] = {}
        self._retry: deque[dict] = deque()
        self._unsent: list[dict] = []
        self._flush_scheduled = False
        self._to_mark: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._backoff = Backoff(retry_base, retry_cap)
        self._failures = 0
        self.published = 0
        self.failures = 0

    @property
    def backlog(self) -> int:
        """Confirmations not yet published, and signals whose mark is not yet written."""
        return sum(len(states) for states in self._outstanding.values()) + len(self._to_mark)

    def enqueue(self, confirmations: Iterable[dict]) -> None:
        fresh = []
        for payload in confirmations:
            signal_id, sequence = payload["signal_id"], payload["sequence"]
            states = self._outstanding.setdefault(signal_id, {})
            if sequence in states:
                continue
            states[sequence] = PENDING
            fresh.append(payload)
        if not fresh:
            return
        if self._failures or self._retry:
            self._retry.extend(fresh)  # Pub/Sub is refusing: wait behind what it refused
            self._wakeup.set()
            return
        # Every hand-over costs the client a batch and a thread: gather what this loop turn
        # queues, but never more than FLUSH_AT, so a burst of work cannot hold them back.
        self._unsent.extend(fresh)
        if len(self._unsent) >= FLUSH_AT:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._unsent = self._unsent, []
        if batch:
            self._publish(batch)

    def load_unpublished(self) -> int:
        loaded = 0
        for doc in self._store.records_with_unpublished():
            published = doc.get("published_sequence", 0)
            unpublished = [c for c in doc.get("confirmations", []) if c["sequence"] > published]
            loaded += len(unpublished)
            self.enqueue(unpublished)
        return loaded

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued is published and marked, at most `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._outstanding or self._to_mark) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not (self._outstanding or self._to_mark)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # publishing -------------------------------------------------------------------------------

    def _publish(self, batch: list[dict]) -> None:
        for start in range(0, len(batch), BATCH):
            chunk = batch[start:start + BATCH]
            self._send([confirmation_message(p) for p in chunk],
                       lambda outcomes, chunk=chunk: self._settle(chunk, outcomes))

    def _settle(self, batch: list[dict], outcomes: list[BaseException | None]) -> None:
        """Pub/Sub answered for `batch` (on the event loop)."""
        refused = []
        for payload, outcome in zip(batch, outcomes, strict=True):
            states = self._outstanding.get(payload["signal_id"])
            if states is None or payload["sequence"] not in states:
                continue
            if outcome is None:
                states[payload["sequence"]] = ACCEPTED
                self.published += 1
                journey.info("Published execution confirmation: %s %s #%s", payload["status"],
                            payload["signal_id"], payload["sequence"])
            else:
                states[payload["sequence"]] = REFUSED
                refused.append(payload)
            self._advance(payload["signal_id"])
        if refused:
            self.failures += len(refused)
            error = next(o for o in outcomes if o is not None)
            logger.warning("Publishing %d confirmations failed (%s: %s); retrying",
                           len(refused), type(error).__name__, error)
            self._failures += 1
            self._retry.extend(refused)
        elif self._failures and not self._retry:
            self._failures = 0
        if self._to_mark or self._retry:
            self._wakeup.set()

    def _advance(self, signal_id: str) -> None:
        """Take the signal's accepted confirmations off the front; mark up to the last."""
        states = self._outstanding[signal_id]
        highest = None
        for sequence in sorted(states):
            if states[sequence] != ACCEPTED:
                break
            del states[sequence]
            highest = sequence
        if highest is not None:
            self._to_mark[signal_id] = max(highest, self._to_mark.get(signal_id, 0))
        if not states:
            del self._outstanding[signal_id]

    # the loop: marks and retries --------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._to_mark and not self._retry:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._mark()
            if self._retry:
                await asyncio.sleep(self._backoff.after(max(1, self._failures)))
                batch = [self._retry.popleft() for _ in range(min(BATCH, len(self._retry)))]
                for payload in batch:
                    self._outstanding[payload["signal_id"]][payload["sequence"]] = PENDING
                self._publish(batch)
                if not self._retry:
                    await self._wait_for_answers(batch)

    async def _wait_for_answers(self, batch: list[dict]) -> None:
        """Hold new confirmations back until the retried batch is answered."""
        while any(self._outstanding.get(p["signal_id"], {}).get(p["sequence"]) == PENDING
                  for p in batch):
            await asyncio.sleep(0.01)

    async def _mark(self) -> None:
        """Record what went out; a failed mark only means a restart publishes it again (a
        duplicate with the same sequence, which consumers tolerate), never a gap."""
        written = 0
        while self._to_mark:
            signal_id, sequence = self._to_mark.popitem()
            try:
                self._store.mark_published(signal_id, sequence)
            except StoreUnavailable as e:
                logger.warning("Marking %s #%s published failed: %s", signal_id, sequence, e)
            written += 1
            if written % MARKS_PER_TURN == 0:
                await asyncio.sleep(0)


def sender(publisher) -> Callable[[list[tuple[bytes, dict[str, str]]], Callable], None]:
    """`send(messages, on_done)`: publish now, call `on_done(outcomes)` on the event loop when
    Pub/Sub has answered for all (None: accepted). Publishers with only an async `publish`
    (tests' fakes) are wrapped."""
    send = getattr(publisher, "send", None)
    if send is not None:
        return send

    def via_publish(messages, on_done) -> None:
        async def publish_all():
            results = await asyncio.gather(*(publisher.publish(*m) for m in messages),
                                           return_exceptions=True)
            on_done([r if isinstance(r, BaseException) else None for r in results])

        asyncio.ensure_future(publish_all())

    return via_publish
