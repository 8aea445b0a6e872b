"""The store engine's speedups (engine_speedups.py) give what litemongo's vendored mongomock
gives, value for value: each fast function against the library's own (plain mongomock's
identical, unpatched copies where the vendored ones now call the fast ones), over generated
BSON values and the awkward ones (dict and list subclasses, SON, OrderedDict,
RawBSONDocument, tuples, bytes vs Binary, Timestamp, Regex, tz-aware datetimes with foreign
tzinfos, unknown types)."""

from __future__ import annotations

import copy
import datetime
import logging
from collections import OrderedDict
from zoneinfo import ZoneInfo

import bson
import litemongo
import mongomock.collection
import mongomock.helpers
import pytest
from bson import SON, Binary, Decimal128, Int64, ObjectId, Regex, Timestamp
from bson.raw_bson import RawBSONDocument
from bson.tz_util import FixedOffset, utc
from hypothesis import given, settings
from hypothesis import strategies as st
from litemongo._vendor.mongomock import codec_options, collection, helpers, indexing

from execution_service.adapters import engine_speedups
from execution_service.adapters.store import open_store

TZINFOS = [datetime.UTC, datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
           FixedOffset(-300, "EST"), utc, ZoneInfo("Europe/London")]


class MutableTz(datetime.tzinfo):
    """A tzinfo with state: a copy must not share it."""

    def __init__(self) -> None:
        self.hours = 2

    def utcoffset(self, dt):
        return datetime.timedelta(hours=self.hours)

    def dst(self, dt):
        return datetime.timedelta(0)


class Unknown:
    """A value of a type no fast path knows."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __eq__(self, other):
        return type(other) is Unknown and other.items == self.items


class ListSub(list):
    """A list subclass: the library rebuilds it as a plain list, deepcopy keeps its class."""


class DictSub(dict):
    """A dict subclass other than SON or OrderedDict."""


scalars = st.one_of(
    st.text(max_size=6), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False), st.booleans(), st.none(), st.binary(max_size=4),
    st.datetimes(timezones=st.none() | st.sampled_from(TZINFOS)),
    st.builds(ObjectId), st.builds(Int64, st.integers(-5, 5)),
    st.builds(Decimal128, st.sampled_from(["1.5", "-0", "1E+3"])),
    st.builds(Binary, st.binary(max_size=3), st.sampled_from([0, 5, 128])),
    st.builds(Timestamp, st.integers(1, 2**31), st.integers(0, 9)),
    st.builds(Regex, st.text(max_size=3)),
)
keys = st.text(max_size=4)
values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4),
    st.lists(children, max_size=3).map(tuple),
    st.dictionaries(keys, children, max_size=3).map(SON),
    st.dictionaries(keys, children, max_size=3).map(OrderedDict),
    st.lists(children, max_size=3).map(ListSub),
    st.dictionaries(keys, children, max_size=3).map(DictSub)), max_leaves=16)


def same(left, right) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 or True; a dict is not an
    OrderedDict), tz-aware datetimes at the same instant with the same kind of tzinfo."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, datetime.datetime):
        return left == right and type(left.tzinfo) is type(right.tzinfo)
    return left == right


def containers(value, found: set[int]) -> set[int]:
    """ids of every mutable container (and unknown object) inside `value`."""
    if isinstance(value, dict):
        found.add(id(value))
        for item in value.values():
            containers(item, found)
    elif isinstance(value, (list, tuple)):
        if isinstance(value, list):
            found.add(id(value))
        for item in value:
            containers(item, found)
    elif isinstance(value, Unknown):
        found.add(id(value))
        containers(value.items, found)
    return found


@pytest.fixture(scope="module", autouse=True)
def installed():
    assert engine_speedups.install()


@settings(max_examples=300, deadline=None)
@given(values)
def test_given_any_bson_value_when_deep_copied_then_equal_to_copy_deepcopy_and_shares_nothing(
        value):
    """Given any value the store can hold; when the fast deep copy copies it; then it is what
    copy.deepcopy gives, and no list or dict of the copy is one of the original's."""
    copied = engine_speedups.bson_deepcopy(value)
    assert same(copied, copy.deepcopy(value))
    assert not containers(copied, set()) & containers(value, set())


