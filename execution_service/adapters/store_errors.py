"""One failure contract for every store backend.

Each backend fails in its own words: pymongo raises `ConnectionFailure`/`OperationFailure`,
the embedded store (litemongo over sqlite) raises `sqlite3.OperationalError` ('database or disk
is full', 'database is locked', 'disk I/O error'), and both engines raise pymongo's errors for
a write they refuse. Callers see two errors only: `StoreUnavailable` (the store cannot take the
call now: wait and retry, never give the message up) and `StoreRejected` (the store refuses
this call and always will: a bug or a bad document, not an outage).

`StoreHealth` turns the failures of one outage into two log lines: an error when it starts
and a warning with its length when a write succeeds again. A second claim of a signal is
DuplicateSignal.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from execution_service.errors import DuplicateSignal, ExecutionError, StoreUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")
__all__ = ["REFUSAL_CODES", "DuplicateSignal", "StoreRejected", "store_error", "translating"]

# Server answers that say "this request is wrong", not "the server cannot work now": the same
# call would fail again after any wait. (MongoDB error codes.)
REFUSAL_CODES = frozenset({
    2,  # BadValue
    9,  # FailedToParse
    14,  # TypeMismatch
    28,  # PathNotViable
    40,  # ConflictingUpdateOperators
    52,  # DollarPrefixedFieldName
    53,  # InvalidIdField
    56,  # EmptyFieldName
    57,  # DottedFieldName
    66,  # ImmutableField
    121,  # DocumentValidationFailure
    10334,  # BSONObjectTooLarge
    17280,  # KeyTooLong
})


class StoreRejected(ExecutionError):
    """The store refused this call for what it is (a bad document or update): retrying it
    cannot help, so it is not an outage."""


def store_error(error: BaseException) -> ExecutionError | None:
    """Our error for a backend's failure, or None when it is not a store failure at all."""
    if isinstance(error, (StoreUnavailable, StoreRejected)):
        return error
    if isinstance(error, (ConnectionFailure, WriteConcernError)):
        return StoreUnavailable(f"store unavailable: {_describe(error)}")
    if isinstance(error, OperationFailure):
        # In-process engines (mongomock, litemongo) give no code: their refusals are never an
        # outage. A server's unknown code is treated as one: waiting loses nothing.
        if error.code is None or error.code in REFUSAL_CODES:
            return StoreRejected(f"store refused the write: {_describe(error)}")
        return StoreUnavailable(f"store unavailable: {_describe(error)}")
    if isinstance(error, PyMongoError):
        return StoreUnavailable(f"store unavailable: {_describe(error)}")
    if isinstance(error, (sqlite3.OperationalError, sqlite3.InternalError)) or \
            type(error) is sqlite3.DatabaseError:  # 'database disk image is malformed'
        return StoreUnavailable(f"store unavailable: {_describe(error)}")
    if isinstance(error, OSError):
        return StoreUnavailable(f"store unavailable: {_describe(error)}")
    return None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def translating(method: Callable[..., T]) -> Callable[..., T]:
    """Turn a backend's failure into StoreUnavailable or StoreRejected (see module docstring).
    On a Store method, failures and successful writes are also reported to its `health`."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            result = method(*args, **kwargs)
        except (DuplicateKeyError, DuplicateSignal):
            raise
        except Exception as e:
            translated = store_error(e)
            if translated is None:
                raise
            health = _health_of(args)
            if health is not None and isinstance(translated, StoreUnavailable):
                health.failed(translated)
            if translated is e:
                raise
            raise translated from e
        if getattr(wrapper, "writes", False):
            health = _health_of(args)
            if health is not None:
                health.wrote()
        return result

    return wrapper


def writing(method: Callable[..., T]) -> Callable[..., T]:
    """`translating` for a call that writes: its success ends an outage."""
    wrapper = translating(method)
    wrapper.writes = True  # type: ignore[attr-defined]
    return wrapper


def inserted(collection, doc: dict) -> bool:
    """Insert `doc`; False when a document with its unique key is already there."""
    try:
        collection.insert_one(doc)
        return True
    except DuplicateKeyError:
        return False


def _health_of(args: tuple) -> StoreHealth | None:
    health = getattr(args[0], "health", None) if args else None
    return health if isinstance(health, StoreHealth) else None


class StoreHealth:
    """Whether the store is in an outage: from the first call that found it unavailable to the
    next write it took. Thread-safe (store calls may run on worker threads). Only a daemon
    `announce`s outages in its log; a command says why it failed in its own one line."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 announce: bool = False) -> None:
        self._clock = clock
        self.announce = announce
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0
        self._first_error = ""
        self.outages = 0
        self.last_outage_seconds: float | None = None
        # takes a callback to run once the current call's writes are committed, if they are
        # not yet (the embedded store's batches); False: they are
        self.defer: Callable[[Callable[[], None]], bool] | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def down_for(self) -> float:
        since = self._since
        return 0.0 if since is None else self._clock() - since

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self._failures += 1
            if self._since is not None:
                return
            self._since = self._clock()
            self._first_error = str(error)
            self.outages += 1
        if self.announce:
                logger.error("Store outage: %s. New messages are held unacknowledged and store "
                         "calls retried until a write succeeds again", error)

    def wrote(self) -> None:
        if self._since is None:
            return
        if self.defer is not None and self.defer(self._written):
            return  # the write is not committed yet (embedded_batch.py): only once it is
        self._written()

    def _written(self) -> None:
        with self._lock:
            if self._since is None:
                return
            length = self._clock() - self._since
            failures, first = self._failures, self._first_error
            self._since, self._failures = None, 0
            self.last_outage_seconds = length
        if self.announce:
                logger.warning("Store outage over after %.1f s (%d store calls failed; first: %s)",
                           length, failures, first)

