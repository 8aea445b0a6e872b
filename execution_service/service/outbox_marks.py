"""What the outbox writes back to the store once Pub/Sub has accepted a signal's confirmations:
its `signal_store` row, then its published mark (a signal is marked only once its row is
written). Written on the store thread a turn at a time, giving way to the order path; what a
store failure leaves unwritten stays queued.

Giving way must not starve it: under a steady stream of signals the order path always has
work waiting, and an upkeep turn that wrote one item and gave way fell behind by most of a
signal's rows and marks (13,834 unmarked signals after 20,000 at ~300/s: its memory grew, and
a restart would have republished them all). So a burst may leave up to UPKEEP_BACKLOG_ALLOWED
signals behind (orders first; a signal's row and mark written late are written once, not once
per confirmation), and beyond that, while order-path work waits, a turn still writes for a
slice of time that grows with the excess (`upkeep_slice`): upkeep takes as much of the store
thread as it needs to stay within bounds, and no more than UPKEEP_SLICE_MAX_SECONDS a turn."""

from __future__ import annotations

import itertools
import logging
import time

from execution_service.domain.records import signal_fields
from execution_service.errors import ExecutionError, StoreUnavailable

logger = logging.getLogger(__name__)
MARKS_PER_TURN = 200  # store writes per hand-over to the store thread, at most
MARKS_PER_WRITE = 10  # published marks written in one store call (within a turn's slice)
MARKS_REMEMBERED = 10_000  # recent marks: a rescan racing a mark never republishes
UPKEEP_BACKLOG_ALLOWED = 1000  # signals whose row or mark may wait behind orders...
UPKEEP_SLICE_SECONDS = 0.001  # ...beyond it, a turn's time before it gives way to orders...
UPKEEP_SLICE_PER_ITEM_SECONDS = 0.00002  # ...and this much more per signal beyond it
UPKEEP_SLICE_MAX_SECONDS = 0.02  # at most (the longest an order waits behind upkeep)


def upkeep_slice(backlog: int) -> float:
    """Seconds an upkeep turn may write while order-path work waits, for `backlog` signals
    whose rows or marks are not yet written: none within the allowance (one item, then it
    gives way), then the further behind, the longer."""
    beyond = backlog - UPKEEP_BACKLOG_ALLOWED
    if beyond <= 0:
        return 0.0
    return min(UPKEEP_SLICE_MAX_SECONDS,
               UPKEEP_SLICE_SECONDS + beyond * UPKEEP_SLICE_PER_ITEM_SECONDS)


class OutboxMarks:
    """Mixed into ConfirmationOutbox: uses its store, store thread and clock, and keeps its
    side-writes (`_signal_writes`) and marks (`_to_mark`, `_marking`, `_marked`)."""

    _upkeep_slice = 0.0  # this turn's (`upkeep_slice`), set on the loop before it
    _upkeep_clock = staticmethod(time.monotonic)

    def _published(self, record: dict) -> int:
        """How far this record's confirmations are published (or being marked so)."""
        signal_id = record["signal_id"]
        return max(record.get("published_sequence") or 0, self._marked.get(signal_id, 0),
                   self._to_mark.get(signal_id, 0), self._marking.get(signal_id, 0))

    def _note_signal_write(self, record: dict) -> None:
        sequence = record["confirmation_sequence"]
        queued = self._signal_writes.get(record["signal_id"])
        if queued is None or queued[0] < sequence:
            self._signal_writes[record["signal_id"]] = (sequence, signal_fields(record))

    async def _write_side_effects(self) -> bool:
        """signal_store rows, then the published marks (a signal is marked only once its row
        is written), on the store thread, MARKS_PER_TURN at a time. False when the store
        failed: what is left stays queued."""
        while self._signal_writes or self._to_mark:
            writes = dict(itertools.islice(self._signal_writes.items(), MARKS_PER_TURN))
            marks = dict(itertools.islice(
                ((signal_id, sequence) for signal_id, sequence in self._to_mark.items()
                 if signal_id not in self._signal_writes), MARKS_PER_TURN - len(writes)))
            if not writes and not marks:
                return True
            for signal_id in marks:
                del self._to_mark[signal_id]
            self._writing += len(writes) + len(marks)
            self._marking = marks
            self._upkeep_slice = upkeep_slice(len(self._signal_writes) + len(self._to_mark)
                                              + len(marks))
            try:
                written, marked, error = await self._store_thread.run_background(
                    self._write, writes, marks)
            except StoreUnavailable as e:  # what it wrote was not committed (a batching store)
                written, marked, error = {}, {}, e
            finally:
                self._writing -= len(writes) + len(marks)
                self._marking = {}
            for signal_id, sequence in written.items():
                if self._signal_writes.get(signal_id, (None,))[0] == sequence:
                    del self._signal_writes[signal_id]
            for signal_id, sequence in marks.items():
                if signal_id in marked:
                    self._remember_mark(signal_id, sequence)
                else:
                    self._to_mark[signal_id] = max(sequence, self._to_mark.get(signal_id, 0))
            if error is not None:
                logger.warning("Outbox store write failed: %s", error)
                return False
        return True

    def _write(self, writes: dict[str, tuple[int, dict]], marks: dict[str, int]):
        """On the store thread: returns what was written, what was marked, and the error
        that stopped it, if one did. Once something is done and this turn's slice
        (`_upkeep_slice`) has passed, it stops early when a signal's store work is waiting
        (the rest goes in the next call)."""
        written: dict[str, int] = {}
        marked: dict[str, int] = {}
        now = self._clock()
        ends = self._upkeep_clock() + self._upkeep_slice

        def give_way() -> bool:
            return self._store_thread.order_path_waiting() and self._upkeep_clock() >= ends

        try:
            for signal_id, (sequence, fields) in writes.items():
                if written and give_way():
                    return written, marked, None
                self._store.update_signal(signal_id, fields, now)
                written[signal_id] = sequence
            pending = list(marks.items())
            while pending:
                yielding = give_way()
                if (written or marked) and yielding:
                    return written, marked, None
                size = 1 if yielding else MARKS_PER_WRITE
                chunk, pending = dict(pending[:size]), pending[size:]
                self._store.mark_published(chunk)
                marked.update(chunk)
        except ExecutionError as e:
            return written, marked, e
        return written, marked, None

    def _remember_mark(self, signal_id: str, sequence: int) -> None:
        self._marked[signal_id] = max(sequence, self._marked.get(signal_id, 0))
        self._marked.move_to_end(signal_id)
        if len(self._marked) > MARKS_REMEMBERED:
            self._marked.popitem(last=False)

