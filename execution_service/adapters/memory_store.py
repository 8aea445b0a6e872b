"""The in-memory store (`mongomock://`) made safe for two threads: every call into it, and
every cursor read out of it, holds one lock.

The daemon reads the store on the event loop while the store thread writes. mongomock updates
a stored document in place, outside its own reader/writer lock, so a reader at that moment
sees half an update (one field new, the next still old), a document briefly missing, or
"dictionary changed size during iteration"; and that error, raised while mongomock's lazy
reader holds its read lock, leaves the lock held: the next write, then every read, waits
for good. A real MongoDB has none of this. The engine is pure Python under the GIL, so the
lock costs no parallelism.

The embedded store sits behind the same wrapper for another reason: its sqlite connections
may be used by one thread at a time, and the store thread holds the lock for a whole batch
(embedded_batch.py), so no other thread sees or joins uncommitted work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from litemongo._vendor.mongomock.collection import Collection, Cursor
from litemongo._vendor.mongomock.command_cursor import CommandCursor


def serialized(database: Any, lock: threading.RLock | None = None) -> SerializedDatabase:
    """`database` (litemongo's in-memory engine, or its sqlite one: embedded_batch.py) behind
    one lock (its own unless given)."""
    return SerializedDatabase(database, lock or threading.RLock())


def _locked(call: Callable, lock: threading.RLock) -> Callable:
    def under_lock(*args, **kwargs):
        with lock:
            return _wrap(call(*args, **kwargs), lock)
    return under_lock


def _wrap(value: Any, lock: threading.RLock) -> Any:
    if isinstance(value, Collection):
        return SerializedCollection(value, lock)
    if isinstance(value, (Cursor, CommandCursor)):
        return SerializedCursor(value, lock)
    return value


class _Serialized:
    """Attributes pass through; methods run under the lock; collections and cursors they
    return come back serialized too."""

    def __init__(self, wrapped: Any, lock: threading.RLock) -> None:
        self._wrapped = wrapped
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._wrapped, name)
        if isinstance(attribute, Collection):
            return SerializedCollection(attribute, self._lock)
        return _locked(attribute, self._lock) if callable(attribute) else attribute

    def __getitem__(self, name: str) -> Any:
        with self._lock:
            return _wrap(self._wrapped[name], self._lock)


class SerializedDatabase(_Serialized):
    pass


class SerializedCollection(_Serialized):
    pass


class SerializedCursor(_Serialized):
    """Read to the end under the lock when iterated (a snapshot, like a finished query)."""

    def __iter__(self) -> Iterator:
        with self._lock:
            documents = list(self._wrapped)
        return iter(documents)

    def __next__(self) -> Any:
        with self._lock:
            return next(self._wrapped)
