"""Stores for tests, always through the product's own factory (open_store), never a driver
client built by hand."""

from __future__ import annotations

import time

from pymongo.errors import ServerSelectionTimeoutError

from execution_service.adapters.store import Store, StoreHandle, open_store


def memory_store(database: str = "trading") -> tuple[StoreHandle, Store]:
    """A fresh in-memory store (`mongomock://`): the handle (close it) and its Store."""
    handle = open_store("mongomock://", database, None)
    return handle, Store(handle.database)


class SwitchableCollection:
    """A collection that fails like an unreachable server while its database is `down`."""

    def __init__(self, collection, database) -> None:
        self._collection = collection
        self._database = database

    def __getattr__(self, name):
        if not self._database.down:
            return getattr(self._collection, name)

        def fail(*args, **kwargs):
            time.sleep(self._database.hang_seconds)
            raise ServerSelectionTimeoutError("no servers (test)")
        return fail


class SwitchableDatabase:
    """A database that cannot be reached, or (with `database`) one that goes away when `down`
    is set."""

    hang_seconds = 0.0  # each call blocks this long before it fails (the driver's timeout)

    def __init__(self, database=None) -> None:
        self.database = database
        self.down = database is None

    def __getitem__(self, name: str):
        return SwitchableCollection(None if self.database is None else self.database[name], self)


def down_store(database=None) -> tuple[Store, SwitchableDatabase]:
    """A Store whose server is unreachable (or, over `database`, goes away when the returned
    switch's `down` is set): the real adapter, failing the way the driver fails."""
    switch = SwitchableDatabase(database)
    return Store(switch), switch
