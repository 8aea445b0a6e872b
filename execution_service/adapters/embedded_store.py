"""litemongo's sqlite store with its query index kept in the same sqlite file
(embedded_index.py) and its calls committed a batch at a time on the store thread
(embedded_batch.py).

Files written by plain litemongo open as they are: a missing index is built from the
documents on first use. Every writer of a file must use this module: plain litemongo's writes
would not update the rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from litemongo import sqlite_store
from litemongo._vendor.mongomock import indexing
from pymongo.errors import WriteError

from execution_service.adapters.embedded_batch import BatchingConnection, WriteBatches
from execution_service.adapters.embedded_index import (  # noqa: F401 - tests import them here
    COMPLETE_PATHS,
    ID,
    ROWS,
    SqliteQueryIndex,
    doc_key_texts,
)

REMEMBERED_READ = 2  # reads of at most this many documents are remembered for their update


class IndexDict(sqlite_store.IndexDict):
    """litemongo's cache of a file's index specifications, checked against the file once per
    transaction of ours rather than on every query."""

    _checked_in: int | None = None

    def _get_cache(self) -> dict:
        self._connection.touch()  # asked before a query or a write: it joins the batch first
        transaction = self._connection.checked_in_transaction()
        if transaction is None or transaction != self._checked_in or self._cache is None:
            self._cache = super()._get_cache()
            self._checked_in = transaction
        return self._cache

    def invalidate(self) -> None:
        super().invalidate()
        self._checked_in = None


class CollectionStore(sqlite_store.CollectionStore):
    """litemongo's sqlite collection with the query index in its file (files in litemongo's
    legacy key format keep its in-memory index), its connection usable from the store thread
    and its writes grouped into the store thread's batches (embedded_batch.py)."""

    _sql_index: SqliteQueryIndex | None = None
    _filled_in: int | None = None  # the transaction of ours that found documents here
    _paths_of: dict | None = None  # the index specifications `_declared` was computed from
    _declared: frozenset[str] = frozenset()

    def __init__(self, filename, codec_options=None, batches: WriteBatches | None = None):
        self._batches = batches
        super().__init__(filename, codec_options=codec_options)

    def open(self) -> None:
        """litemongo's own, on a BatchingConnection that any one thread at a time may use (the
        serialized wrapper's lock sees to that)."""
        self._connection = sqlite3.connect(self._path, factory=BatchingConnection,
                                           check_same_thread=False)
        self._connection.batches = self._batches
        self._connection.collection = self._path.name
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._cur = self._connection.cursor()
        key_format = self._init_info()
        self._documents = sqlite_store.TableDict(
            self.DOCUMENTS, self._connection, self._cur, codec_options=self._codec_options,
            key_format=key_format)
        self.indexes = IndexDict(self.INDEXES, self._connection, self._cur,
                                 codec_options=self._codec_options, key_format=key_format)
        row = self._connection.execute(
            f"SELECT value FROM {self.INFO} WHERE key = 'force_created'").fetchone()
        self._is_force_created = bool(row and row[0])
        self._ttl_indexes = {name: index for name, index in self.indexes.items()
                             if index.get("expireAfterSeconds") is not None}
        self._query_index = None
        self._data_version = None
        self._open_sql_index()

    def _open_sql_index(self) -> None:
        self._sql_index = (None if self._documents.key_format == sqlite_store.KEY_FORMAT_LEGACY
                           else SqliteQueryIndex(self._connection, self._documents))

    # reads: in a batch, each joins the batch's transaction on this file (embedded_batch.py)

    def __contains__(self, key) -> bool:
        self._connection.touch()
        found = super().__contains__(key)
        if not found and self._sql_index is not None:
            self._sql_index.remember(self._index_key(key), None)  # an insert follows
        return found

    def _get_many(self, keys):
        if self._sql_index is None or len(keys) > REMEMBERED_READ:
            yield from super()._get_many(keys)
            return
        for doc in super()._get_many(keys):  # an update may follow: its index rows from these
            self._sql_index.remember(self._index_key(doc[ID]), doc)
            yield doc

    def __getitem__(self, key):
        self._connection.touch()
        return super().__getitem__(key)

    def __len__(self) -> int:
        self._connection.touch()
        return super().__len__()

    @property
    def is_empty(self) -> bool:
        """Asked before every query: once seen non-empty, not asked of the file again in
        the same transaction of ours (only our own deletes could empty it)."""
        self._connection.touch()
        transaction = self._connection.checked_in_transaction()
        if transaction is not None and transaction == self._filled_in:
            return False
        empty = not self._documents
        self._filled_in = None if empty else transaction
        return empty

    def close(self) -> None:
        super().close()
        self._sql_index = None

    @contextlib.contextmanager
    def _write_transaction(self, deferring_savepoint: bool = False) -> Iterator[None]:
        """One transaction holding sqlite's write lock from the start, so the rows read to
        update the index are still current when written (in a batch: a savepoint of the
        batch's, opened by the index before its first row statement when deferred: a write
        of the document alone is one statement). Outside a batch TableDict's own `with
        connection` commits it, so the documents-table write must come last."""
        deferring = (self._connection.deferring_savepoint() if deferring_savepoint
                     else contextlib.nullcontext())
        with self._rwlock.writer(), deferring, self._connection:
            if not self._connection.in_transaction:
                self._connection.begin_immediate()
            yield

    def __setitem__(self, key, val: dict) -> None:
        if self._sql_index is None:
            super().__setitem__(key, val)
            return
        if isinstance(val.get(ID), (list, tuple)):
            # As MongoDB: an array id would match queries on its elements, not by primary key
            raise WriteError("can't use an array for _id", 53)
        with self._write_transaction(deferring_savepoint=True):
            self._sql_index.add(self._index_key(key), val)
            self._documents[key] = val
        self._sql_index.remember(self._index_key(key), val)

    def __delitem__(self, key) -> None:
        self._filled_in = None
        if self._sql_index is None:
            super().__delitem__(key)
            return
        with self._write_transaction(deferring_savepoint=True):
            self._sql_index.remove(self._index_key(key))
            del self._documents[key]

    def drop(self) -> None:
        self._filled_in = None
        with self._connection:
            if self._sql_index is not None:
                self._sql_index.clear()
            super().drop()

    def copy_from(self, source: sqlite_store.CollectionStore) -> None:
        # The copied documents are indexed on first use (the key format may change too)
        self._filled_in = None
        with self._connection:
            if self._sql_index is not None:
                self._sql_index.clear()
            super().copy_from(source)
        self._open_sql_index()

    def _get_query_index(self):
        self._connection.touch()  # every query asks for it first
        if self._sql_index is None:
            return super()._get_query_index()
        if self._declared_paths() != self._sql_index.complete_paths():
            with self._write_transaction():
                self._sql_index.set_paths(self._declared_paths(), self._iter_items())
        return self._sql_index

    def _declared_paths(self) -> frozenset[str]:
        """The indexed paths, recomputed only when IndexDict re-reads or drops its cache (a
        new dict each time: an index created here or by another connection)."""
        specs = self.indexes._get_cache()
        if specs is not self._paths_of:
            self._declared = frozenset(indexing.index_paths(specs.values()) - {ID})
            self._paths_of = specs
        return self._declared


class DatabaseStore(sqlite_store.DatabaseStore):
    _batches: WriteBatches | None = None

    def __getitem__(self, col_name) -> CollectionStore:
        if col_name not in self._collections:
            self._collections[col_name] = CollectionStore(
                self._dirpath / col_name, codec_options=self._codec_options,
                batches=self._batches)
        return self._collections[col_name]


class ServerStore(sqlite_store.ServerStore):
    """Pass to `litemongo.MongoClient(store=...)`: one directory per database, as litemongo.
    With `batches`, the store thread's calls are committed a batch at a time."""

    def __init__(self, dirpath, batches: WriteBatches | None = None) -> None:
        super().__init__(dirpath)
        self._batches = batches

    def __getitem__(self, db_name) -> DatabaseStore:
        if db_name not in self._databases:
            database = DatabaseStore(self._dirpath / db_name)
            database._batches = self._batches
            self._databases[db_name] = database
        return self._databases[db_name]
