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
from pymongo.errors import ConfigurationError, DuplicateKeyError, InvalidURI, PyMongoError
from pymongo.uri_parser import parse_uri

from execution_service.adapters import engine_speedups
from execution_service.adapters.api_key_store import ApiKeyQueries
from execution_service.adapters.broker_sessions_store import BrokerSessionQueries
from execution_service.adapters.mock_ledger_store import MockLedgerStore
from execution_service.adapters.position_queries import PositionQueries
from execution_service.adapters.server_settings import ServerSettings, server_client_options
from execution_service.adapters.store_errors import (
    DuplicateSignal,
    StoreHealth,
    translating,
    writing,
)
from execution_service.adapters.store_operations import OperatorQueries
from execution_service.domain.brackets import ExitRole
from execution_service.domain.orders import OPEN_STATUSES, EventKind
from execution_service.domain.records import parse_iso, published_confirmations, record_id
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
NON_TERMINAL = list(OPEN_STATUSES)
EXIT_ROLES = [str(role) for role in ExitRole]
UNPUBLISHED = {"outbox_pending": True}

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


class Store(PositionQueries, OperatorQueries, ApiKeyQueries, BrokerSessionQueries):
    """Every read and write the service makes (the port's one implementation, on every
    backend). One instance per process. Collections with a purpose of their own live in
    their own module: OperatorQueries (halts, journey, risk reads) and `mock_ledger`."""

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

    # execution records ----------------------------------------------------------------------

    @writing
    def insert_record(self, doc: dict) -> None:
        try:
            self.records.insert_one(doc)
        except DuplicateKeyError as e:
            raise DuplicateSignal(doc["signal_id"]) from e

    @translating
    def get_record(self, signal_id: str) -> dict | None:
        return self.records.find_one({"_id": record_id(signal_id)})

    @writing
    def update_record(self, doc: dict, fields: dict, events: list[dict],
                      confirmations: list[dict]) -> dict | None:
        """Compare-and-set on `version`: the record as now stored, or None when someone else
        changed it first. (Built here rather than read back: the record only grows.) Only the
        fields that differ from `doc` are sent: `doc` is that version as stored, and the
        engines encode, copy and re-check every field they are given."""
        update: dict[str, Any] = {"$inc": {"version": 1}}
        changed = {name: value for name, value in fields.items() if not _same(doc, name, value)}
        if changed:
            update["$set"] = changed
        pushes = {name: {"$each": items} for name, items in
                  (("events", events), ("confirmations", confirmations)) if items}
        if pushes:
            update["$push"] = pushes
        result = self.records.update_one({"_id": doc["_id"], "version": doc["version"]}, update)
        if result.modified_count != 1:
            return None
        return {**doc, **fields, "version": doc["version"] + 1,
                "events": [*doc.get("events", []), *events],
                "confirmations": [*doc.get("confirmations", []), *confirmations]}

    @writing
    def renew_leases(self, signal_ids: list[str], owner_id: str, until: datetime) -> None:
        self.records.update_many({"_id": {"$in": [record_id(s) for s in signal_ids]},
                                  "owner.id": owner_id}, {"$set": {"lease_expires_at": until}})

    @translating
    def owned_elsewhere(self, signal_ids: list[str], owner_id: str) -> list[str]:
        return [doc["signal_id"] for doc in self.records.find(
            {"_id": {"$in": [record_id(s) for s in signal_ids]},
             "owner.id": {"$nin": [owner_id, None]}}, {"signal_id": 1})]

    @translating
    def cancels_asked(self, signal_ids: list[str]) -> list[str]:
        """Those of these records with a cancel asked for (by any process)."""
        return [doc["signal_id"] for doc in self.records.find(
            {"_id": {"$in": [record_id(s) for s in signal_ids]},
             "cancel_requested_reason": {"$ne": None}}, {"signal_id": 1})]

    @writing
    def take_over(self, doc: dict, owner: dict, until: datetime, at: datetime) -> dict | None:
        """Become the record's owner; bumps `version` so the old owner's writes fail."""
        event = {"status": doc["status"], "event": str(EventKind.TAKEN_OVER), "at": at,
                 "owner": owner["id"], "previous_owner": (doc.get("owner") or {}).get("id")}
        return self.records.find_one_and_update(
            {"_id": doc["_id"], "version": doc["version"]},
            {"$set": {"owner": owner, "lease_expires_at": until}, "$inc": {"version": 1},
             "$push": {"events": event}}, return_document=ReturnDocument.AFTER)

    @writing
    def mark_published(self, marks: dict[str, int]) -> None:
        """Everything up to its sequence is published, for each signal in `marks`: one update
        for all of them that published their latest confirmation (the outbox clears), a second
        only when some has a newer one (only the mark moves, it stays pending)."""
        by_sequence: dict[int, list[str]] = {}
        for signal_id, sequence in marks.items():
            by_sequence.setdefault(sequence, []).append(record_id(signal_id))
        for sequence, ids in by_sequence.items():
            latest = self.records.update_many(
                {"_id": {"$in": ids}, "confirmation_sequence": {"$lte": sequence}},
                {"$max": {"published_sequence": sequence}, "$set": {"outbox_pending": False}})
            if latest.matched_count < len(ids):
                self.records.update_many(
                    {"_id": {"$in": ids}, "confirmation_sequence": {"$gt": sequence}},
                    {"$max": {"published_sequence": sequence}})

    @translating
    def records_with_unpublished(self) -> list[dict]:
        return list(self.records.find(UNPUBLISHED).sort("received_at", 1))

    @translating
    def open_records(self) -> list[dict]:
        return list(self.records.find({"status": {"$in": NON_TERMINAL}}).sort("received_at", 1))

    @translating
    def open_signal_ids_owned_by(self, owner_id: str) -> list[str]:
        return [doc["signal_id"] for doc in self.records.find(
            {"status": {"$in": NON_TERMINAL}, "owner.id": owner_id}, {"signal_id": 1})]

    @translating
    def open_exits(self, key: dict) -> list[dict]:
        """The protective exits (§12) still working on one position. Asked on every fill: the
        `role` index comes first, so without exits the answer costs no scan of the open orders
        (litemongo plans with each indexed condition in turn and stops at an empty one)."""
        return list(self.records.find(open_exits_filter(key)))

    @translating
    def unsettled_brackets(self) -> list[dict]:
        """Entries with protective exits (§12) that may still need work (records claimed
        before exits existed carry no `exits_settled`, and are left alone)."""
        return list(self.records.find({"exits_settled": False, "filled_quantity": {"$gt": 0}}))

    @translating
    def working_orders(self, account_id: str, symbol: str) -> list[dict]:
        """The account's orders in this symbol not yet done (every replica's, every strategy's):
        what a position limit must count besides the position."""
        return list(self.records.find(
            {"status": {"$in": NON_TERMINAL}, "account_id": account_id, "symbol": symbol},
            {"side": 1, "quantity": 1, "filled_quantity": 1, "limit_price": 1, "stop_price": 1,
             "reference_price": 1, "signal_id": 1, "role": 1}))

    @translating
    def recent_records(self, limit: int, **equal: str | None) -> list[dict]:
        """Newest first; `equal` filters on fields (status=, account_id=) when not None."""
        query = {name: value for name, value in equal.items() if value is not None}
        cursor = self.records.find(query).sort([("received_at", -1), ("_id", -1)])
        return list(cursor.limit(limit) if limit else cursor)

    @translating
    def recent_confirmations(self, limit: int) -> list[dict]:
        """Confirmations of every record, newest first, each with `published`."""
        rows = self.records.find({"confirmation_sequence": {"$gt": 0}},
                                 {"confirmations": 1, "published_sequence": 1})
        found = [item for row in rows for item in published_confirmations(row)]
        found.sort(key=lambda item: (parse_iso(item["at"]), item["sequence"]), reverse=True)
        return found[:limit] if limit else found

    @translating
    def counts_by_status(self) -> dict[str, int]:
        rows = self.records.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        return {row["_id"]: row["n"] for row in rows}

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


def _same(doc: dict, name: str, value: Any) -> bool:
    """Whether `doc` already holds `value` at `name` (the same type too: 1 is not 1.0 in BSON)."""
    if name not in doc:
        return False
    held = doc[name]
    return type(held) is type(value) and held == value


def open_exits_filter(key: dict) -> dict:
    """The working exits of one position; `role` first (see Store.open_exits)."""
    return {"role": {"$in": EXIT_ROLES}, **key, "parent_signal_id": {"$ne": None},
            "status": {"$in": NON_TERMINAL}}
