"""The store's positions and their fill ledger (SPEC §5; service/positions.py says how a fill
moves a position exactly once). A mixin of `Store` (store.py), like store_operations.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo.errors import DuplicateKeyError

from execution_service.adapters.store_errors import inserted, translating, writing
from execution_service.domain.positions import ORDER_IDS_KEPT


class PositionQueries:
    """Needs `self.positions`, `self.position_fills` and `self.health`."""

    @translating
    def open_position(self, key: dict) -> dict | None:
        return self.positions.find_one({**key, "status": "OPEN"})

    @translating
    def position_with_fill(self, key: dict, fill_key: str) -> dict | None:
        return self.positions.find_one({**key, "fill_keys": fill_key})

    @translating
    def position_opened_from(self, position_id: str) -> dict | None:
        return self.positions.find_one({"opened_from": position_id})

    @translating
    def count_positions(self, key: dict) -> int:
        return self.positions.count_documents(key)

    @writing
    def insert_position(self, doc: dict) -> bool:
        return inserted(self.positions, doc)

    @translating
    def get_position(self, position_id: str) -> dict | None:
        return self.positions.find_one({"_id": position_id})

    @writing
    def update_position(self, doc: dict, fields: dict, fill_key: str,
                        kept_keys: list[str] | None = None, order_id: str | None = None) -> bool:
        """Compare-and-set on `version`, refused when the fill is already on it: `fields` set,
        `fill_keys` becomes `kept_keys` (default: all it holds) and this fill's key, and
        `order_id` is appended to `order_ids` (the last ORDER_IDS_KEPT) unless there already.
        The list is never sent whole: the engines encode and copy every value they are given."""
        kept = doc["fill_keys"] if kept_keys is None else kept_keys
        update: dict[str, Any] = {"$set": {**fields, "fill_keys": [*kept, fill_key]},
                                  "$inc": {"version": 1}}
        if order_id and order_id not in doc.get("order_ids", ()):
            update["$push"] = {"order_ids": {"$each": [order_id], "$slice": -ORDER_IDS_KEPT}}
        result = self.positions.update_one(
            {"_id": doc["_id"], "version": doc["version"], "fill_keys": {"$ne": fill_key}},
            update)
        return result.modified_count == 1

    @translating
    def claim_fill(self, fill: dict) -> dict | None:
        """Enter a fill in the ledger before it moves a position: None when it is new, else
        the ledger's earlier entry for it (`applied` once its move is known done)."""
        try:
            self.position_fills.insert_one({**fill, "applied": False})
            return None
        except DuplicateKeyError:
            return self.position_fills.find_one({"_id": fill["_id"]}) or {"applied": False}

    @translating
    def fill_applied(self, fill_key: str) -> bool:
        """Whether the ledger says this fill's move is done."""
        entry = self.position_fills.find_one({"_id": fill_key}, {"applied": 1})
        return bool(entry and entry.get("applied"))

    @writing
    def mark_fills_applied(self, fill_keys: list[str], position_id: str, key: dict) -> None:
        """The moves of these fills are done: their keys are on position `position_id`. A key
        with no ledger entry (a fill from before the ledger) gets one, entered applied."""
        marked = {"applied": True, "position_id": position_id}
        result = self.position_fills.update_many({"_id": {"$in": fill_keys}}, {"$set": marked})
        if result.matched_count == len(fill_keys):
            return
        entered = {doc["_id"] for doc in self.position_fills.find({"_id": {"$in": fill_keys}},
                                                                  {"_id": 1})}
        for fill_key in fill_keys:
            if fill_key in entered:
                continue
            try:
                self.position_fills.insert_one({"_id": fill_key, **key, **marked})
            except DuplicateKeyError:  # claimed meanwhile: it is on the position all the same
                self.position_fills.update_one({"_id": fill_key}, {"$set": marked})

    def when_written(self, callback: Callable[[], None]) -> None:
        """`callback` once this call's writes are committed: now, unless the embedded store
        commits them with its batch (then after it; never when that commit fails)."""
        defer = self.health.defer
        if defer is None or not defer(callback):
            callback()

    @translating
    def fill_entries(self, fill_keys: list[str]) -> list[dict]:
        """The ledger's entries of these fills (those it has)."""
        return list(self.position_fills.find({"_id": {"$in": fill_keys}}))

    @translating
    def list_positions(self, status: str | None = "OPEN") -> list[dict]:
        query = {} if status is None else {"status": status}
        return list(self.positions.find(query).sort([("opened_at", -1)]))
