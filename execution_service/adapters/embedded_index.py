"""The embedded store's query index: rows (path, key, doc_key) in each collection's sqlite file.

litemongo plans queries with a Python hash index of every indexed field of every document
(about 4 KB of the daemon's memory per order). Here those keys are rows next to the documents,
written in the document's own transaction, so memory stays at sqlite's page cache whatever the
store holds (embedded_store.py wires it into litemongo's collections).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator

import litemongo
from bson import ObjectId
from litemongo import sqlite_store
from litemongo._vendor.mongomock import indexing

from execution_service.adapters.embedded_batch import BatchingConnection

ID = "_id"
DOCUMENTS = sqlite_store.CollectionStore.DOCUMENTS
ROWS = "query_index"
COMPLETE_PATHS = "query_index_paths"  # paths whose rows cover every document
# Key text of a document whose value at a path can't be keyed: a candidate for every query on it
UNKEYED = "*"
_MISSING = object()
# Values a document's indexed fields can be remembered by without a copy
_SCALARS = (str, int, float, bool, type(None), datetime.datetime, ObjectId)
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
        # Documents as stored, seen in one transaction of ours (`_known_in`): their indexed
        # top-level fields, or None for a key known absent. Saves `_stored` re-reading them.
        self._known: dict[str, dict | None] = {}
        self._known_in: int | None = None
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
        """Index (or re-index) a document: only the rows whose keys changed are written (the
        write's savepoint opened before them: the caller's document write comes next)."""
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
            self._connection.savepoint()  # the document's own write follows
            self._connection.executemany(
                f"INSERT OR IGNORE INTO {ROWS} VALUES (?, ?, ?)",
                [(path, text, store_key) for path, text in wanted - existing])

    def remove(self, store_key: str) -> None:
        self._delete(store_key, _rows_for(self._stored(store_key), self.complete_paths()))

    def remember(self, store_key: str, doc: dict | None) -> None:
        """`doc` is what the file holds at this key now (None: nothing); remembered for the
        rest of this transaction of ours (held from its start with the write lock: nobody else
        can change it), if its indexed fields are plain values."""
        transaction = self._connection.checked_in_transaction()
        if transaction is None:
            return
        if transaction != self._known_in:
            self._known, self._known_in = {}, transaction
        if doc is None:
            self._known[store_key] = None
            return
        fields = {}
        for path in self._complete:
            top = _top(path)
            value = doc.get(top, _MISSING)
            if value is _MISSING:
                continue
            if not isinstance(value, _SCALARS):
                self._known.pop(store_key, None)
                return
            fields[top] = value
        self._known[store_key] = fields

    def _stored(self, store_key: str) -> dict | None:
        # A document's rows are those of its stored version. A reverse index would be one more
        # page written per commit, which costs more than reading this page again.
        transaction = self._connection.checked_in_transaction()
        if transaction is not None and transaction == self._known_in and \
                store_key in self._known:
            return self._known.pop(store_key)
        row = self._connection.execute(
            f"SELECT doc FROM {DOCUMENTS} WHERE _id = ?", (store_key,)).fetchone()
        return None if row is None else self._documents._decode_doc(row[0])

    def _delete(self, store_key: str, rows: set[tuple[str, str]]) -> None:
        if rows:
            self._connection.savepoint()  # the document's own write follows
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
        self._known_in = None

    def clear(self) -> None:
        self._connection.execute(f"DELETE FROM {ROWS}")
        self._connection.execute(f"DELETE FROM {COMPLETE_PATHS}")
        self._seen_version = self._checked_in = self._known_in = None

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
