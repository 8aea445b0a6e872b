"""The pure Kite GTT translation of protective exits (brokers.zerodha_gtt)."""

from __future__ import annotations

import pytest

from brokers.base import BrokerStatus, OrderRequest
from brokers.zerodha_gtt import (
    gtt_arguments,
    leg,
    leg_snapshot,
    legs_of,
    matching_gtt,
    parse_leg_order_id,
)
from execution_service.domain.brackets import ExitRole
from execution_service.errors import OrderRejected

SHORT_EXIT = {"signal_id": "s:SL", "account_id": "acc", "symbol": "INFY", "side": "BUY",
              "quantity": 5, "time_in_force": "GTC", "product": "NRML"}


def short_legs() -> list[dict]:
    stop = OrderRequest(order_type="STOP", stop_price=1550.0, **SHORT_EXIT)
    take = OrderRequest(order_type="LIMIT", limit_price=1400.0, **SHORT_EXIT)
    return [leg(stop, ExitRole.STOP_LOSS, "NSE", "INFY", "NRML", 5),
            leg(take, ExitRole.TAKE_PROFIT, "NSE", "INFY", "NRML", 5)]


def as_gtt(legs: list[dict], status: str = "active") -> dict:
    arguments = gtt_arguments(legs, 1500.0)
    return {"id": 7, "status": status, "type": arguments["trigger_type"],
            "condition": {"exchange": "NSE", "tradingsymbol": "INFY", "last_price": 1500.0,
                          "trigger_values": arguments["trigger_values"]},
            "orders": [{**order, "result": None} for order in arguments["orders"]]}


def test_given_short_position_exits_then_buy_legs_ordered_by_trigger_and_told_apart_by_price():
    """Given BUY exits of a short (stop 1550 above, target 1400 below), then the GTT lists
    the target first (triggers ascending), the stop's limit sits 1% above its trigger, and
    each leg is recognised again by its price alone."""
    arguments = gtt_arguments(short_legs(), 1500.0)
    assert arguments["trigger_type"] == "two-leg"
    assert arguments["trigger_values"] == [1400.0, 1550.0]
    assert [order["price"] for order in arguments["orders"]] == [1400.0, 1565.5]
    legs = legs_of(as_gtt(short_legs()))
    assert (legs[ExitRole.STOP_LOSS]["trigger"], legs[ExitRole.TAKE_PROFIT]["trigger"]) == (
        1550.0, 1400.0)


def test_given_cheap_stock_when_stop_leg_built_then_at_least_one_tick_beyond_and_on_ticks():
    stop = OrderRequest(order_type="STOP", stop_price=3.07, **{**SHORT_EXIT, "side": "SELL"})
    built = leg(stop, ExitRole.STOP_LOSS, "NSE", "INFY", "CNC", 5)
    assert (built["trigger"], built["price"]) == (3.05, 3.0)


def test_given_stop_without_price_then_rejected_naming_the_field():
    with pytest.raises(OrderRejected, match="stop_price"):
        leg(OrderRequest(order_type="STOP", **SHORT_EXIT), ExitRole.STOP_LOSS, "NSE", "INFY",
            "NRML", 5)


def test_given_leg_order_ids_then_parsed_and_regular_ids_left_alone():
    assert parse_leg_order_id("GTT1101.TP") == (1101, ExitRole.TAKE_PROFIT)
    assert parse_leg_order_id("250101000000001") is None


def test_given_gtt_states_then_each_leg_maps_to_a_broker_status():
    triggered = as_gtt(short_legs(), "triggered")
    triggered["orders"][0]["result"] = {"order_result": {"order_id": "99", "status": "success"}}
    assert leg_snapshot(triggered, ExitRole.TAKE_PROFIT) == "99"
    assert leg_snapshot(triggered, ExitRole.STOP_LOSS).status is BrokerStatus.CANCELLED
    failed = as_gtt(short_legs(), "triggered")
    failed["orders"][1]["result"] = {"order_result": {"order_id": "", "status": "failed",
                                                      "rejection_reason": "margin"}}
    rejected = leg_snapshot(failed, ExitRole.STOP_LOSS)
    assert rejected.status is BrokerStatus.REJECTED and "margin" in rejected.reason
    assert leg_snapshot(as_gtt(short_legs()), ExitRole.STOP_LOSS).status is BrokerStatus.WORKING
    for status, expected in (("expired", BrokerStatus.CANCELLED),
                             ("deleted", BrokerStatus.CANCELLED),
                             ("rejected", BrokerStatus.REJECTED)):
        assert leg_snapshot(as_gtt(short_legs(), status), ExitRole.STOP_LOSS).status is expected


def test_given_bracket_levels_then_only_its_own_gtt_matches():
    stop, take = short_legs()
    gtt = as_gtt([stop])
    assert matching_gtt([gtt], take, ExitRole.TAKE_PROFIT, set(), (1550.0, 1400.0)) == (
        gtt, False)
    assert matching_gtt([gtt], take, ExitRole.TAKE_PROFIT, set(), (1560.0, 1400.0)) is None
    assert matching_gtt([gtt], take, ExitRole.TAKE_PROFIT, {7}, (1550.0, 1400.0)) is None
    assert matching_gtt([gtt], stop, ExitRole.STOP_LOSS, set(), (1550.0, 1400.0)) == (gtt, True)
