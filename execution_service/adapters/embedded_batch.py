"""Several calls into the embedded store, one sqlite transaction (one commit) per file.

Outside a batch litemongo commits every write on its own: `with connection:` around each one,
a lock, a write-ahead-log append and an unlock per write, about eight per signal. The store
thread instead runs the calls queued for it as one batch: each file a call touches (reads or
writes) is opened with `BEGIN IMMEDIATE` once, every write becomes a savepoint of that
transaction (a write that fails is undone alone, as its own transaction was before), and the
files are committed when the batch ends. Nothing of a call leaves the process before that: its
result is handed back only after the commit, so the broker is asked, a message acknowledged or
a confirmation published only after what it depends on is on disk.

Files commit one after another, the `commit_last` ones after every other, in that order: the
positions after the fill ledger (a position moved by a fill the ledger does not hold would be
moved again by its replay once the position closed), the records after everything (a record is
the journal of what was done, so what it shows must be on disk before it). The first commit
that fails (or finds its transaction rolled back by sqlite after an error) stops the rest: they
are rolled back, as if each write had been committed on its own and the writes stopped at the
failed one. Every call of the batch that touched a file not committed fails with
StoreUnavailable; the other calls stand.

Holding the write lock from the first touch also keeps the file's snapshot still, so the
caches checked against `PRAGMA data_version` need one check per batch, not one per query.

One lock (the serialized wrapper's, memory_store.py) covers the whole batch: a call from
another thread waits for the commit, so it never sees or joins uncommitted work.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

from execution_service.adapters.store_errors import store_error
from execution_service.errors import StoreUnavailable

logger = logging.getLogger(__name__)


class BatchingConnection(sqlite3.Connection):
    """litemongo's `with connection:` blocks: their own transaction outside a batch (plain
    sqlite3), a savepoint of the batch's transaction inside one."""

    batches: WriteBatches | None = None
    collection = ""  # the collection this file holds
    transactions = 0  # moves at every transaction's start and end: a cache checked in one
    # transaction (checked_in_transaction) holds until it ends
    _depth = 0
    _savepoint = False  # the current write's savepoint is open
    _deferring = False  # the next write opens its savepoint only if it runs two statements

    def begin_immediate(self) -> None:
        self.execute("BEGIN IMMEDIATE")
        self.transactions += 1

    def touch(self) -> None:
        """The current batch's call uses this file (no-op outside a batch)."""
        batch = self._batch()
        if batch is not None:
            batch.touch(self)

    def checked_in_transaction(self) -> int | None:
        """The transaction a cache validated now stays valid in (None: check every time)."""
        return self.transactions if self.in_transaction else None

    def _batch(self) -> Batch | None:
        batches = self.batches
        return None if batches is None else batches.current()

    def __enter__(self):
        batch = self._batch()
        if batch is None:
            return super().__enter__()
        batch.touch(self)
        if self._depth == 0:
            self._savepoint = not self._deferring
            if self._savepoint:
                self.execute("SAVEPOINT batch_write")
        self._depth += 1
        return self

    @contextlib.contextmanager
    def deferring_savepoint(self) -> Iterator[None]:
        """For a write in a batch that calls `savepoint()` before every statement but its
        last: one of a single statement needs none (sqlite undoes a failed statement alone)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def savepoint(self) -> None:
        """Open the current write's savepoint if it has none (a no-op outside a batch's
        write)."""
        if self._depth > 0 and not self._savepoint and self._batch() is not None:
            self.execute("SAVEPOINT batch_write")
            self._savepoint = True

    def __exit__(self, kind, error, trace):
        if self._depth == 0:
            self.transactions += 1  # whatever transaction this ends, the next is another
            return super().__exit__(kind, error, trace)
        self._depth -= 1
        if self._depth == 0:
            opened, self._savepoint = self._savepoint, False
            if kind is not None:
                self.transactions += 1  # what caches saw in this transaction may be undone
            if opened and kind is None:
                self.execute("RELEASE batch_write")
            elif opened:
                # gone when sqlite rolled the whole transaction back: the commit says so
                with contextlib.suppress(sqlite3.Error):
                    self.execute("ROLLBACK TO batch_write")
                    self.execute("RELEASE batch_write")
        return False


class Batch:
    """Calls run one after another; `outcomes()` once the batch has closed."""

    def __init__(self, commit_last: tuple[str, ...] = ()) -> None:
        self._commit_last = commit_last
        self._begun: dict[BatchingConnection, None] = {}  # in order of first touch
        self._calls: list[tuple[set, list, Any, BaseException | None]] = []
        self._touched: set[BatchingConnection] = set()
        self._after: list[Callable[[], None]] = []
        self._failed: dict[BatchingConnection, BaseException] = {}

    def touch(self, connection: BatchingConnection) -> None:
        if connection not in self._begun:
            if not connection.in_transaction:  # (one left open elsewhere is committed too)
                connection.begin_immediate()
            self._begun[connection] = None
        elif not connection.in_transaction:
            raise sqlite3.OperationalError(
                "this batch's transaction was rolled back by an earlier failure")
        self._touched.add(connection)

    def run(self, call: Callable[[], Any]) -> None:
        self._touched, self._after = set(), []
        try:
            outcome = (call(), None)
        except BaseException as e:  # noqa: BLE001 - handed back to the call's owner
            outcome = (None, e)
        self._calls.append((self._touched, self._after, *outcome))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the current call's files are committed (never if one fails)."""
        self._after.append(callback)

    def commit(self) -> list[BaseException]:
        """Every file begun, `commit_last` ones last, up to the first failure; the rest rolled
        back. The failures (each file's once)."""
        last = {name: rank for rank, name in enumerate(self._commit_last, start=1)}
        in_order = sorted(self._begun, key=lambda c: last.get(c.collection, 0))  # stable
        for connection in in_order:
            connection.transactions += 1
            try:
                if self._failed:
                    raise sqlite3.OperationalError(
                        "not committed: an earlier file's commit in the batch failed")
                if not connection.in_transaction:
                    raise sqlite3.OperationalError(
                        "the transaction was rolled back by sqlite after an error")
                connection.commit()
            except sqlite3.Error as e:
                self._failed[connection] = e
                with contextlib.suppress(sqlite3.Error):
                    connection.rollback()
        return list(self._failed.values())

    def outcomes(self) -> list[tuple[Any, BaseException | None]]:
        """(result, error) per call, in order: StoreUnavailable for a call that touched a file
        whose commit failed."""
        found = []
        for touched, _, result, error in self._calls:
            lost = [self._failed[c] for c in touched if c in self._failed]
            if lost:
                result, error = None, _unavailable(lost[0])
            found.append((result, error))
        return found

    def run_after_commit(self) -> None:
        for touched, after, _, _ in self._calls:
            if not any(connection in self._failed for connection in touched):
                for callback in after:
                    try:
                        callback()
                    except Exception:  # the calls' outcomes stand whatever a listener does
                        logger.exception("After-commit callback failed")


