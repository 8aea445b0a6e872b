"""Reconciliation: the brokers' orders and fills against the store's records and positions.

`compare` is pure; `reconcile` gathers the inputs.
"""

from __future__ import annotations

from collections import defaultdict

from brokers.base import BrokerOrder, BrokerStatus
from execution_service.domain.orders import WORKING, OrderStatus

EPSILON = 1e-6
S = OrderStatus
# the record statuses that agree with each broker status
SAME_STATUS = {
    BrokerStatus.FILLED: {S.FILLED}, BrokerStatus.CANCELLED: {S.CANCELLED},
    BrokerStatus.REJECTED: {S.REJECTED},
    BrokerStatus.WORKING: {*WORKING, S.PENDING_CANCEL},
    BrokerStatus.PENDING: {S.PENDING, S.SUBMITTED},
}


def compare(broker_orders: list[BrokerOrder], records: list[dict],
            positions: list[dict]) -> dict:
    by_signal = {r["signal_id"]: r for r in records}
    mismatches: list[dict] = []
    seen: set[str] = set()
    for order in broker_orders:
        record = by_signal.get(order.signal_id or "")
        if record is None:
            mismatches.append({"kind": "order_not_in_store", "order_id": order.order_id,
                               "signal_id": order.signal_id, "broker_status": str(order.status)})
            continue
        seen.add(record["signal_id"])
        mismatches += _order_differences(order, record)
    for record in records:
        if record.get("order_id") and record["signal_id"] not in seen:
            mismatches.append({"kind": "record_unknown_to_broker", "signal_id":
                               record["signal_id"], "order_id": record["order_id"],
                               "status": record["status"]})
    mismatches += _position_differences(broker_orders, by_signal, positions)
    sent = [r for r in records if r.get("order_id") or r["signal_id"] in seen]
    return {"broker_orders": len(broker_orders), "records": len(sent),
            "mismatches": mismatches}


def _order_differences(order: BrokerOrder, record: dict) -> list[dict]:
    base = {"signal_id": record["signal_id"], "order_id": order.order_id}
    if record["status"] == S.REJECTED and order.status == BrokerStatus.REJECTED:
        return []
    found = []
    if abs(order.filled_quantity - (record.get("filled_quantity") or 0.0)) > EPSILON:
        found.append({**base, "kind": "filled_quantity_differs",
                      "broker": order.filled_quantity, "store": record.get("filled_quantity")})
    if record["status"] not in SAME_STATUS[BrokerStatus(order.status)]:
        found.append({**base, "kind": "status_differs", "broker": str(order.status),
                      "store": record["status"]})
    return found


def _position_differences(broker_orders: list[BrokerOrder], by_signal: dict,
                          positions: list[dict]) -> list[dict]:
    from_broker: dict[tuple, float] = defaultdict(float)
    for order in broker_orders:
        record = by_signal.get(order.signal_id or "")
        if record is None:
            continue
        sign = 1.0 if record.get("side") == "BUY" else -1.0
        key = (record["account_id"], record["strategy_name"], record["symbol"])
        from_broker[key] += sign * order.filled_quantity
    from_store: dict[tuple, float] = defaultdict(float)
    for position in positions:
        sign = 1.0 if position["side"] == "LONG" else -1.0
        key = (position["account_id"], position["strategy_name"], position["symbol"])
        from_store[key] += sign * position["quantity"]
    return [{"kind": "position_differs", "account_id": key[0], "strategy_name": key[1],
             "symbol": key[2], "broker": round(from_broker.get(key, 0.0), 9),
             "store": round(from_store.get(key, 0.0), 9)}
            for key in sorted(set(from_broker) | set(from_store))
            if abs(from_broker.get(key, 0.0) - from_store.get(key, 0.0)) > EPSILON]


async def reconcile(store, brokers) -> dict:
    """Every broker the registered accounts use, against the whole store."""
    names = sorted({brokers.broker_name_for(a) for a in store.list_accounts()})
    broker_orders: list[BrokerOrder] = []
    for name in names:
        broker = brokers.create_broker(name)
        if not broker.is_connected:
            await broker.connect()
        broker_orders += await broker.list_orders()
    records = store.recent_records(0)
    report = compare(broker_orders, records, store.list_positions("OPEN"))
    report["brokers"] = names
    return report