@settings(max_examples=300, deadline=None)
@given(values)
def test_given_any_bson_value_when_patched_made_aware_or_copied_out_then_as_the_library(value):
    """Given any value; when datetimes are patched on the way in, made tz-aware on the way
    out, or the value is copied out of a stored document; then each result is what plain
    mongomock's own (identical, unpatched) function gives."""
    assert same(helpers.patch_datetime_awareness_in_document(value),
                mongomock.helpers.patch_datetime_awareness_in_document(value))
    assert same(helpers.make_datetime_timezone_aware_in_document(value),
                mongomock.helpers.make_datetime_timezone_aware_in_document(value))
    assert same(collection._copy_field(value, dict),
                mongomock.collection._copy_field(value, dict))
    assert same(engine_speedups.bson_copy(value), copy.copy(value))


def test_given_unknown_types_and_a_mutable_tzinfo_when_deep_copied_then_copied_deeply():
    """Given an object of an unknown type holding a list, and a datetime whose tzinfo has
    state; when deep-copied; then each is a new object (copy.deepcopy's work), not shared."""
    unknown = Unknown([1, [2]])
    stamp = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=MutableTz())
    copied = engine_speedups.bson_deepcopy({"u": [unknown], "at": stamp})
    assert copied["u"][0] == unknown and copied["u"][0] is not unknown
    assert copied["u"][0].items[1] is not unknown.items[1]
    assert copied["at"] == stamp and copied["at"].tzinfo is not stamp.tzinfo


def test_given_raw_bson_and_son_when_patched_then_as_the_library():
    """Given a RawBSONDocument (a Mapping, not a dict) and a SON (a dict subclass); when
    patched on the way in; then the raw document is kept as it is and the SON becomes a dict
    with its datetimes patched, as the library does."""
    raw = RawBSONDocument(bson.encode({"a": 1}))
    son = SON([("b", datetime.datetime(2026, 1, 1, 12, 0, 0, 123456,
                                       tzinfo=datetime.UTC))])
    assert helpers.patch_datetime_awareness_in_document(raw) is raw
    patched = helpers.patch_datetime_awareness_in_document(son)
    assert type(patched) is dict
    assert patched == {"b": datetime.datetime(2026, 1, 1, 12, 0, 0, 123000)}


encodable_or_not = st.one_of(
    scalars, st.sampled_from([2**63, -(2**63) - 1, Int64(2**63), Int64(-(2**63) - 1), 2**63 - 1,
                              Int64(-(2**63)), "\udc80", "caf\u00e9", "a\0b", True]),
    st.lists(scalars, max_size=2), st.builds(Unknown, st.just([])))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=3), st.sampled_from(["a\0", "$x", "a.b"])), encodable_or_not,
       st.booleans(), st.sampled_from([None, 4, 99]))
def test_given_a_set_field_when_validated_then_fails_exactly_when_the_library_fails(
        key, value, tz_aware, uuid_representation):
    """Given one `$set` field (a key, a value that may or may not encode: ints and Int64s
    beyond int64, lone surrogates, NUL in the key, unknown types); when validated by
    `_bson_encode`; then it raises the library's exception type exactly when the library's
    own raises (also with codec options pymongo refuses: uuid_representation 99)."""
    options = codec_options.CodecOptions(tz_aware=tz_aware,
                                         uuid_representation=uuid_representation)
    outcomes = []
    for encode in (collection._bson_encode, engine_speedups._installed["_bson_encode"]):
        try:
            encode({key: value}, False, options)
            outcomes.append(None)
        except Exception as e:  # noqa: BLE001 - which exception is what is compared
            outcomes.append(type(e))
    assert outcomes[0] == outcomes[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(["OPEN", "FILLED", None]),
    "owner": st.fixed_dictionaries({}, optional={"id": st.sampled_from(["x", "y"])}),
    "tags": st.lists(st.sampled_from(["p", "q", 1]), max_size=2),
    "n": st.sampled_from([1, 1.0, 2, float("nan")])})), max_size=12))