def _unavailable(error: BaseException) -> StoreUnavailable:
    translated = store_error(error)
    if isinstance(translated, StoreUnavailable):
        return StoreUnavailable(f"{translated} (at commit)")
    return StoreUnavailable(f"store unavailable: commit failed: {error}")


class WriteBatches:
    """The batches of one embedded store (one per process), under the lock that every other
    call into it takes too. `on_failure` hears of each commit that failed (the store's health)."""

    def __init__(self, lock: threading.RLock, commit_last: tuple[str, ...] = ()) -> None:
        self.lock = lock
        self.commit_last = commit_last
        self.on_failure: Callable[[BaseException], None] | None = None
        self._current: Batch | None = None
        self._thread: int | None = None

    def defer(self, callback: Callable[[], None]) -> bool:
        """`callback` after the current call's commit, when this thread is in a batch."""
        batch = self.current()
        if batch is None:
            return False
        batch.after_commit(callback)
        return True

    def current(self) -> Batch | None:
        if self._current is None or threading.get_ident() != self._thread:
            return None
        return self._current

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        """Run calls with `batch.run(call)`; they are committed when the block ends."""
        with self.lock:
            batch = Batch(self.commit_last)
            self._current, self._thread = batch, threading.get_ident()
            try:
                yield batch
            finally:
                self._current = self._thread = None
                failures = batch.commit()
        if failures and self.on_failure is not None:
            self.on_failure(_unavailable(failures[0]))
        batch.run_after_commit()
