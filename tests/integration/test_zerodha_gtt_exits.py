"""Protective exits (SPEC §12) on Zerodha CNC/NRML: one two-leg GTT (OCO) per bracket, through
the real kiteconnect client against the fake Kite server's /gtt/triggers endpoints; the daemon
flow with the real processor, tracker, journal and bracket manager over mongomock."""

from __future__ import annotations

import asyncio
import json

import pytest

from brokers.base import BrokerStatus, OrderRequest
from execution_service.domain.brackets import OCO_REASON
from execution_service.errors import OrderRejected, PlacementUncertain
from tests.fakes.fake_kite import FakeKite
from tests.fakes.kite_flow import entry_at_kite, exits_submitted, kite_broker, stop_app
from tests.fakes.service_fakes import make_app, status_of, wait_until

pytestmark = pytest.mark.asyncio
ENTRY = {"symbol": "INFY", "quantity": 10, "product": "CNC", "reference_price": 1500.0,
         "stop_loss": 1450.0, "take_profit": 1600.0, "exchange": "NSE", "currency": "INR"}
EXIT = {"account_id": "acc", "symbol": "INFY", "side": "SELL", "quantity": 10,
        "time_in_force": "GTC", "exchange": "NSE", "product": "CNC",
        "oca_group": "sig_9:OCO", "oca_levels": (1450.0, 1600.0)}
STOP = OrderRequest(signal_id="sig_9:SL", order_type="STOP", stop_price=1450.0, **EXIT)
TAKE = OrderRequest(signal_id="sig_9:TP", order_type="LIMIT", limit_price=1600.0, **EXIT)


@pytest.fixture
def kite():
    server = FakeKite().start()
    server.market_price = 1500.0
    yield server
    server.stop()
    assert server.header_problems == []


def posts(kite: FakeKite) -> int:
    return sum(1 for method, _ in kite.gtt_requests if method == "POST")


async def test_given_cnc_entry_filled_when_take_profit_triggers_then_one_gtt_and_stop_gone(kite):
    """Given a CNC entry with both levels, when it fills, then both exits are legs of one
    two-leg GTT (no regular exit order); when the take-profit leg triggers and its order fills,
    the take-profit fills, the stop is cancelled (one-cancels-other) and the position closes."""
    app, broker = await entry_at_kite(kite, ENTRY, filled=10)
    await exits_submitted(app)
    await wait_until(lambda: len(kite.gtts) == 1
                     and next(iter(kite.gtts.values()))["type"] == "two-leg", what="OCO")
    assert len(kite.placements) == 1 and posts(kite) == 1
    (gtt_id, gtt), = kite.gtts.items()
    assert gtt["condition"]["trigger_values"] == [1450.0, 1600.0]
    assert [(o["transaction_type"], o["quantity"], o["product"], o["order_type"], o["price"])
            for o in gtt["orders"]] == [("SELL", 10, "CNC", "LIMIT", 1435.5),
                                        ("SELL", 10, "CNC", "LIMIT", 1600.0)]
    assert {app.store.get_record(s)["order_id"] for s in ("sig_1:SL", "sig_1:TP")} == {
        f"GTT{gtt_id}.SL", f"GTT{gtt_id}.TP"}
    placed = kite.trigger_gtt(gtt_id, 1)
    kite.fill(placed, 10, 1600.0)
    await wait_until(lambda: status_of(app, "sig_1:TP") == "FILLED", what="take-profit filled")
    await wait_until(lambda: status_of(app, "sig_1:SL") == "CANCELLED", what="stop cancelled")
    reason = app.store.get_record("sig_1:SL")["cancel_reason"]
    assert reason in (OCO_REASON, f"the other leg of GTT {gtt_id} triggered (one-cancels-other)")
    assert len(kite.placements) == 2 and posts(kite) == 1  # the triggered order only
    position = app.store.db["positions"].find_one({"symbol": "INFY"})
    assert position["status"] == "CLOSED" and position["realized_pnl"] == pytest.approx(1000.0)
    await stop_app(app, broker)


async def test_given_partial_entry_when_it_grows_then_gtt_legs_resized_by_modify(kite):
    """Given a CNC entry filled 4 of 10, when the rest fills, then the GTT's legs are resized
    to 10 through modify_gtt (still one GTT, never a second one)."""
    app, broker = await entry_at_kite(kite, ENTRY, filled=4)
    await wait_until(lambda: len(kite.gtts) == 1 and [o["quantity"] for o in next(iter(
        kite.gtts.values()))["orders"]] == [4, 4], what="exits for 4")
    kite.fill(kite.placements[0].order_id, 6, 1500.0)
    await wait_until(lambda: [o["quantity"] for o in next(iter(kite.gtts.values()))[
        "orders"]] == [10, 10], what="exits grown to 10")
    await wait_until(lambda: app.store.get_record("sig_1:TP")["quantity"] == 10
                     and app.store.get_record("sig_1:SL")["quantity"] == 10, what="records")
    assert posts(kite) == 1 and len(kite.gtts) == 1
    await stop_app(app, broker)