def test_given_documents_rewritten_when_reindexed_then_the_index_holds_what_the_library_does(
        writes):
    """Given a sequence of writes of documents under three keys (indexed fields changing or
    not, arrays, NaN, missing fields); when each is re-indexed by the fast `add` and by the
    library's; then both indexes hold the same entries and answer the same candidates."""
    fast, library = indexing.CollectionIndexes(), indexing.CollectionIndexes()
    paths = ("status", "owner.id", "tags", "n")
    for index in (fast, library):
        index.set_paths(paths, ())
    for store_key, doc in writes:
        fast.add(store_key, doc)
        engine_speedups._installed["index_add"](library, store_key, doc)
    for path in paths:
        for name in ("_doc_keys", "_unkeyed"):
            assert getattr(fast._fields[path], name) == getattr(library._fields[path], name)
        assert ({k: v for k, v in fast._fields[path]._entries.items() if v}
                == library._fields[path]._entries)
    assert fast._docs == library._docs
    for query in ({"status": "OPEN"}, {"owner.id": "x"}, {"tags": "p"}, {"n": 1}):
        assert fast.candidates(query) == library.candidates(query)


def test_given_an_unknown_value_stored_in_memory_when_an_update_hits_a_duplicate_then_restored():
    """Given the in-memory engine holding a value of an unknown type (mongomock lets `$push`
    store one unvalidated) and a unique index; when an update of that document breaks the
    index; then DuplicateKeyError, and the document is back as it was, unknown value and
    all (the rollback snapshot is copy.deepcopy's for what the fast copy does not know)."""
    from pymongo.errors import DuplicateKeyError

    handle = open_store("mongomock://", "trading", None)
    try:
        docs = handle.database["docs"]
        docs.create_index("k", unique=True)
        docs.insert_many([{"_id": "a", "k": 1}, {"_id": "b", "k": 2, "n": 0}])
        docs.update_one({"_id": "b"}, {"$push": {"u": Unknown([1, [2]])}})
        with pytest.raises(DuplicateKeyError):
            docs.update_one({"_id": "b"}, {"$set": {"k": 1}, "$inc": {"n": 1},
                                           "$push": {"u": Unknown([3])}})
        assert docs.find_one({"_id": "b"}) == {"_id": "b", "k": 2, "n": 0,
                                               "u": [Unknown([1, [2]])]}
        assert docs.count_documents({"k": 1}) == 1
    finally:
        handle.close()


def test_given_another_litemongo_version_when_installing_then_nothing_replaced_and_one_debug_line(
        monkeypatch, caplog):
    """Given a litemongo version the speedups were not written for; when installed; then
    they report False, leave the library's functions as they are, and say so in one DEBUG
    line."""
    monkeypatch.setattr(engine_speedups, "_installed", {})
    monkeypatch.setattr(litemongo, "__version__", "0.3.0")
    before = (collection.copy, collection._bson_encode,
              helpers.patch_datetime_awareness_in_document, indexing.CollectionIndexes.add)
    with caplog.at_level(logging.DEBUG, logger=engine_speedups.__name__):
        assert engine_speedups.install() is False
    assert (collection.copy, collection._bson_encode,
            helpers.patch_datetime_awareness_in_document,
            indexing.CollectionIndexes.add) == before
    lines = [r for r in caplog.records if r.name == engine_speedups.__name__]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert "0.3.0" in lines[0].getMessage()


