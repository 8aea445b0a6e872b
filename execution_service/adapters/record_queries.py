"""The execution records (`execution_confirmations`): claims, compare-and-set updates, leases
and take-overs, the outbox's published marks, and the reads of recovery, brackets, the risk gate
and operators. A mixin of `Store` (store.py), like position_queries.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from execution_service.adapters.store_errors import DuplicateSignal, translating, writing
from execution_service.domain.brackets import ExitRole
from execution_service.domain.orders import OPEN_STATUSES, EventKind
from execution_service.domain.records import parse_iso, published_confirmations, record_id

NON_TERMINAL = list(OPEN_STATUSES)
EXIT_ROLES = [str(role) for role in ExitRole]
UNPUBLISHED = {"outbox_pending": True}


class RecordQueries:
    """Needs `self.records`."""

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
