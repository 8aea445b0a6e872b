"""The confirmation outbox: confirmations are in the record before they are published.

A confirmation is handed to Pub/Sub as soon as it is queued (the record is already durable),
gathered per event-loop turn, so publishing never waits behind a burst of other work. Results
come back in bulk; a signal is marked published up to its highest sequence whose
predecessors have all been accepted, so the marks never leave a gap. What Pub/Sub refused is
retried with back-off by one loop, and while it fails newly queued confirmations wait behind
it instead of piling onto Pub/Sub.

The record's side-write to `signal_store` is made by the same loop, before the signal is
marked published (both written by outbox_marks.py): `outbox_pending` stays set until both are
done, so a store failure at any point leaves the work in the store, and the periodic rescan
(`rescan_seconds`) takes up what the store says is pending and this process does not hold
(after a restart, or a failure the loop gave up on). Every write is idempotent; a
confirmation published twice carries the same sequence, which consumers tolerate.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from datetime import datetime

from execution_service.domain.backoff import Backoff
from execution_service.domain.records import confirmation_message
from execution_service.errors import ExecutionError
from execution_service.service.outbox_marks import OutboxMarks
from execution_service.service.ports import JOURNEY_LOGGER, ConfirmationPublisher, OutboxStore
from execution_service.service.store_thread import StoreThread

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)
BATCH = 500
FLUSH_AT = 100  # confirmations handed over at once when they pile up within one loop turn

PENDING, ACCEPTED, REFUSED = "pending", "accepted", "refused"


class ConfirmationOutbox(OutboxMarks):
    def __init__(self, store: OutboxStore, publisher: ConfirmationPublisher, *,
                 clock: Callable[[], datetime],
                 retry_base: float = 0.2, retry_cap: float = 10.0,
                 rescan_seconds: float = 5.0, store_thread: StoreThread | None = None):
        self._store = store
        self._store_thread = store_thread or StoreThread(inline=True)
        self._writing = 0  # side-writes and marks handed to the store thread, not yet done
        self._marking: dict[str, int] = {}  # the marks being written now
        self._send = sender(publisher)
        self._clock = clock
        # signal_id -> {sequence: state}, in sequence order: everything not yet marked
        self._outstanding: dict[str, dict[int, str]] = {}
        self._unmarked = 0  # confirmations in _outstanding (read from the metrics thread)
        # signal_id -> (confirmation sequence, signal_store fields): side-writes not yet made
        self._signal_writes: dict[str, tuple[int, dict]] = {}
        self._marked: OrderedDict[str, int] = OrderedDict()
        self._rescan_seconds = rescan_seconds
        # which records a periodic rescan takes up (replicas: its own and orphaned ones)
        self.takes_up: Callable[[dict], bool] = lambda _doc: True
        self._store_failures = 0
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
        """Confirmations not yet published, and signals whose side-write or mark is not yet
        written. Plain reads only: the metrics thread asks too."""
        return self._unmarked + len(self._to_mark) + len(self._signal_writes) + self._writing

    def enqueue(self, confirmations: Iterable[dict], record: dict | None = None) -> None:
        """Publish these confirmations; with their `record`, every confirmation it holds
        unpublished too (one whose write was applied but never acknowledged is in the record
        only: without it a later mark would leave a gap), and its signal_store row."""
        if record is not None and record.get("confirmation_sequence"):
            self._note_signal_write(record)
            published = self._published(record)
            confirmations = [*(c for c in record.get("confirmations") or ()
                               if c["sequence"] > published), *confirmations]
        fresh = []
        for payload in confirmations:
            signal_id, sequence = payload["signal_id"], payload["sequence"]
            if sequence and sequence <= self._marked.get(signal_id, 0):
                continue  # marked published already (0: an answer with no record)
            states = self._outstanding.setdefault(signal_id, {})
            if sequence in states:
                continue
            states[sequence] = PENDING
            self._unmarked += 1
            fresh.append(payload)
        if not fresh:
            if self._signal_writes:
                self._wakeup.set()
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
        """Take up every record the store says has unpublished confirmations, and is not in
        hand here; returns how many confirmations that queued."""
        return self._take_up(self._store.records_with_unpublished())

    async def rescan(self, everything: bool = False) -> int:
        """`load_unpublished`, its store read on the store thread: at start `everything`,
        afterwards only the records `takes_up` (another live replica publishes its own)."""
        docs = await self._store_thread.run_background(self._store.records_with_unpublished)
        return self._take_up(docs if everything else [d for d in docs if self.takes_up(d)])

    def _take_up(self, docs: list[dict]) -> int:
        loaded = 0
        for doc in docs:
            signal_id = doc["signal_id"]
            published = self._published(doc)
            unpublished = [c for c in doc.get("confirmations", []) if c["sequence"] > published]
            loaded += len(unpublished)
            self.enqueue([], doc)
            if not unpublished and signal_id not in self._outstanding:
                # published, and the mark (or signal_store) not written
                self._to_mark[signal_id] = max(published, self._to_mark.get(signal_id, 0))
        if loaded:
            logger.info("Outbox: %d unpublished confirmations taken up from the store", loaded)
        return loaded

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox")

    async def drain(self, timeout: float) -> bool:
        """Wait until everything queued is published and marked, at most `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.backlog and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self.backlog

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
            self._unmarked -= 1
            highest = sequence
        if highest is not None:
            self._to_mark[signal_id] = max(highest, self._to_mark.get(signal_id, 0))
        if not states:
            del self._outstanding[signal_id]

    # the loop: marks and retries --------------------------------------------------------------

    async def run(self) -> None:
        """Side-writes, marks, retries and the periodic rescan, until cancelled."""
        loop = asyncio.get_running_loop()
        next_rescan = loop.time() + self._rescan_seconds
        while True:
            if not self._to_mark and not self._retry and not self._signal_writes:
                self._wakeup.clear()
                await _wait(self._wakeup, max(0.0, next_rescan - loop.time()))
            if loop.time() >= next_rescan:
                next_rescan = loop.time() + self._rescan_seconds
                await self._rescan()
            if not await self._write_side_effects():
                self._store_failures += 1
                await asyncio.sleep(self._backoff.after(self._store_failures))
            else:
                self._store_failures = 0
            if self._retry:
                await asyncio.sleep(self._backoff.after(max(1, self._failures)))
                batch = [self._retry.popleft() for _ in range(min(BATCH, len(self._retry)))]
                for payload in batch:
                    self._outstanding[payload["signal_id"]][payload["sequence"]] = PENDING
                self._publish(batch)
                if not self._retry:
                    await self._wait_for_answers(batch)

    async def _rescan(self) -> None:
        try:
            await self.rescan()
        except ExecutionError as e:
            logger.warning("Outbox rescan failed: %s", e)

    async def _wait_for_answers(self, batch: list[dict]) -> None:
        """Hold new confirmations back until the retried batch is answered."""
        while any(self._outstanding.get(p["signal_id"], {}).get(p["sequence"]) == PENDING
                  for p in batch):
            await asyncio.sleep(0.01)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until `event` is set or `timeout` passes. (Not wait_for: on Python 3.11 it can swallow
    a cancellation that lands as the event is set, and the task would never end.)"""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=timeout)
    finally:
        waiter.cancel()


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