def test_given_speedups_installed_then_plain_mongomock_is_untouched():
    """Given the speedups installed; then the separately installed mongomock package still
    runs its own code (only litemongo's vendored copy is replaced)."""
    assert mongomock.collection.copy is copy
    assert mongomock.collection._copy_field.__module__ == "mongomock.collection"
    assert collection._copy_field.__module__ == engine_speedups.__name__


unique_writes = st.lists(st.tuples(
    st.sampled_from(["insert", "update", "upsert", "replace"]),
    st.sampled_from(["a", "b", "c", ObjectId("5f0000000000000000000001")]),
    st.fixed_dictionaries({}, optional={
        "k": st.sampled_from([1, 1.0, True, "1", None, [1], {"x": 1}]),
        "j": st.sampled_from(["p", "q"]),
        "live": st.booleans()})), max_size=10)


def run_unique_writes(docs, writes: list) -> tuple[list, list]:
    """Each write's outcome (its error's type, or None) and the documents left."""
    outcomes = []
    for kind, doc_id, fields in writes:
        try:
            if kind == "insert":
                docs.insert_one({"_id": doc_id, **fields})
            elif kind == "replace":
                docs.replace_one({"_id": doc_id}, fields)
            elif fields:
                docs.update_one({"_id": doc_id}, {"$set": fields}, upsert=kind == "upsert")
            outcomes.append(None)
        except Exception as e:  # noqa: BLE001 - the library's own errors (a TypeError too)
            outcomes.append(type(e))
    return outcomes, sorted(docs.find(), key=repr)


def unique_indexed(database):
    docs = database["docs"]
    docs.create_index("k", unique=True)
    docs.create_index([("j", 1), ("k", 1)], unique=True, sparse=True, name="j_k")
    docs.create_index("j", unique=True, name="live_j",
                      partialFilterExpression={"live": True})
    return docs


@settings(max_examples=60, deadline=None)
@given(unique_writes, st.sampled_from(["mongomock://", None]))
def test_given_writes_under_unique_indexes_when_checked_fast_then_as_the_library(writes, uri):
    """Given inserts, updates, upserts and replacements under unique indexes (plain, compound
    sparse, partial; keys of types that compare equal in Python but not in MongoDB, arrays and
    embedded documents), on either engine; when checked by the fast `_ensure_uniques` and by
    the library's; then every write fails or succeeds alike and the same documents remain."""
    import tempfile
    from pathlib import Path

    results = []
    for ensure_uniques in (collection.Collection._ensure_uniques,
                           engine_speedups._installed["ensure_uniques"]):
        with tempfile.TemporaryDirectory() as path:
            handle = open_store(uri, "trading", None if uri else Path(path))
            saved = collection.Collection._ensure_uniques
            collection.Collection._ensure_uniques = ensure_uniques
            try:
                results.append(run_unique_writes(unique_indexed(handle.database), writes))
            finally:
                collection.Collection._ensure_uniques = saved
                handle.close()
    assert results[0] == results[1]


def test_given_a_unique_key_no_other_document_has_when_written_then_no_document_read_back(
        tmp_path):
    """Given the embedded store and a unique index; when a document with a key of its own is
    inserted and updated; then no document is read back to check the key (the index's rows
    show it alone), and a duplicate key still fails."""
    from pymongo.errors import DuplicateKeyError

    handle = open_store(None, "trading", tmp_path)
    try:
        docs = handle.database["docs"]
        docs.create_index("k", unique=True)
        docs.insert_one({"_id": "a", "k": 1})
        seen = []
        docs._wrapped._store._connection.set_trace_callback(seen.append)
        docs.insert_one({"_id": "b", "k": 2})
        docs.update_one({"_id": "b"}, {"$set": {"n": 1}})
        reads = [sql for sql in seen if sql.startswith("SELECT _id, doc")]
        assert len(reads) == 1  # the update's own find of "b", not a uniqueness check
        with pytest.raises(DuplicateKeyError):
            docs.insert_one({"_id": "c", "k": 1})
        assert docs.count_documents({"k": 1}) == 1
    finally:
        handle.close()
