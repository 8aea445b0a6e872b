"""The mock paper broker's order ledger, `mock_broker_orders` (brokers.mock.MockLedger): one
document per order, `_id` derived from the signal, so an order is never placed twice."""

from __future__ import annotations

from execution_service.adapters.store_errors import inserted, translating

MOCK_LEDGER = "mock_broker_orders"


class MockLedgerStore:
    def __init__(self, database) -> None:
        self._orders = database[MOCK_LEDGER]

    @translating
    def add(self, doc: dict) -> bool:
        """False when an order with this `_id` is already there."""
        return inserted(self._orders, doc)

    @translating
    def get(self, order_id: str) -> dict | None:
        return self._orders.find_one({"_id": order_id})

    @translating
    def latest_priced(self, symbol: str) -> dict | None:
        """The newest order in `symbol` that carried a reference price."""
        return self._orders.find_one({"symbol": symbol, "reference_price": {"$ne": None}},
                                     sort=[("submitted_at", -1)])

    @translating
    def update_if(self, order_id: str, expected: dict, changes: dict) -> bool:
        """Set `changes` when the order still has the `expected` field values."""
        result = self._orders.update_one({"_id": order_id, **expected}, {"$set": changes})
        return result.modified_count == 1

    @translating
    def all(self) -> list[dict]:
        return list(self._orders.find())

    @translating
    def count(self, signal_id: str | None = None) -> int:
        return self._orders.count_documents({} if signal_id is None else
                                            {"signal_id": signal_id})

    @translating
    def ensure_indexes(self) -> None:
        self._orders.create_index([("symbol", 1), ("submitted_at", -1)])
