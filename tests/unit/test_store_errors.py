"""One failure contract: every backend's errors become StoreUnavailable (an outage: wait) or
StoreRejected (a refusal: never an outage); an outage is logged once, with its length."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from pymongo.errors import (
    AutoReconnect,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)

from execution_service.adapters.store import Store, check_mongodb_uri, open_store
from execution_service.adapters.store_errors import (
    DuplicateSignal,
    StoreHealth,
    StoreRejected,
    store_error,
)
from execution_service.errors import FatalConfigError, StoreUnavailable

OUTAGES = [
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("database is locked"),
    sqlite3.OperationalError("disk I/O error"),
    sqlite3.DatabaseError("database disk image is malformed"),
    ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused"),
    AutoReconnect("connection closed"),
    NotPrimaryError("not primary"),
    OperationFailure("No space left on device", code=14031),
    OSError(28, "No space left on device"),
]
REFUSALS = [
    WriteError("can't use an array for _id", 53),
    OperationFailure("Updating the path 'x' would create a conflict", code=40),
    WriteError("mongomock refuses", None),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: f"{type(e).__name__}:{e}")
def test_given_a_backend_outage_error_then_store_unavailable(error):
    assert isinstance(store_error(error), StoreUnavailable)


@pytest.mark.parametrize("error", REFUSALS, ids=lambda e: f"{type(e).__name__}:{e}")
def test_given_a_refusal_then_store_rejected_not_an_outage(error):
    assert isinstance(store_error(error), StoreRejected)


def test_given_errors_that_are_not_the_stores_then_left_alone():
    assert store_error(ValueError("a bug")) is None
    assert store_error(sqlite3.ProgrammingError("a bug")) is None


class SqliteFaults:
    """A collection whose calls raise sqlite's own error while `error` is set."""

    def __init__(self, collection) -> None:
        self._collection = collection
        self.error: Exception | None = None

    def __getattr__(self, name):
        attribute = getattr(self._collection, name)

        def call(*args, **kwargs):
            if self.error is not None:
                raise self.error
            return attribute(*args, **kwargs)

        return call if callable(attribute) else attribute


def test_given_embedded_store_disk_full_then_one_outage_logged_with_its_length(tmp_path,
                                                                             caplog):
    handle = open_store(None, "trading", tmp_path / "data")
    store = Store(handle.database)
    store.health.announce = True
    faulty = SqliteFaults(store.service_status)
    store.service_status = faulty
    caplog.set_level(logging.INFO)
    try:
        faulty.error = sqlite3.OperationalError("database or disk is full")
        for _ in range(20):
            with pytest.raises(StoreUnavailable, match="database or disk is full"):
                store.write_status({"_id": "beat"})
        assert store.health.down
        faulty.error = None
        assert store.read_statuses() == []  # a read does not end an outage
        assert store.health.down
        store.write_status({"_id": "beat"})
        assert not store.health.down and store.health.outages == 1
    finally:
        handle.close()
    lines = [r for r in caplog.records if r.name.endswith("store_errors")]
    assert [r.levelname for r in lines] == ["ERROR", "WARNING"]
    assert "Store outage over after" in lines[1].getMessage()
    assert "20 store calls failed" in lines[1].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_given_duplicate_key_then_passed_through_untouched():
    handle = open_store("mongomock://", "trading", None)
    store = Store(handle.database)
    store.mock_ledger.add({"_id": "MOCK-1", "signal_id": "s1"})
    assert store.mock_ledger.add({"_id": "MOCK-1", "signal_id": "s1"}) is False
    store.insert_record({"_id": "exec_s1", "signal_id": "s1", "version": 1})
    with pytest.raises(DuplicateSignal):
        store.insert_record({"_id": "exec_s1", "signal_id": "s1", "version": 1})
    handle.close()


def test_given_a_clock_then_outage_length_measured_by_it():
    now = [100.0]
    health = StoreHealth(clock=lambda: now[0])
    health.failed(StoreUnavailable("down"))
    now[0] = 130.5
    assert health.down_for() == 30.5
    health.wrote()
    assert health.last_outage_seconds == 30.5 and not health.down


MALFORMED_URIS = ["mongodb://trader:s3cret-pw@", "mongodb://trader:s3cret-pw@db.example:notaport/",
                  "mongodb://trader:s3cret-pw@db.example/?w=sometimes&journal=maybe"]


@pytest.mark.parametrize("uri", MALFORMED_URIS)
def test_given_a_malformed_mongodb_uri_when_opened_then_one_config_line_and_no_password(uri):
    """Given a URI the driver's parser refuses, when the store is opened, then a
    FatalConfigError naming MONGODB_URI as malformed, without the password, and no client."""
    with pytest.raises(FatalConfigError) as raised:
        open_store(uri, "trading", None)
    text = str(raised.value)
    assert text.startswith("configuration: MONGODB_URI: malformed: "), text
    assert "s3cret-pw" not in text and "\n" not in text


def test_given_a_wellformed_uri_when_checked_then_accepted_without_connecting():
    """Given well-formed URIs (an srv one needs DNS, so only its scheme is checked), when
    checked, then nothing is raised and nothing is contacted (port 1 would refuse)."""
    for uri in ("mongodb://127.0.0.1:1/?directConnection=true", "mongodb+srv://x.example/db",
                None, "mongomock://"):
        check_mongodb_uri(uri)
