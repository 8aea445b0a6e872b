"""Protective exits (SPEC §12) through the real processor, tracker, journal, bracket manager and
outbox over mongomock, with the mock paper broker (or a scripted one) at the edge."""

from __future__ import annotations

import asyncio
import json

import pytest

from brokers.mock import MockBroker, MockSettings
from execution_service.adapters.mock_ledger_store import MockLedgerStore
from execution_service.domain.brackets import OCO_REASON, POSITION_CLOSED_REASON, ExitRole
from execution_service.errors import TransientBrokerError
from execution_service.service.processor import Action
from tests.fakes.service_fakes import (
    FlakyStore,
    ScriptedBroker,
    SteppedClock,
    make_app,
    order_body,
    status_of,
    wait_until,
)
from tests.fakes.stores import memory_store

pytestmark = pytest.mark.asyncio
LEVELS = {"quantity": 10, "reference_price": 100.0, "stop_loss": 95.0, "take_profit": 110.0}
LEDGER = "mock_broker_orders"


def record(app, signal_id: str) -> dict | None:
    return app.store.get_record(signal_id)


def position(app, strategy: str = "Strat") -> dict | None:
    return app.store.db["positions"].find_one({"strategy_name": strategy},
                                              sort=[("opened_at", -1)])


def move_market(app, price: float, signal_id: str) -> None:
    """Another strategy trades SPY at `price`: the mock broker's market moves there."""
    body = order_body(signal_id=signal_id, strategy_name="Other", quantity=1,
                      reference_price=price)
    assert app.processor.handle(body).action is Action.ACK


async def protected_entry(app, signal_id: str = "sig_1", **fields) -> None:
    assert app.processor.handle(order_body(signal_id=signal_id, **{**LEVELS, **fields})) \
        .action is Action.ACK
    for exit_id in (f"{signal_id}:SL", f"{signal_id}:TP"):
        await wait_until(lambda e=exit_id: status_of(app, e) == "SUBMITTED",
                         what=f"{exit_id} SUBMITTED")


def ledger_tags(app) -> list[str]:
    return sorted(doc["signal_id"] for doc in app.store.db[LEDGER].find())


async def stop(app) -> None:
    await app.brackets.stop()
    await app.tracker.stop()


async def test_given_entry_with_both_levels_when_filled_then_stop_and_limit_exits_at_the_broker():
    app, publisher = make_app()
    await protected_entry(app)
    stop_loss, take_profit = record(app, "sig_1:SL"), record(app, "sig_1:TP")
    assert (stop_loss["role"], stop_loss["side"], stop_loss["order_type"],
            stop_loss["stop_price"], stop_loss["quantity"], stop_loss["time_in_force"]) == \
        ("STOP_LOSS", "SELL", "STOP", 95.0, 10, "GTC")
    assert (take_profit["role"], take_profit["side"], take_profit["order_type"],
            take_profit["limit_price"], take_profit["quantity"]) == \
        ("TAKE_PROFIT", "SELL", "LIMIT", 110.0, 10)
    assert stop_loss["parent_signal_id"] == take_profit["parent_signal_id"] == "sig_1"
    await wait_until(lambda: record(app, "sig_1").get("exits") == ["sig_1:SL", "sig_1:TP"],
                     what="parent lists its exits")
    assert ledger_tags(app) == ["sig_1", "sig_1:SL", "sig_1:TP"]
    await wait_until(lambda: any(p["signal_id"] == "sig_1:TP" for p, _ in publisher.messages),
                     what="exit confirmation")
    [(submitted, _)] = [m for m in publisher.messages if m[0]["signal_id"] == "sig_1:TP"]
    assert submitted["role"] == "TAKE_PROFIT" and submitted["parent_signal_id"] == "sig_1"
    await stop(app)


@pytest.mark.parametrize(("price", "fills", "cancelled", "pnl"), [
    (111.0, "TAKE_PROFIT", "STOP_LOSS", 100.0), (94.0, "STOP_LOSS", "TAKE_PROFIT", -60.0)])
async def test_given_protected_long_when_price_through_one_exit_then_filled_other_cancelled(
        price, fills, cancelled, pnl):
    app, _ = make_app()
    await protected_entry(app)
    move_market(app, price, "mover_1")
    filled_id, cancelled_id = (f"sig_1:{ExitRole(r).suffix}" for r in (fills, cancelled))
    await wait_until(lambda: status_of(app, filled_id) == "FILLED", what=f"{fills} filled")
    await wait_until(lambda: status_of(app, cancelled_id) == "CANCELLED", what="cancelled")
    assert record(app, cancelled_id)["cancel_reason"] == OCO_REASON
    closed = position(app)
    assert closed["status"] == "CLOSED" and closed["realized_pnl"] == pytest.approx(pnl)
    [notice] = [n for n in app.notifier.events if getattr(n, "signal_id", "") == filled_id
                and str(n.kind) == "FILLED"]
    assert notice.role == fills
    ledger = app.store.db[LEDGER].find_one({"signal_id": cancelled_id})
    assert ledger["status"] == "CANCELLED"
    await wait_until(lambda: record(app, "sig_1").get("exits_settled") is True,
                     what="bracket settled")
    await stop(app)


