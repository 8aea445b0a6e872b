"""What the engines' speedups (engine_speedups.py) must not change, held to a real MongoDB's
behaviour on every backend: stored documents are the store's own (nothing the caller does
to a document it wrote or read changes them), an update that breaks a unique index leaves
nothing behind, datetimes come back tz-aware UTC at millisecond precision, and a value
BSON cannot hold is still refused."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest
from bson.tz_util import FixedOffset
from pymongo.errors import DuplicateKeyError

RECORD = {"_id": "r", "k": 1, "status": "NEW", "owner": {"id": "a", "host": "h"},
          "fills": [{"q": 1.0, "at": datetime.datetime(2026, 1, 2, 3, 4, 5, 6000,
                                                        tzinfo=datetime.UTC)}],
          "events": [{"n": 1}], "version": 0}


@pytest.fixture
def docs(store_handle):
    collection = store_handle.database["engine_copies"]
    collection.create_index("k", unique=True)
    return collection


def fresh_record() -> dict:
    return {**RECORD, "owner": dict(RECORD["owner"]),
            "fills": [dict(fill) for fill in RECORD["fills"]], "events": [{"n": 1}]}


def test_given_an_inserted_document_when_the_caller_changes_it_then_the_stored_one_has_not(docs):
    """Given a record inserted; when the caller then changes its nested dict and lists;
    then the stored record is still the one inserted."""
    record = fresh_record()
    docs.insert_one(record)
    record["owner"]["id"] = "changed"
    record["fills"][0]["q"] = 99.0
    record["events"].append({"n": 2})
    stored = docs.find_one({"_id": "r"})
    assert stored["owner"] == {"id": "a", "host": "h"}
    assert stored["fills"][0]["q"] == 1.0 and stored["events"] == [{"n": 1}]


def test_given_a_read_document_when_the_caller_changes_it_then_the_stored_one_has_not(docs):
    """Given a record read back (find_one, then find); when the reader changes what it got;
    then the next read still sees the stored record."""
    docs.insert_one(fresh_record())
    for read in (docs.find_one({"_id": "r"}), next(iter(docs.find({"k": 1})))):
        read["owner"]["id"] = "changed"
        read["events"].append({"n": 9})
        read["fills"][0]["q"] = 0.0
    stored = docs.find_one({"_id": "r"})
    assert stored["owner"]["id"] == "a" and stored["events"] == [{"n": 1}]
    assert stored["fills"][0]["q"] == 1.0


def test_given_a_set_of_lists_and_documents_when_the_caller_changes_them_then_stored_has_not(
        docs):
    """Given an update that sets a list of documents and a document, and pushes one; when
    the caller changes those values afterwards; then the stored record keeps what was set."""
    docs.insert_one(fresh_record())
    fills = [{"q": 2.0}]
    owner = {"id": "b"}
    event = {"n": 2}
    docs.update_one({"_id": "r"}, {"$set": {"fills": fills, "owner": owner},
                                   "$push": {"events": event}})
    fills[0]["q"] = 7.0
    fills.append({"q": 8.0})
    owner["id"] = "changed"
    event["n"] = 99
    stored = docs.find_one({"_id": "r"})
    assert stored["fills"] == [{"q": 2.0}] and stored["owner"] == {"id": "b"}
    assert stored["events"] == [{"n": 1}, {"n": 2}]


def test_given_an_update_breaking_a_unique_index_then_refused_and_the_document_unchanged(docs):
    """Given two records and a unique index on `k`; when an update gives the second the
    first's `k` along with other changes (set, push, inc); then DuplicateKeyError, and the
    second is exactly as it was (every change rolled back), found by its own `k` still."""
    docs.insert_one(fresh_record())
    second = {**fresh_record(), "_id": "s", "k": 2}
    docs.insert_one(second)
    before = docs.find_one({"_id": "s"})
    with pytest.raises(DuplicateKeyError):
        docs.update_one({"_id": "s"}, {"$set": {"k": 1, "status": "FILLED", "owner.id": "x"},
                                       "$push": {"events": {"n": 2}}, "$inc": {"version": 1}})
    assert docs.find_one({"_id": "s"}) == before
    assert [doc["_id"] for doc in docs.find({"k": 2})] == ["s"]
    assert docs.count_documents({"k": 1}) == 1


def test_given_datetimes_in_any_timezone_when_written_then_read_back_tz_aware_utc_in_ms(docs):
    """Given datetimes with tzinfos of several kinds (timezone, zoneinfo, bson's FixedOffset),
    inserted and set; when read back; then each is tz-aware, at UTC, the same instant
    truncated to the millisecond."""
    india = datetime.datetime(2026, 3, 4, 10, 0, 0, 123456,
                              tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
    london = datetime.datetime(2026, 7, 1, 9, 30, 0, 999999, tzinfo=ZoneInfo("Europe/London"))
    eastern = datetime.datetime(2026, 1, 1, 0, 0, 0, 500, tzinfo=FixedOffset(-300, "EST"))
    docs.insert_one({**fresh_record(), "india": india, "nested": {"at": [london]}})
    docs.update_one({"_id": "r"}, {"$set": {"eastern": eastern}})
    stored = docs.find_one({"_id": "r"})
    for read, written in ((stored["india"], india), (stored["nested"]["at"][0], london),
                          (stored["eastern"], eastern), (stored["fills"][0]["at"],
                                                         RECORD["fills"][0]["at"])):
        assert read.utcoffset() == datetime.timedelta(0)
        assert read == written.replace(microsecond=written.microsecond // 1000 * 1000)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1], ids=["over-int64", "under-int64"])
def test_given_a_value_bson_cannot_hold_when_set_then_refused_and_nothing_changed(docs, value):
    """Given a record; when a field is set to an integer beyond BSON's int64 (the set first,
    then an increment); then the update is refused (OverflowError, as the driver refuses it)
    and the record is unchanged. (mongomock keeps the fields set before a refused one: not
    asked here, it is the library's own behaviour with or without the speedups.)"""
    docs.insert_one(fresh_record())
    before = docs.find_one({"_id": "r"})
    with pytest.raises(OverflowError):
        docs.update_one({"_id": "r"}, {"$set": {"big": value}, "$inc": {"version": 1}})
    assert docs.find_one({"_id": "r"}) == before
