"""The embedded store's query index in sqlite: litemongo's answers, no per-document memory,
index rows committed with their document, other connections' writes seen."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import litemongo
import pytest
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError, WriteError

from execution_service.adapters.embedded_store import (
    COMPLETE_PATHS,
    ROWS,
    ServerStore,
    doc_key_texts,
)

T0 = datetime(2025, 1, 2, 9, 30, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def embedded(path: Path) -> litemongo.MongoClient:
    return litemongo.MongoClient(ServerStore(path), tz_aware=True)


def without_object_ids(value: Any) -> Any:
    """Upserts make their own ObjectIds, different in each store."""
    if isinstance(value, ObjectId):
        return "<ObjectId>"
    if isinstance(value, dict):
        return {key: without_object_ids(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_object_ids(item) for item in value]
    return value


def counts(result) -> tuple:
    return result.matched_count, result.modified_count, result.upserted_id


def outcome(action: Callable[[Any], Any], collection) -> Any:
    try:
        return without_object_ids(action(collection))
    except (PyMongoError, ValueError) as e:  # the same error from both is the same answer
        return ("raised", type(e).__name__)


class Twin:
    """The same collection on plain litemongo and on the embedded store: every action runs on
    both and must give the same answer (or the same error)."""

    def __init__(self, root: Path) -> None:
        self.clients = [litemongo.connect(str(root / "plain"), tz_aware=True),
                        embedded(root / "indexed")]

    def __call__(self, action: Callable[[Any], Any]) -> Any:
        plain, indexed = (outcome(action, client.trading.records) for client in self.clients)
        assert indexed == plain
        return indexed

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def twin(tmp_path):
    both = Twin(tmp_path)
    yield both
    both.close()


def raw(collection_file: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(collection_file))


def rows_on_disk(collection_file: Path) -> set[tuple]:
    with raw(collection_file) as connection:
        return set(connection.execute(f"SELECT path, key, doc_key FROM {ROWS}"))


def rows_from_documents(collection_file: Path) -> set[tuple]:
    """What the index rows must be: recomputed from every stored document."""
    with raw(collection_file) as connection:
        paths = [path for (path,) in connection.execute(f"SELECT path FROM {COMPLETE_PATHS}")]
        documents = connection.execute("SELECT _id, doc FROM documents").fetchall()
    return {(path, text, key) for key, encoded in documents for path in paths
            for text in doc_key_texts(bson.decode(encoded), path)}


# -- the same answers as litemongo ----------------------------------------------------------


def record(number: int, **fields) -> dict:
    return {"_id": f"exec_{number}", "signal_id": f"sig_{number}", "status": "PENDING",
            "version": 1, "owner": {"id": f"host:{number % 2}"}, "tags": [number % 3, "t"],
            "n": number % 4, "received_at": T0 + timedelta(seconds=number), **fields}


QUERIES = [
    {"status": "PENDING"},
    {"status": {"$in": ["FILLED", "REJECTED"]}},
    {"status": {"$ne": "PENDING"}},
    {"status": {"$nin": ["PENDING", None]}},
    {"owner.id": "host:1"},
    {"owner.id": None},
    {"owner.id": {"$in": []}},
    {"owner.id": {"$nin": ["host:0", None]}},
    {"tags": 2},
    {"tags": "t"},
    {"tags": [1, "t"]},
    {"n": 1},
    {"n": 1.0},
    {"n": True},
    {"n": -0.0},
    {"maybe": None},
    {"maybe": {"$exists": False}},
    {"received_at": T0 + timedelta(seconds=3)},
    {"received_at": T0 + timedelta(seconds=3, microseconds=400_000)},
    {"received_at": {"$gte": T0 + timedelta(seconds=5)}},
    {"_id": "exec_4"},
    {"_id": {"$in": ["exec_9", "exec_2", "nope"]}, "owner.id": "host:0"},
    {"_id": {"$gt": "exec_5"}},
    {"$and": [{"status": "PENDING"}, {"tags": 0}]},
    {"$and": [{"_id": "exec_1"}, {"_id": "exec_2"}]},
    {"signal_id": "sig_7", "status": "FILLED"},
]


def assert_same_answers(twin: Twin) -> None:
    for query in QUERIES:
        twin(lambda c, q=query: list(c.find(q)))
        twin(lambda c, q=query: c.count_documents(q))
    twin(lambda c: list(c.find({"status": {"$in": ["PENDING", "FILLED"]}})
                        .sort([("received_at", -1), ("_id", 1)])))
    twin(lambda c: list(c.find().sort("n", 1)))


def test_given_the_same_writes_then_every_query_answers_as_plain_litemongo(twin):
    twin(lambda c: c.create_index("signal_id", unique=True))
    twin(lambda c: [c.create_index(path) for path in ("status", "owner.id", "tags", "n",
                                                      "maybe", "received_at")])
    for n in range(12):
        twin(lambda c, n=n: c.insert_one(record(n)).inserted_id)
    twin(lambda c: c.insert_one(record(20, n=1.0, maybe=None, owner=None)).inserted_id)
    twin(lambda c: c.insert_one(record(21, n=True, tags=[], owner=[{"id": "host:1"}])).inserted_id)
    twin(lambda c: c.insert_one(record(22, n=-0.0, tags="t", maybe={"x": 1})).inserted_id)
    twin(lambda c: c.insert_one(record(23, received_at=T0 + timedelta(
        seconds=3, microseconds=400_000))).inserted_id)
    assert_same_answers(twin)

    twin(lambda c: c.update_many({"n": 1}, {"$set": {"status": "FILLED"},
                                            "$inc": {"version": 1}}).modified_count)
    twin(lambda c: c.update_one({"_id": "exec_3", "version": 1},
                                {"$set": {"owner": {"id": "host:9"}}, "$push": {"tags": 7}})
         .modified_count)
    twin(lambda c: counts(c.update_one({"_id": "exec_3", "version": 1}, {"$set": {"x": 1}})))
    twin(lambda c: c.find_one_and_update({"signal_id": "sig_new"},
                                         {"$set": {"status": "REJECTED"}}, upsert=True,
                                         return_document=ReturnDocument.AFTER))
    twin(lambda c: c.replace_one({"_id": "exec_5"}, record(5, status="REJECTED", n=2.0))
         .modified_count)
    twin(lambda c: c.insert_one(record(30, signal_id="sig_4")).inserted_id)  # DuplicateKeyError
    twin(lambda c: counts(c.update_one({"_id": "exec_6"}, {"$set": {"signal_id": "sig_7"}})))
    twin(lambda c: c.delete_many({"tags": 2}).deleted_count)
    twin(lambda c: c.delete_one({"_id": "exec_0"}).deleted_count)
    twin(lambda c: c.insert_one(record(0, status="FILLED")).inserted_id)  # back, at the end
    assert_same_answers(twin)

    twin(lambda c: c.drop_index("status_1"))
    twin(lambda c: c.insert_one(record(40, status="FILLED")).inserted_id)
    twin(lambda c: c.create_index("status"))
    assert_same_answers(twin)
    twin(lambda c: c.rename("renamed") and None)
    twin(lambda c: list(c.database.renamed.find({"status": "FILLED"})))
    twin(lambda c: list(c.database.renamed.find({"signal_id": "sig_7"})))


SCALARS = [None, 0, 1, 1.0, -0.0, True, "a", "b", T0, T0 + timedelta(seconds=1),
           T0 + timedelta(milliseconds=500)]
VALUES = st.sampled_from([*SCALARS, [1, "a"], ["b"], [], {"id": "a"}, [{"id": "b"}]])
FIELDS = st.sampled_from(["status", "tags", "owner.id", "n", "u", "plain"])
SET_FIELDS = st.sampled_from(["status", "tags", "owner.id", "n", "plain"])
IDS = st.sampled_from([f"d{n}" for n in range(6)])


@st.composite
def documents(draw) -> dict:
    doc = {"_id": draw(IDS)}
    for field in ("status", "tags", "n", "plain"):
        if draw(st.booleans()):
            doc[field] = draw(VALUES)
    if draw(st.booleans()):
        doc["u"] = draw(st.sampled_from(SCALARS))  # mongomock's unique check hashes it
    owner = draw(st.sampled_from(["missing", "dict", "value"]))
    if owner == "dict":
        doc["owner"] = {"id": draw(VALUES)}
    elif owner == "value":
        doc["owner"] = draw(VALUES)
    return doc


@st.composite
def queries(draw) -> dict:
    field, value, other = draw(FIELDS), draw(VALUES), draw(VALUES)
    return draw(st.sampled_from([
        {field: value}, {field: {"$in": [value, other]}}, {field: {"$ne": value}},
        {field: {"$nin": [value, other]}}, {"_id": {"$in": [draw(IDS), draw(IDS)]}},
        {"$and": [{field: value}, {draw(FIELDS): other}]}, {"_id": draw(IDS), field: value}]))


def writes(draw_doc, draw_query) -> st.SearchStrategy:
    return st.one_of(
        st.builds(lambda d: lambda c: c.insert_one(d).inserted_id, draw_doc),
        st.builds(lambda d: lambda c: counts(c.replace_one({"_id": d["_id"]}, d, upsert=True)),
                  draw_doc),
        st.builds(lambda q, f, v: lambda c: counts(c.update_many(q, {"$set": {f: v}})),
                  draw_query, SET_FIELDS, VALUES),
        st.builds(lambda q: lambda c: c.delete_many(q).deleted_count, draw_query))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(writes(documents(), queries()),
                          st.builds(lambda q: lambda c: list(c.find(q)), queries())),
                min_size=1, max_size=14))
def test_given_any_sequence_of_writes_then_finds_answer_as_plain_litemongo(actions):
    with tempfile.TemporaryDirectory() as root:
        both = Twin(Path(root))
        try:
            both(lambda c: c.create_index("u", unique=True, sparse=True))
            both(lambda c: [c.create_index(p) for p in ("status", "tags", "owner.id", "n")])
            for action in actions:
                both(action)
            both(lambda c: list(c.find()))
        finally:
            both.close()


def test_given_indexed_paths_then_queries_on_them_are_planned_from_the_rows(tmp_path):
    client = embedded(tmp_path)
    records = client.trading.records
    records.create_index([("owner.id", 1), ("status", 1)])
    records.insert_many([record(1), record(2, status="FILLED"),
                         record(3, owner=[{"id": "host:1"}])])
    index = client._store["trading"]["records"]._get_query_index()
    assert index.candidates({"status": "FILLED"}) == {"s:exec_2"}
    assert index.candidates({"owner.id": "host:1"}) == {"s:exec_1", "s:exec_3"}  # 3: unkeyed
    assert index.candidates({"_id": {"$in": ["exec_1", "exec_9"]}}) == {"s:exec_1", "s:exec_9"}
    assert index.in_natural_order({"s:exec_3", "s:exec_9", "s:exec_1"}) == ["s:exec_1",
                                                                            "s:exec_3"]
    assert index.candidates({"signal_id": "sig_1"}) is None  # not indexed: a full scan
    client.close()


def test_given_an_array_id_then_the_write_is_refused_as_mongodb_does(tmp_path):
    client = embedded(tmp_path)
    with pytest.raises(WriteError):
        client.trading.records.insert_one({"_id": ["a"], "v": 1})
    assert client.trading.records.count_documents({}) == 0
    client.close()


# -- memory ---------------------------------------------------------------------------------


def python_growth(client, docs: int) -> int:
    """Bytes of Python memory still held after inserting docs more records and querying."""
    collection = client.trading.records
    for name in ("signal_id", "status", "account_id"):
        collection.create_index(name)
    for n in range(1000):
        collection.insert_one({"_id": f"exec_{n}", "signal_id": f"sig_{n}", "status": "PENDING",
                               "account_id": f"acc_{n % 5}"})
    assert collection.find_one({"signal_id": "sig_1"})  # plain litemongo builds its index here
    gc.collect()
    tracemalloc.start()
    try:
        for n in range(1000, 1000 + docs):
            collection.insert_one({"_id": f"exec_{n}", "signal_id": f"sig_{n}",
                                   "status": "PENDING", "account_id": f"acc_{n % 5}"})
        assert collection.count_documents({"status": "PENDING"}) == 1000 + docs
        gc.collect()
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def test_given_2000_more_records_then_the_index_takes_no_python_memory_unlike_litemongo(
        tmp_path):
    plain = litemongo.connect(str(tmp_path / "plain"), tz_aware=True)
    indexed = embedded(tmp_path / "indexed")
    try:
        plain_growth = python_growth(plain, 2000)
        indexed_growth = python_growth(indexed, 2000)
    finally:
        plain.close()
        indexed.close()
    assert plain_growth > 500_000, plain_growth  # litemongo: hundreds of bytes per record
    assert indexed_growth < plain_growth / 20, (indexed_growth, plain_growth)


# -- atomicity and files written elsewhere ---------------------------------------------------


def refuse_writes_of(collection_file: Path, *store_keys: str) -> None:
    """Triggers that fail these documents' writes inside their transaction, as a full disk
    would."""
    keys = ", ".join(f"'{key}'" for key in store_keys)
    with raw(collection_file) as connection, connection:
        for event in ("INSERT", "UPDATE"):
            connection.execute(
                f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON documents "
                f"WHEN NEW._id IN ({keys}) BEGIN SELECT RAISE(ABORT, 'disk full'); END")


def test_given_the_document_write_fails_then_its_index_rows_are_rolled_back(tmp_path):
    client = embedded(tmp_path)
    records = client.trading.records
    records.create_index("signal_id", unique=True)
    records.create_index("status")
    records.insert_one({"_id": "exec_1", "signal_id": "sig_1", "status": "PENDING"})
    collection_file = tmp_path / "trading" / "records"
    refuse_writes_of(collection_file, "s:exec_1", "s:exec_2")

    with pytest.raises(sqlite3.IntegrityError):
        records.update_one({"_id": "exec_1"}, {"$set": {"status": "FILLED"}})
    with pytest.raises(sqlite3.IntegrityError):
        records.insert_one({"_id": "exec_2", "signal_id": "sig_2", "status": "PENDING"})

    assert rows_on_disk(collection_file) == rows_from_documents(collection_file)
    assert records.find_one({"status": "FILLED"}) is None
    assert records.find_one({"status": "PENDING"})["_id"] == "exec_1"
    records.insert_one({"_id": "exec_3", "signal_id": "sig_2"})  # no phantom sig_2
    client.close()


WRITER = """
import sys
from pathlib import Path
from execution_service.adapters.store import open_store
records = open_store(None, "trading", Path(sys.argv[1])).database.execution_confirmations
records.create_index("signal_id", unique=True)
records.create_index("status")
n = 0
while True:
    n += 1
    records.insert_one({"_id": f"exec_{n}", "signal_id": f"sig_{n}", "status": "PENDING"})
    records.update_one({"_id": f"exec_{n}"}, {"$set": {"status": "FILLED"}})
    records.delete_many({"signal_id": f"sig_{n - 3}"})
    print(n, flush=True)