async def test_given_partial_entry_fills_when_each_lands_then_exits_protect_it_and_grow():
    """Given an entry the mock venue fills in two halves, a second apart on the venue's own
    clock (moved by the test, so no half lands before the test says, however slow the
    machine); when the first half lands, then the exits are placed for 5; when the second
    lands, then they grow to 10 (one RESIZED)."""
    venue_clock, (handle, _) = SteppedClock(), memory_store()
    venue = MockBroker(MockLedgerStore(handle.database),
                       MockSettings(fill_delay_seconds=1.0, fill_chunks=2), clock=venue_clock)
    app, publisher = make_app(broker=venue, handle=handle)
    assert app.processor.handle(order_body(**LEVELS)).action is Action.ACK
    await wait_until(lambda: status_of(app, "sig_1") == "SUBMITTED", what="entry placed")
    venue_clock.advance(1.0)
    await wait_until(lambda: status_of(app, "sig_1:SL") == "SUBMITTED", what="SL placed")
    assert record(app, "sig_1:SL")["quantity"] == 5
    assert record(app, "sig_1:TP")["quantity"] == 5
    venue_clock.advance(1.0)
    await wait_until(lambda: status_of(app, "sig_1") == "FILLED", what="entry filled")
    await wait_until(lambda: record(app, "sig_1:SL")["quantity"] == 10
                     and record(app, "sig_1:TP")["quantity"] == 10, what="exits grew")

    def resized() -> list[float]:
        return [p["quantity"] for p, _ in publisher.messages
                if p["signal_id"] == "sig_1:SL" and p["event"] == "RESIZED"]

    await wait_until(resized, what="RESIZED published")
    assert resized() == [10]
    assert app.store.db[LEDGER].find_one({"signal_id": "sig_1:SL"})["quantity"] == 10
    await stop(app)


async def test_given_protected_long_when_closed_by_an_opposite_order_then_both_exits_cancelled():
    app, _ = make_app()
    await protected_entry(app)
    close = order_body(signal_id="close_1", side="SELL", quantity=10, reference_price=101.0)
    assert app.processor.handle(close).action is Action.ACK
    for exit_id in ("sig_1:SL", "sig_1:TP"):
        await wait_until(lambda e=exit_id: status_of(app, e) == "CANCELLED", what=exit_id)
        assert record(app, exit_id)["cancel_reason"] == POSITION_CLOSED_REASON
    assert position(app)["status"] == "CLOSED"
    await stop(app)


async def test_given_exit_when_upstream_cancels_its_signal_id_then_only_that_exit_cancelled():
    app, _ = make_app()
    await protected_entry(app)
    cancel = {"action": "CANCEL", "request_id": "req_sl", "signal_id": "sig_1:SL"}
    assert app.processor.handle(json.dumps(cancel).encode()).action is Action.ACK
    await wait_until(lambda: status_of(app, "sig_1:SL") == "CANCELLED", what="SL cancelled")
    await wait_until(lambda: app.brackets.in_flight == 0, what="brackets idle")
    assert status_of(app, "sig_1:TP") == "SUBMITTED"
    assert ledger_tags(app) == ["sig_1", "sig_1:SL", "sig_1:TP"]  # never placed again
    await stop(app)


# a venue the test drives: partial fills, one-cancels-other, faults -------------------------------

async def scripted_entry(app, broker: ScriptedBroker) -> str:
    assert app.processor.handle(order_body(**LEVELS)).action is Action.ACK
    await wait_until(lambda: status_of(app, "sig_1") == "SUBMITTED", what="entry SUBMITTED")
    return record(app, "sig_1")["order_id"]


async def broker_order_of(broker: ScriptedBroker, signal_id: str) -> str:
    found = await broker.find_order(signal_id)
    assert found is not None, f"{signal_id} not at the broker"
    return found.order_id


async def protected_on_scripted(filled: float, **make) -> tuple:
    """A scripted venue, the entry placed and `filled` of it filled, both exits for that."""
    broker = ScriptedBroker()
    app, _ = make_app(broker=broker, **make)
    entry = await scripted_entry(app, broker)
    broker.fill(entry, "E1", filled, 100.0, app.clock())
    await wait_until(lambda: exit_quantities(app) == (filled, filled),
                     what=f"exits for {filled:g}")
    return app, broker, entry


