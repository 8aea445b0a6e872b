"""litemongo's sqlite store with its query index kept in the same sqlite file.

litemongo plans queries with a Python hash index of every indexed field of every document
(about 4 KB of the daemon's memory per order). Here those keys are rows next to the documents,
written in the document's own transaction, so memory stays at sqlite's page cache whatever the
store holds. Files written by plain litemongo open as they are: a missing index is built from
the documents on first use. Every writer of a file must use this module: plain litemongo's
writes would not update the rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator

import litemongo
from bson import ObjectId
from litemongo import sqlite_store
from litemongo._vendor.mongomock import indexing
from pymongo.errors import WriteError

from execution_service.adapters.embedded_batch import BatchingConnection, WriteBatches

ID = "_id"
DOCUMENTS = sqlite_store.CollectionStore.DOCUMENTS
ROWS = "query_index"
COMPLETE_PATHS = "query_index_paths"  # paths whose rows cover every document
# Key text of a document whose value at a path can't be keyed: a candidate for every query on it
UNKEYED = "*"
_MISSING = object()
# Rows are trusted only if written with the same keys: another version rebuilds them
KEY_SCHEME = f"1/litemongo-{litemongo.__version__}"


def key_text(key: tuple) -> str:
    """One text per index key, the same for keys that compare equal; the tag comes first."""
    tag = key[0]
    if tag == "s":
        return "s" + key[1]
    if tag == "n" and isinstance(key[1], float):
        return "n" + repr(key[1] or 0.0)  # -0.0 == 0.0, but their reprs differ
    if tag == "t":
        return "t" + key[1].isoformat()  # naive UTC, whole seconds
    return repr(key)  # starts with "(", unlike the texts above


def doc_key_texts(doc: dict, path: str) -> set[str]:
    keys = indexing._doc_keys(doc, path)
    return {UNKEYED} if keys is None else {key_text(key) for key in keys}


def _rows_for(doc: dict | None, paths: Iterable[str]) -> set[tuple[str, str]]:
    if doc is None:
        return set()
    return {(path, text) for path in paths for text in doc_key_texts(doc, path)}


def _top(path: str) -> str:
    return path.partition(".")[0]


def _chunks(items: list, size: int = sqlite_store._MAX_PARAMS) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class SqliteQueryIndex:
    """The query index of one collection as rows (path, key, doc_key) of its sqlite file.

    Keys are litemongo's own (`indexing`), so candidates are the same superset of the matches
    that litemongo's in-memory index gives. Writes go into the caller's transaction.
    `_id` needs no rows: string and ObjectId ids are looked up by the documents' primary key.
    """

    def __init__(self, connection: BatchingConnection, documents: sqlite_store.TableDict) -> None:
        self._connection = connection
        self._documents = documents
        self._complete: frozenset[str] = frozenset()
        self._seen_version = None
        self._checked_in: int | None = None  # the transaction the paths were checked in
        with connection:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {ROWS}(path TEXT NOT NULL, "
                               "key TEXT NOT NULL, doc_key TEXT NOT NULL, "
                               "PRIMARY KEY(path, key, doc_key)) WITHOUT ROWID")
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {COMPLETE_PATHS}(path TEXT PRIMARY KEY, scheme TEXT)")

    @property
    def paths(self) -> set[str]:
        return {ID, *self.complete_paths()}

    def complete_paths(self) -> frozenset[str]:
        """As the file says: re-read whenever another connection has committed (checked once
        per transaction of ours: it holds the write lock, so nobody else can commit)."""
        transaction = self._connection.checked_in_transaction()
        if transaction is not None and transaction == self._checked_in:
            return self._complete
        version = self._connection.execute("PRAGMA data_version").fetchone()[0]
        if version != self._seen_version:
            self._complete = frozenset(path for (path,) in self._connection.execute(
                f"SELECT path FROM {COMPLETE_PATHS} WHERE scheme = ?", (KEY_SCHEME,)))
            self._seen_version = version
        self._checked_in = transaction
        return self._complete

    # writes: the caller holds the write transaction ----------------------------------------

    def add(self, store_key: str, doc: dict) -> None:
        """Index (or re-index) a document: only the rows whose keys changed are written."""
        paths = self.complete_paths()
        stored = self._stored(store_key)
        if stored is not None:
            # Equal values have equal keys: skip the paths under an unchanged top-level field
            paths = [path for path in paths
                     if stored.get(_top(path), _MISSING) != doc.get(_top(path), _MISSING)]
        wanted = _rows_for(doc, paths)
        existing = _rows_for(stored, paths)
        self._delete(store_key, existing - wanted)
        if wanted - existing:
            self._connection.executemany(
                f"INSERT OR IGNORE INTO {ROWS} VALUES (?, ?, ?)",
                [(path, text, store_key) for path, text in wanted - existing])

    def remove(self, store_key: str) -> None:
        self._delete(store_key, _rows_for(self._stored(store_key), self.complete_paths()))

    def _stored(self, store_key: str) -> dict | None:
        # A document's rows are those of its stored version. A reverse index would be one more
        # page written per commit, which costs more than reading this page again.
        row = self._connection.execute(
            f"SELECT doc FROM {DOCUMENTS} WHERE _id = ?", (store_key,)).fetchone()
        return None if row is None else self._documents._decode_doc(row[0])

    def _delete(self, store_key: str, rows: set[tuple[str, str]]) -> None:
        if rows:
            self._connection.executemany(
                f"DELETE FROM {ROWS} WHERE path = ? AND key = ? AND doc_key = ?",
                [(path, text, store_key) for path, text in rows])

    def set_paths(self, paths: Iterable[str], documents: Iterable[tuple]) -> None:
        """Keep rows for exactly these paths; new ones are built from the (store key, document)
        pairs, which are only read if a path is new."""
        wanted = frozenset(paths) - {ID}
        keep = self.complete_paths() & wanted
        marked = {path for (path,) in self._connection.execute(
            f"SELECT path FROM {COMPLETE_PATHS}")}
        for path in marked - keep:
            self._connection.execute(f"DELETE FROM {ROWS} WHERE path = ?", (path,))
            self._connection.execute(f"DELETE FROM {COMPLETE_PATHS} WHERE path = ?", (path,))
        new = sorted(wanted - keep)
        if new:
            self._connection.executemany(f"DELETE FROM {ROWS} WHERE path = ?",
                                         [(path,) for path in new])
            self._connection.executemany(
                f"INSERT OR IGNORE INTO {ROWS} VALUES (?, ?, ?)",
                ((path, text, store_key) for store_key, doc in documents
                 for path, text in _rows_for(doc, new)))
            self._connection.executemany(f"INSERT INTO {COMPLETE_PATHS} VALUES (?, ?)",
                                         [(path, KEY_SCHEME) for path in new])
        self._complete = wanted
        self._seen_version = self._checked_in = None  # read the file again: this may roll back

    def clear(self) -> None:
        self._connection.execute(f"DELETE FROM {ROWS}")
        self._connection.execute(f"DELETE FROM {COMPLETE_PATHS}")
        self._seen_version = self._checked_in = None

    # reads ----------------------------------------------------------------------------------

    def candidates(self, filter: dict) -> set[str] | None:  # noqa: A002 - litemongo's name
        """Store keys of every document that could match, or None: scan them all. Plans with
        the paths as of the last complete_paths(), which CollectionStore calls just before."""
        if not isinstance(filter, dict) or not filter:
            return None
        terms = list(self._terms(filter, self._complete))
        by_id = [keys for path, keys in terms if path == ID]
        if by_id:
            return set.intersection(*by_id)
        best = None
        for path, keys in terms:
            found = self._lookup(path, keys)
            best = found if best is None else best & found
            if not best:
                break
        return best

    def in_natural_order(self, store_keys: Iterable[str]) -> list[str]:
        """The keys of existing documents in the documents table's ROWID order."""
        keys = list(store_keys)
        if len(keys) <= 1:
            return keys  # a missing one is skipped when the documents are read
        rows = []
        for chunk in _chunks(keys):
            rows += self._connection.execute(
                f"SELECT ROWID, _id FROM {DOCUMENTS} WHERE _id IN ({','.join('?' * len(chunk))})",
                chunk).fetchall()
        return [key for _, key in sorted(rows)]

    def _terms(self, filter: dict, paths: frozenset[str]) -> Iterator[tuple[str, set]]:
        """(path, keys) for every condition that can narrow the search; `_id` gives store keys."""
        for field, condition in filter.items():
            if field == "$and" and isinstance(condition, (list, tuple)):
                for sub_filter in condition:
                    if isinstance(sub_filter, dict):
                        yield from self._terms(sub_filter, paths)
            elif field == ID:
                store_keys = self._id_store_keys(condition)
                if store_keys is not None:
                    yield ID, store_keys
            elif field in paths:
                keys = indexing.query_keys(condition)
                if keys is not None:
                    yield field, {key_text(key) for key in keys}

    def _id_store_keys(self, condition) -> set[str] | None:
        if isinstance(condition, dict):
            if "$eq" in condition:
                values = [condition["$eq"]]
            elif isinstance(condition.get("$in"), (list, tuple)):
                values = condition["$in"]
            else:
                return None
        else:
            values = [condition]
        if not all(isinstance(value, (str, ObjectId)) for value in values):
            return None
        return {self._documents.encode_key(value) for value in values}

    def _lookup(self, path: str, texts: set[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(texts)):
            # Two searches: a third faster than one `key IN` (which builds a temporary table)
            found.update(doc_key for (doc_key,) in self._connection.execute(
                f"SELECT doc_key FROM {ROWS} WHERE path = ?1 AND key = '{UNKEYED}' UNION ALL "
                f"SELECT doc_key FROM {ROWS} WHERE path = ?1 AND key IN "
                f"({','.join('?' * len(chunk))})", [path, *chunk]))
        return found


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

    def __init__(self, filename, codec_options=None, batches: WriteBatches | None = None):
        self._batches = batches
        super().__init__(filename, codec_options=codec_options)

    def open(self) -> None:
        """litemongo's own, on a BatchingConnection that any one thread at a time may use (the
        serialized wrapper's lock sees to that)."""
        self._connection = sqlite3.connect(self._path, factory=BatchingConnection,
                                           check_same_thread=False)
        self._connection.batches = self._batches
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
        return super().__contains__(key)

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
    def _write_transaction(self) -> Iterator[None]:
        """One transaction holding sqlite's write lock from the start, so the rows read to
        update the index are still current when written (in a batch: a savepoint of the
        batch's). Outside a batch TableDict's own `with connection` commits it, so the
        documents-table write must come last."""
        with self._rwlock.writer(), self._connection:
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
        with self._write_transaction():
            self._sql_index.add(self._index_key(key), val)
            self._documents[key] = val

    def __delitem__(self, key) -> None:
        self._filled_in = None
        if self._sql_index is None:
            super().__delitem__(key)
            return
        with self._write_transaction():
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
        return frozenset(indexing.index_paths(self.indexes.values()) - {ID})


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