async def test_given_gtt_of_two_legs_when_each_leg_cancelled_then_other_stays_then_deleted(kite):
    """Given both exits in one GTT, when the stop is cancelled, then the GTT keeps the
    take-profit alone (single-leg, still active); when that is cancelled too, it is deleted."""
    broker = kite_broker(kite)
    stop = await broker.place_order(STOP)
    take = await broker.place_order(TAKE)
    gtt_id = stop.extra["gtt_id"]
    assert take.extra["gtt_id"] == gtt_id and posts(kite) == 1
    await broker.cancel_order(stop.order_id)
    gtt = kite.gtts[gtt_id]
    assert (gtt["type"], gtt["status"], gtt["condition"]["trigger_values"]) == (
        "single", "active", [1600.0])
    assert (await broker.get_order(stop.order_id)).status is BrokerStatus.CANCELLED
    assert (await broker.get_order(take.order_id)).status is BrokerStatus.WORKING
    await broker.cancel_order(take.order_id)
    assert kite.gtts[gtt_id]["status"] == "deleted"
    assert (await broker.get_order(take.order_id)).status is BrokerStatus.CANCELLED
    await broker.cancel_order(take.order_id)  # already gone: a no-op
    await broker.close()


async def test_given_gtt_placed_when_daemon_restarts_and_places_again_then_no_second_gtt(kite):
    """Given both legs placed by one process, when a new process (after a crash, before it
    recorded the ids) places the same exits again, then it finds the GTT by instrument, side
    and trigger values and places nothing; a different bracket on the same symbol gets its own."""
    first = kite_broker(kite)
    stop = await first.place_order(STOP)
    await first.place_order(TAKE)
    await first.close()
    second = kite_broker(kite)
    again = await second.place_order(TAKE)
    assert again.order_id == f"GTT{stop.extra['gtt_id']}.TP" and posts(kite) == 1
    other = OrderRequest(**{**vars(STOP), "signal_id": "sig_8:SL", "oca_group": "sig_8:OCO",
                            "stop_price": 1400.0, "oca_levels": (1400.0, 1600.0)})
    assert (await second.place_order(other)).extra["gtt_id"] != stop.extra["gtt_id"]
    assert posts(kite) == 2
    await second.close()


async def test_given_triggered_stop_when_looked_up_then_fills_of_its_order_and_tp_cancelled(kite):
    """Given a two-leg GTT, when the stop leg triggers and its order fills in two trades, then
    the stop shows both fills (the placed order's trades) and the take-profit leg shows
    CANCELLED; resizing either is refused (the GTT is no longer active)."""
    broker = kite_broker(kite)
    stop = await broker.place_order(STOP)
    take = await broker.place_order(TAKE)
    placed = kite.trigger_gtt(stop.extra["gtt_id"], 0)
    kite.fill(placed, 4, 1440.0)
    kite.fill(placed, 6, 1438.0)
    order = await broker.get_order(stop.order_id)
    assert (order.status, order.filled_quantity, order.extra["kite_order_id"]) == (
        BrokerStatus.FILLED, 10, placed)
    assert [f.price for f in order.fills] == [1440.0, 1438.0]
    other = await broker.get_order(take.order_id)
    assert other.status is BrokerStatus.CANCELLED and "one-cancels-other" in other.reason
    with pytest.raises(OrderRejected):
        await broker.modify_order(take.order_id, TAKE)
    await broker.close()


async def test_given_kite_down_when_gtt_placed_then_uncertain_and_retry_places_once(kite):
    """Given Kite answers the GTT placement with a 503, then the placement is uncertain; the
    retry that follows (the tracker's look-up then placement) leaves exactly one GTT."""
    broker = kite_broker(kite)
    kite.fail_next("gtt_place", "NetworkException", "OMS down")
    with pytest.raises(PlacementUncertain):
        await broker.place_order(STOP)
    stop = await broker.place_order(STOP)
    await broker.place_order(STOP)  # and once more: already there
    assert posts(kite) == 2 and len(kite.gtts) == 1
    assert json.loads(kite.gtt_requests[-1][1]["condition"])["trigger_values"] == [1450.0]
    assert stop.status is BrokerStatus.WORKING
    await broker.close()


async def test_given_expired_gtt_when_looked_up_then_leg_cancelled_with_reason(kite):
    broker = kite_broker(kite)
    stop = await broker.place_order(STOP)
    kite.set_gtt_status(stop.extra["gtt_id"], "expired")
    order = await broker.get_order(stop.order_id)
    assert order.status is BrokerStatus.CANCELLED and "expired" in order.reason
    await broker.close()