def exit_quantities(app) -> tuple[float | None, float | None]:
    docs = (record(app, "sig_1:SL"), record(app, "sig_1:TP"))
    return tuple(None if doc is None or doc["status"] == "PENDING" else doc["quantity"]
                 for doc in docs)


async def test_given_partial_entry_fill_then_exits_for_it_at_once_and_grow_with_the_next_fill():
    app, broker, entry = await protected_on_scripted(4)
    assert broker.orders[await broker_order_of(broker, "sig_1:SL")].quantity == 4
    broker.fill(entry, "E2", 6, 100.0, app.clock())
    await wait_until(lambda: exit_quantities(app) == (10, 10), what="exits for 10")
    for exit_id in ("sig_1:SL", "sig_1:TP"):
        assert broker.orders[await broker_order_of(broker, exit_id)].quantity == 10
    assert broker.place_calls == 3
    await stop(app)


async def test_given_take_profit_partly_filled_then_stop_reduced_by_as_much_then_cancelled():
    app, broker, _ = await protected_on_scripted(10)
    take_profit = await broker_order_of(broker, "sig_1:TP")
    broker.fill(take_profit, "T1", 3, 110.0, app.clock())
    await wait_until(lambda: exit_quantities(app) == (7, 10), what="stop reduced to 7")
    assert broker.orders[await broker_order_of(broker, "sig_1:SL")].quantity == 7
    broker.cancel_errors = [TransientBrokerError("venue down (test)")] * 2
    broker.fill(take_profit, "T2", 7, 110.0, app.clock())
    await wait_until(lambda: status_of(app, "sig_1:SL") == "CANCELLED", what="stop cancelled")
    assert record(app, "sig_1:SL")["cancel_reason"] == OCO_REASON
    assert broker.cancel_calls >= 3  # the two failures, then the tracker's cancel went through
    assert position(app)["status"] == "CLOSED"
    await stop(app)


async def test_given_broker_down_on_resize_then_retried_until_it_takes_it():
    app, broker, entry = await protected_on_scripted(4)
    broker.modify_error = TransientBrokerError("venue down (test)")
    broker.fill(entry, "E2", 6, 100.0, app.clock())
    await wait_until(lambda: len(broker.modify_calls) >= 3, what="resize retried")
    assert exit_quantities(app) == (4, 4)  # nothing recorded that the broker did not take
    broker.modify_error = None
    await wait_until(lambda: exit_quantities(app) == (10, 10), what="exits for 10")
    await stop(app)


async def test_given_store_down_when_bracket_planned_then_no_exit_until_it_is_back_then_once(
        caplog):
    broker = ScriptedBroker()
    app, _ = make_app(broker=broker, store_class=FlakyStore)
    manager, app.journal.brackets = app.journal.brackets, None  # the fill lands unplanned
    entry = await scripted_entry(app, broker)
    broker.fill(entry, "E1", 10, 100.0, app.clock())
    await wait_until(lambda: status_of(app, "sig_1") == "FILLED", what="entry FILLED")
    app.journal.brackets = manager
    app.store.down = True
    manager.schedule("sig_1")
    await wait_until(lambda: caplog.text.count("Protective exits bracket:sig_1") >= 2,
                     what="two failed attempts")
    assert manager.in_flight == 1 and broker.place_calls == 1
    app.store.down = False
    await wait_until(lambda: exit_quantities(app) == (10, 10), what="exits placed")
    assert broker.place_calls == 3
    await stop(app)


# restarts and replicas ---------------------------------------------------------------------------

async def test_given_take_profit_filled_before_a_crash_when_restarted_then_stop_cancelled_once():
    env = {"LEASE_SECONDS": "0.3"}
    first, _ = make_app(env=env)
    await protected_entry(first)
    first.journal.brackets = None  # crashes before it can act on the fill
    move_market(first, 111.0, "mover_1")
    await wait_until(lambda: status_of(first, "sig_1:TP") == "FILLED", what="TP filled")
    await stop(first)
    assert status_of(first, "sig_1:SL") == "SUBMITTED"
    second, _ = make_app(env=env, handle=first.handle, accounts=[])
    deadline = asyncio.get_running_loop().time() + 30  # sweep is async (store thread)
    while not (await second.leases.sweep() > 0 or "sig_1:SL" in second.tracker.tracked_ids()):
        assert asyncio.get_running_loop().time() < deadline, "stop resumed"
        await asyncio.sleep(0.01)
    assert await second.brackets.resume() >= 1
    await wait_until(lambda: status_of(second, "sig_1:SL") == "CANCELLED", what="SL cancelled")
    assert record(second, "sig_1:SL")["cancel_reason"] == OCO_REASON
    assert ledger_tags(second) == ["mover_1", "sig_1", "sig_1:SL", "sig_1:TP"]
    await stop(second)


