"""The store's reads and writes for operators and the risk gate: halts, account edits, a
signal's journey, risk counts. A mixin of `Store` (store.py), kept apart so store.py stays one
screenful per collection; a new collection gets its own mixin module like this one.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument

from execution_service.adapters.store_errors import translating, writing

HALTS = "trading_halts"
LIFTED_HALTS = "trading_halts_lifted"  # halts lifted, with who lifted them (issue 21)


class OperatorQueries:
    """Needs `self.db`, `self.records`, `self.signals`, `self.positions`, `self.accounts`."""

    # trading_halts: one document per scope (see service/risk.py) ----------------------------

    @writing
    def save_halt(self, doc: dict) -> None:
        self.db[HALTS].replace_one({"_id": doc["_id"]}, doc, upsert=True)

    @writing
    def delete_halt(self, halt_id: str) -> dict | None:
        """The halt that was removed, None if there was none."""
        return self.db[HALTS].find_one_and_delete({"_id": halt_id})

    @translating
    def list_halts(self) -> list[dict]:
        return list(self.db[HALTS].find().sort("_id", 1))

    @translating
    def save_lifted_halt(self, doc: dict) -> None:
        self.db[LIFTED_HALTS].replace_one({"_id": doc["_id"]}, doc, upsert=True)

    @translating
    def lifted_halts(self) -> list[dict]:
        return list(self.db[LIFTED_HALTS].find().sort("lifted_at", 1))

    # accounts -------------------------------------------------------------------------------

    @writing
    def update_account_fields(self, account_id: str, fields: dict, clears: list[str],
                              at: datetime) -> dict | None:
        """Set `fields` and remove `clears` in one write; None when no such account."""
        update: dict = {"$set": {**fields, "updated_at": at}}
        if clears:
            update["$unset"] = {name: "" for name in clears}
        return self.accounts.find_one_and_update({"_id": account_id}, update,
                                                 return_document=ReturnDocument.AFTER)

    # a signal's journey ---------------------------------------------------------------------

    @translating
    def get_signal(self, signal_id: str) -> dict | None:
        return self.signals.find_one({"signal_id": signal_id})

    @translating
    def positions_touched(self, fill_keys: list[str], order_id: str | None,
                          position_ids: list[str] | tuple = ()) -> list[dict]:
        """Positions holding one of these fills, naming this order or among these ids,
        oldest first."""
        clauses: list[dict] = [{"fill_keys": {"$in": fill_keys}}] if fill_keys else []
        if order_id:
            clauses.append({"order_ids": order_id})
        if position_ids:
            clauses.append({"_id": {"$in": list(position_ids)}})
        if not clauses:
            return []
        return list(self.positions.find({"$or": clauses}).sort([("opened_at", 1), ("_id", 1)]))

    # the risk gate's reads ------------------------------------------------------------------

    @translating
    def open_positions_for(self, account_id: str, symbol: str) -> list[dict]:
        """Every strategy's OPEN position in this account and symbol."""
        return list(self.positions.find({"account_id": account_id, "symbol": symbol,
                                         "status": "OPEN"}))

    @translating
    def count_orders_since(self, account_id: str, since: datetime) -> int:
        """Records received after `since`, rejections and protective exits (§12) excepted."""
        return self.records.count_documents({"account_id": account_id,
                                             "received_at": {"$gt": since},
                                             "status": {"$ne": "REJECTED"},
                                             "parent_signal_id": None})

    def _ensure_operator_indexes(self) -> None:
        self.records.create_index([("account_id", 1), ("received_at", -1)])
        self.positions.create_index([("account_id", 1), ("symbol", 1), ("status", 1)])
