"""Stores for tests, always through the product's own factory (open_store), never a driver
client built by hand."""

from __future__ import annotations

from execution_service.adapters.store import Store, StoreHandle, open_store


def memory_store(database: str = "trading") -> tuple[StoreHandle, Store]:
    """A fresh in-memory store (`mongomock://`): the handle (close it) and its Store."""
    handle = open_store("mongomock://", database, None)
    return handle, Store(handle.database)