async def test_given_kite_refuses_gtt_modify_once_when_entry_grows_then_resize_retried(kite):
    """Given a CNC entry filled 4 of 10 with its GTT, when Kite answers the resize with a 503
    once, then the bracket manager retries and the GTT's legs reach 10 (one GTT)."""
    app, broker = await entry_at_kite(kite, ENTRY, filled=4)
    await wait_until(lambda: len(kite.gtts) == 1 and [o["quantity"] for o in next(iter(
        kite.gtts.values()))["orders"]] == [4, 4], what="exits for 4")
    kite.fail_next("gtt_modify", "NetworkException", "OMS down")
    kite.fill(kite.placements[0].order_id, 6, 1500.0)
    await wait_until(lambda: [o["quantity"] for o in next(iter(kite.gtts.values()))[
        "orders"]] == [10, 10], what="exits grown to 10 after the refusal")
    assert posts(kite) == 1 and kite._errors["gtt_modify"] == []  # the refusal was served
    await stop_app(app, broker)


async def test_given_stop_triggered_while_daemon_down_when_restarted_then_resumed_not_placed(
        kite):
    """Given a CNC entry protected by its GTT and the daemon stopped, when the stop leg
    triggers and fills at Kite meanwhile and a new daemon starts on the same store, then the
    stop is FILLED from the order Kite placed, the take-profit CANCELLED, the position closed
    at a loss, and no GTT or exit order is placed again."""
    env = {"LEASE_SECONDS": "0.3"}
    first, first_broker = await entry_at_kite(kite, ENTRY, filled=10, env=env)
    await exits_submitted(first)
    await wait_until(lambda: next(iter(kite.gtts.values()))["type"] == "two-leg", what="OCO")
    first_owner = first.store.get_record("sig_1:TP")["owner"]["id"]
    await stop_app(first, first_broker)
    placed = kite.move_market(1440.0)
    assert len(placed) == 1
    kite.fill(placed[0], 10, 1440.0)
    second_broker = kite_broker(kite)
    second, _ = make_app(env=env, broker=second_broker, handle=first.handle, accounts=[])

    def both_exits_taken_over() -> bool:  # each lease runs out in its own time under load
        return all((second.store.get_record(exit_id).get("owner") or {}).get("id")
                   != first_owner for exit_id in ("sig_1:SL", "sig_1:TP"))

    deadline = asyncio.get_running_loop().time() + 10  # sweep is async (store thread)
    while not both_exits_taken_over():
        await second.leases.sweep()
        assert asyncio.get_running_loop().time() < deadline, "exits resumed"
        await asyncio.sleep(0.01)
    await second.brackets.resume()
    await wait_until(lambda: status_of(second, "sig_1:SL") == "FILLED", what="stop filled")
    await wait_until(lambda: status_of(second, "sig_1:TP") == "CANCELLED", what="TP cancelled")
    assert posts(kite) == 1 and len(kite.placements) == 2
    position = second.store.db["positions"].find_one({"symbol": "INFY"})
    assert position["status"] == "CLOSED" and position["realized_pnl"] == pytest.approx(-600.0)
    await stop_app(second, second_broker)


async def test_given_lone_stop_of_one_bracket_when_other_bracket_places_after_restart_then_own_gtt(
        kite):
    """Given bracket A (stop only, 1450) as a single-leg GTT, when a new process places bracket
    B's take-profit 1600 (B's stop is 1440) for the same symbol, side, product and quantity,
    then B gets a GTT of its own (A's stop is never made one-cancels-other with B's target),
    and B's stop then joins B's GTT."""
    first = kite_broker(kite)
    lone = OrderRequest(**{**vars(STOP), "signal_id": "sig_a:SL", "oca_group": "sig_a:OCO",
                           "oca_levels": (1450.0, None)})
    a_stop = await first.place_order(lone)
    await first.close()
    second = kite_broker(kite)
    b_levels = {"oca_group": "sig_b:OCO", "oca_levels": (1440.0, 1600.0)}
    b_take = await second.place_order(OrderRequest(**{**vars(TAKE), "signal_id": "sig_b:TP",
                                                      **b_levels}))
    assert b_take.extra["gtt_id"] != a_stop.extra["gtt_id"]
    assert kite.gtts[a_stop.extra["gtt_id"]]["type"] == "single"
    b_stop = await second.place_order(OrderRequest(**{**vars(STOP), "signal_id": "sig_b:SL",
                                                      "stop_price": 1440.0, **b_levels}))
    assert b_stop.extra["gtt_id"] == b_take.extra["gtt_id"] and posts(kite) == 2
    assert kite.gtts[b_take.extra["gtt_id"]]["condition"]["trigger_values"] == [1440.0, 1600.0]
    await second.close()


async def test_given_two_leg_gtt_when_both_legs_cancelled_at_once_then_gtt_deleted(kite):
    """Given both exits in one GTT, when the position closes and both are cancelled together
    (as the bracket manager does), then the GTT ends deleted, never left holding a leg."""
    broker = kite_broker(kite)
    stop = await broker.place_order(STOP)
    take = await broker.place_order(TAKE)
    await asyncio.gather(broker.cancel_order(stop.order_id), broker.cancel_order(take.order_id))
    assert kite.gtts[stop.extra["gtt_id"]]["status"] == "deleted"
    await broker.close()
