"""Reconciliation is a pure comparison: each kind of mismatch, and none when all agree."""

from __future__ import annotations

from datetime import UTC, datetime

from brokers.base import BrokerOrder, BrokerStatus, Fill
from execution_service.service.reconcile import compare

AT = datetime(2026, 1, 5, tzinfo=UTC)


def order(signal_id: str, status=BrokerStatus.FILLED, filled: float = 10) -> BrokerOrder:
    fills = (Fill(f"{signal_id}-F1", filled, 100.0, AT),) if filled else ()
    return BrokerOrder(f"ord_{signal_id}", status, 10, signal_id, fills)


def record(signal_id: str, status: str = "FILLED", filled: float = 10, side: str = "BUY",
           order_id: str | None = "auto") -> dict:
    return {"signal_id": signal_id, "status": status, "filled_quantity": filled, "side": side,
            "order_id": f"ord_{signal_id}" if order_id == "auto" else order_id,
            "account_id": "acc", "strategy_name": "S", "symbol": "SPY"}


def position(quantity: float, side: str = "LONG") -> dict:
    return {"account_id": "acc", "strategy_name": "S", "symbol": "SPY", "side": side,
            "quantity": quantity}


def test_given_everything_agrees_then_no_mismatch():
    report = compare([order("a"), order("b")], [record("a"), record("b")], [position(20)])
    assert report == {"broker_orders": 2, "records": 2, "mismatches": []}


def test_given_order_the_store_lacks_then_reported():
    kinds = [m["kind"] for m in compare([order("a")], [], [])["mismatches"]]
    assert kinds == ["order_not_in_store"]


def test_given_record_the_broker_lacks_then_reported():
    report = compare([], [record("a")], [position(0.0)])
    assert [m["kind"] for m in report["mismatches"]] == ["record_unknown_to_broker"]


def test_given_quantity_and_status_differ_then_both_reported():
    report = compare([order("a", BrokerStatus.WORKING, filled=4)], [record("a")], [position(4)])
    assert {m["kind"] for m in report["mismatches"]} == {"filled_quantity_differs",
                                                         "status_differs"}


def test_given_position_differs_then_reported_with_both_sides():
    report = compare([order("a")], [record("a")], [position(7)])
    assert report["mismatches"] == [{"kind": "position_differs", "account_id": "acc",
                                     "strategy_name": "S", "symbol": "SPY", "broker": 10.0,
                                     "store": 7.0}]


def test_given_rejected_at_broker_and_in_store_then_agreed_without_order_id():
    report = compare([order("a", BrokerStatus.REJECTED, filled=0)],
                     [record("a", "REJECTED", 0, order_id=None)], [])
    assert report["mismatches"] == []


def test_given_sell_then_position_sign_follows_side():
    report = compare([order("a")], [record("a", side="SELL")], [position(10, "SHORT")])
    assert report["mismatches"] == []