"""


def test_given_a_writer_killed_with_sigkill_then_the_index_matches_the_documents(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    acknowledged, deadline = 0, time.monotonic() + 20
    while acknowledged < 150 and time.monotonic() < deadline:
        acknowledged = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    # lines still in the pipe: the writer was ahead of this reader (and deleted older signals)
    acknowledged = max([acknowledged, *(int(line) for line in writer.stdout.read().split())])
    assert acknowledged >= 150
    # the writer ran on until the kill: the last number it printed is what was acknowledged
    acknowledged = max([acknowledged, *(int(line) for line in writer.stdout.read().split())])

    collection_file = tmp_path / "trading" / "execution_confirmations"
    assert rows_on_disk(collection_file) == rows_from_documents(collection_file)
    client = embedded(tmp_path)
    records = client.trading.execution_confirmations
    assert records.find_one({"signal_id": f"sig_{acknowledged}"})["status"] == "FILLED"
    assert records.count_documents({"status": "FILLED"}) >= 3
    client.close()


def test_given_a_store_written_by_plain_litemongo_then_indexed_queries_answer_from_its_data(
        tmp_path):
    plain = litemongo.connect(str(tmp_path), tz_aware=True)
    plain.trading.records.create_index("signal_id", unique=True)
    plain.trading.records.create_index("status")
    plain.trading.records.insert_many([record(n, status="FILLED" if n % 3 else "PENDING")
                                       for n in range(30)])
    plain.close()

    client = embedded(tmp_path)
    records = client.trading.records
    assert [doc["_id"] for doc in records.find({"status": "PENDING"})] == [
        f"exec_{n}" for n in range(0, 30, 3)]
    assert records.find_one({"signal_id": "sig_7"})["_id"] == "exec_7"
    with pytest.raises(DuplicateKeyError):
        records.insert_one(record(99, signal_id="sig_7"))
    collection_file = tmp_path / "trading" / "records"
    assert {row[0] for row in rows_on_disk(collection_file)} == {"signal_id", "status"}
    assert rows_on_disk(collection_file) == rows_from_documents(collection_file)
    client.close()


def test_given_a_legacy_key_format_file_then_litemongo_indexes_it_in_memory_as_before(tmp_path):
    plain = litemongo.connect(str(tmp_path), tz_aware=True)
    plain.trading.records.create_index("status")
    plain.trading.records.insert_many([record(n) for n in range(5)])
    plain.close()
    with raw(tmp_path / "trading" / "records") as connection, connection:
        connection.execute("DELETE FROM info WHERE key = 'key_format'")  # as litemongo < 0.2

    client = embedded(tmp_path)
    records = client.trading.records
    records.insert_one(record(5, status="FILLED"))
    assert [doc["_id"] for doc in records.find({"status": "FILLED"})] == ["exec_5"]
    assert records.count_documents({"status": "PENDING"}) == 5
    client.close()


# -- other connections ----------------------------------------------------------------------


def test_given_two_clients_on_one_directory_then_each_sees_the_others_writes_by_index(tmp_path):
    first, second = embedded(tmp_path), embedded(tmp_path)
    mine, theirs = first.trading.records, second.trading.records
    mine.create_index("signal_id", unique=True)
    mine.insert_one(record(1))
    assert theirs.find_one({"signal_id": "sig_1"})["_id"] == "exec_1"

    theirs.update_one({"signal_id": "sig_1"}, {"$set": {"status": "FILLED"}})
    theirs.create_index("status")
    assert mine.find_one({"status": "FILLED"})["_id"] == "exec_1"
    mine.insert_one(record(2))
    assert [doc["_id"] for doc in theirs.find({"status": "PENDING"})] == ["exec_2"]

    with pytest.raises(DuplicateKeyError):
        theirs.insert_one(record(3, signal_id="sig_2"))
    mine.delete_one({"_id": "exec_2"})
    assert theirs.find_one({"signal_id": "sig_2"}) is None
    assert theirs.count_documents({"status": "PENDING"}) == 0
    first.close()
    second.close()