async def test_given_two_replicas_when_both_plan_one_bracket_then_each_exit_claimed_once():
    first, _ = make_app()
    second, _ = make_app(handle=first.handle, accounts=[])
    first.journal.brackets = None
    assert first.processor.handle(order_body(**LEVELS)).action is Action.ACK
    await wait_until(lambda: status_of(first, "sig_1") == "FILLED", what="entry filled")
    first.journal.brackets = second.journal.brackets = None
    await asyncio.gather(first.brackets.sync("sig_1"), second.brackets.sync("sig_1"))
    for app in (first, second):
        await wait_until(lambda a=app: a.brackets.in_flight == 0, what="replica idle")
    await wait_until(lambda: exit_quantities(first) == (10, 10), what="exits placed")
    assert ledger_tags(first) == ["sig_1", "sig_1:SL", "sig_1:TP"]
    for exit_id in ("sig_1:SL", "sig_1:TP"):
        events = [e["event"] for e in record(first, exit_id)["events"]]
        assert events.count("CLAIMED") == 1 and events.count("SUBMITTED") == 1
    await stop(first)
    await stop(second)


async def test_given_orders_per_minute_limit_then_exits_do_not_use_up_the_strategy_orders():
    account = {"_id": "acc_1", "broker": "MOCK", "enabled": True, "max_orders_per_minute": 2}
    app, _ = make_app(accounts=[account])
    await protected_entry(app)
    assert app.processor.handle(order_body(signal_id="sig_2")).action is Action.ACK
    await wait_until(lambda: status_of(app, "sig_2") == "FILLED", what="second order filled")
    await stop(app)


async def test_given_partly_filled_entry_when_it_times_out_then_exits_kept_for_the_filled_part():
    broker, clock = ScriptedBroker(), SteppedClock()
    app, _ = make_app(broker=broker, env={"ORDER_TIMEOUT_SECONDS": "60"}, clock=clock)
    entry = await scripted_entry(app, broker)
    broker.fill(entry, "E1", 4, 100.0, app.clock())
    await wait_until(lambda: record(app, "sig_1")["filled_quantity"] == 4, what="4 filled")
    clock.advance(60)  # the test's clock: the part is always filled before the timeout
    await wait_until(lambda: status_of(app, "sig_1") == "CANCELLED", what="entry timed out")
    await wait_until(lambda: app.brackets.in_flight == 0, what="brackets idle")
    assert exit_quantities(app) == (4, 4)
    assert status_of(app, "sig_1:SL") == status_of(app, "sig_1:TP") == "SUBMITTED"
    await stop(app)


async def test_given_short_entry_then_buy_stop_above_and_buy_limit_below():
    app, _ = make_app()
    await protected_entry(app, side="SELL", stop_loss=105.0, take_profit=90.0)
    stop_loss, take_profit = record(app, "sig_1:SL"), record(app, "sig_1:TP")
    assert (stop_loss["side"], stop_loss["order_type"], stop_loss["stop_price"]) == \
        ("BUY", "STOP", 105.0)
    assert (take_profit["side"], take_profit["order_type"], take_profit["limit_price"]) == \
        ("BUY", "LIMIT", 90.0)
    move_market(app, 89.0, "mover_1")
    await wait_until(lambda: status_of(app, "sig_1:TP") == "FILLED", what="TP filled")
    await wait_until(lambda: status_of(app, "sig_1:SL") == "CANCELLED", what="SL cancelled")
    assert position(app)["realized_pnl"] == pytest.approx(100.0)
    await stop(app)


async def test_given_entry_recorded_before_exits_existed_when_restarted_then_left_unprotected():
    """An upgrade must not place orders nobody asked this daemon for: records claimed before
    §12 (no `exits_settled`) are not re-planned at start."""
    first, _ = make_app()
    first.journal.brackets = None
    assert first.processor.handle(order_body(**LEVELS)).action is Action.ACK
    await wait_until(lambda: status_of(first, "sig_1") == "FILLED", what="entry filled")
    first.store.records.update_one({"signal_id": "sig_1"}, {"$unset": {"exits_settled": ""}})
    second, _ = make_app(handle=first.handle, accounts=[])
    assert await second.brackets.resume() == 0
    await second.brackets.sync("sig_1")
    assert record(second, "sig_1:SL") is None and ledger_tags(second) == ["sig_1"]
    await stop(first)
    await stop(second)
