"""The audit store: one repository over pymongo's API, three backends chosen by MONGODB_URI.

`mongodb://…` a real MongoDB; `mongomock://` in memory (mongomock's engine, with the hash
indexes litemongo adds); unset (or `embedded://PATH`) the embedded on-disk store (litemongo:
one sqlite file per collection, its query index in the same file: embedded_store.py; each
write committed, or on the store thread a batch of calls per commit: embedded_batch.py).
Only single-document atomic writes are used: neither mongomock nor a standalone MongoDB
has transactions.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError
from pymongo.uri_parser import parse_uri

from execution_service.adapters import engine_speedups
from execution_service.adapters.api_key_store import ApiKeyQueries
from execution_service.adapters.broker_sessions_store import BrokerSessionQueries
from execution_service.adapters.mock_ledger_store import MockLedgerStore
from execution_service.adapters.position_queries import PositionQueries
from execution_service.adapters.record_queries import RecordQueries
from execution_service.adapters.server_settings import ServerSettings, server_client_options
from execution_service.adapters.store_errors import (
    DuplicateSignal,
    StoreHealth,
    translating,
    writing,
)
from execution_service.adapters.store_operations import OperatorQueries
from execution_service.errors import FatalConfigError
from execution_service.redaction import redact, redact_uri_passwords

if TYPE_CHECKING:
    from execution_service.adapters.embedded_batch import WriteBatches

logger = logging.getLogger(__name__)

RECORDS = "execution_confirmations"
SIGNALS = "signal_store"
POSITIONS = "positions"
POSITION_FILLS = "position_fills"
ACCOUNTS = "accounts"
SERVICE_STATUS = "service_status"

__all__ = ["DuplicateSignal", "Store", "StoreHandle", "open_store", "translating", "writing"]


@dataclass
class StoreHandle:
    client: Any
    database: Any
    description: str
    release: Callable[[], None] | None = None  # instead of client.close()
    batches: WriteBatches | None = None  # the embedded store's: the store thread commits in batches

    def close(self) -> None:
        if self.release is not None:
            self.release()
        else:
            self.client.close()


def open_store(uri: str | None, database: str, embedded_path: Path | None,
               server: ServerSettings | None = None) -> StoreHandle:
    """Connect to the backend MONGODB_URI names (see module docstring); `server` says how to
    talk to a real MongoDB (write concern, read preference, timeouts)."""
    if embedded_path is not None or (uri or "").startswith("mongomock://"):
        engine_speedups.install()  # both engines run litemongo's vendored mongomock
    if embedded_path is not None:
        import litemongo

        from execution_service.adapters.embedded_batch import WriteBatches
        from execution_service.adapters.embedded_store import ServerStore
        from execution_service.adapters.memory_store import serialized

        embedded_path.mkdir(parents=True, exist_ok=True)
        batches = WriteBatches(threading.RLock(), commit_last=(POSITIONS, RECORDS))
        client = litemongo.MongoClient(ServerStore(embedded_path, batches), tz_aware=True)

        def close() -> None:
            with batches.lock:  # not under a batch the store thread is finishing
                client.close()

        return StoreHandle(client, serialized(client[database], batches.lock),
                           f"embedded store at {embedded_path}", release=close,
                           batches=batches)
    if uri and uri.startswith("mongomock://"):
        import litemongo

        # litemongo's in-memory engine is mongomock with hash indexes: plain mongomock scans
        # every document for every query, 100 ms per update at 20,000 records.
        from litemongo import client as litemongo_client

        name = uuid.uuid4().hex
        client = litemongo.connect(f"mem://{name}?engine=memory", tz_aware=True)
        from execution_service.adapters.memory_store import serialized

        # its in-memory store has no close(): forgetting it is what frees it
        return StoreHandle(client, serialized(client[database]), "in-memory store (mongomock)",
                           release=lambda: litemongo_client._MEMORY_STORES.pop(name, None))
    check_mongodb_uri(uri)
    try:
        client = pymongo.MongoClient(uri, **server_client_options(server or ServerSettings()))
    except (PyMongoError, ValueError) as e:  # pymongo's messages may quote the URI
        raise FatalConfigError(f"configuration: MONGODB_URI: {redact(str(e))}") from None
    return StoreHandle(client, client[database], f"MongoDB {redact_uri_passwords(uri or '')}")


def check_mongodb_uri(uri: str | None) -> None:
    """The driver's own parser, without connecting (mongodb+srv:// needs DNS, so only its
    scheme is checked): a malformed URI is a configuration error, not a connection failure."""
    if not uri or not uri.startswith("mongodb://"):
        return
    try:
        parse_uri(uri)
    except (InvalidURI, ConfigurationError, ValueError) as e:
        raise FatalConfigError(redact(f"configuration: MONGODB_URI: malformed: {e} "
                                      f"(got {uri!r})")) from None


class Store(RecordQueries, PositionQueries, OperatorQueries, ApiKeyQueries, BrokerSessionQueries):
    """Every read and write the service makes (the port's one implementation, on every
    backend). One instance per process. Collections with a purpose of their own live in
    their own module: RecordQueries (the execution records), PositionQueries, OperatorQueries
    (halts, journey, risk reads), ApiKeyQueries, BrokerSessionQueries and `mock_ledger`."""

    def __init__(self, database) -> None:
        self.db = database
        self.records = database[RECORDS]
        self.signals = database[SIGNALS]
        self.positions = database[POSITIONS]
        self.position_fills = database[POSITION_FILLS]
        self.accounts = database[ACCOUNTS]
        self.service_status = database[SERVICE_STATUS]
        self.health = StoreHealth()
        self.mock_ledger = MockLedgerStore(database)
        self.on_server = isinstance(database, pymongo.database.Database)

    @writing
    def ensure_indexes(self) -> None:
        # Every index costs a row per document in the embedded store's files and an entry in
        # the in-memory store: only what the hot path, the lease sweep and the outbox's periodic
        # rescan query (the CLI's sorts do without).
        self.records.create_index("signal_id", unique=True)
        self.records.create_index("status")
        self.records.create_index("role")  # exits only: every fill asks for its position's
        self.records.create_index("outbox_pending")  # the outbox rescans every few seconds
        self.signals.create_index("signal_id", unique=True)
        self.positions.create_index([("account_id", 1), ("strategy_name", 1), ("symbol", 1),
                                     ("status", 1)])
        self._ensure_operator_indexes()
        self.ensure_api_key_indexes()
        if self.on_server:  # a server scans without them; they cost it little
            self._ensure_server_indexes()

    def _ensure_server_indexes(self) -> None:
        self.records.create_index([("received_at", -1), ("_id", -1)])
        self.positions.create_index([("status", 1), ("opened_at", -1)])
        self.service_status.create_index([("last_heartbeat", -1)])
        self.mock_ledger.ensure_indexes()

    # accounts -------------------------------------------------------------------------------

    @translating
    def get_account(self, account_id: str) -> dict | None:
        return self.accounts.find_one({"_id": account_id})

    @translating
    def list_accounts(self) -> list[dict]:
        return list(self.accounts.find().sort("_id", 1))

    @writing
    def upsert_account(self, account_id: str, fields: dict, at: datetime,
                       unset: list[str] | tuple = ()) -> dict:
        update: dict = {"$set": {**fields, "updated_at": at}, "$setOnInsert": {"created_at": at}}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        return self.accounts.find_one_and_update({"_id": account_id}, update, upsert=True,
                                                 return_document=ReturnDocument.AFTER)

    @translating
    def count_accounts(self) -> int:
        return self.accounts.count_documents({})

    # signal_store ---------------------------------------------------------------------------

    @writing
    def update_signal(self, signal_id: str, fields: dict, at: datetime) -> None:
        self.signals.update_one({"signal_id": signal_id},
                                {"$set": {**fields, "execution_updated_at": at},
                                 "$setOnInsert": {"created_by": "execution_service"}},
                                upsert=True)

    # service status -------------------------------------------------------------------------

    @writing
    def write_status(self, doc: dict) -> None:
        self.service_status.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    @translating
    def read_statuses(self) -> list[dict]:
        return list(self.service_status.find().sort("last_heartbeat", -1))
