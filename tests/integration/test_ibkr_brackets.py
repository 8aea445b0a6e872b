"""Protective exits (SPEC §12) on Interactive Brokers as IB's native bracket: the entry goes to
TWS with both exits as its children (parentId, transmit only on the last, one ocaGroup), so
the protection is at the venue from the entry's placement on, even while the daemon is down.
ib_async's real IB() driven by FakeTws (which keeps brackets and OCA groups as TWS does), with
the real processor, tracker, journal and bracket manager over mongomock."""

from __future__ import annotations

import asyncio
import json

import pytest
from ib_async import IB

from brokers.ibkr import IbkrBroker
from brokers.ibkr_contracts import OCA_REDUCE_WITH_BLOCK
from execution_service.domain.brackets import ENTRY_UNFILLED_REASON, OCO_REASON
from execution_service.service.processor import Action
from tests.contract.harness_ibkr import FakeTws, IbkrHarness, ibkr_settings
from tests.fakes.service_fakes import make_app, order_body, status_of, wait_until

pytestmark = pytest.mark.asyncio
ENTRY = {"quantity": 10, "reference_price": 100.0, "stop_loss": 95.0, "take_profit": 110.0}
EXITS = ("sig_1:SL", "sig_1:TP")
SHORT_LEASES = {"LEASE_SECONDS": "0.3"}  # a restarted daemon takes the records over at once


def venue_id(app, signal_id: str) -> int:
    return int(app.store.get_record(signal_id)["order_id"])


def record(app, signal_id: str) -> dict:
    return app.store.get_record(signal_id)


def placed_ids(tws: FakeTws) -> list[int]:
    """Every order id TWS was sent, once each (a modify sends the same id again)."""
    return sorted({order_id for order_id, _, _ in tws.received})


def command(app, **body) -> None:
    assert app.processor.handle(json.dumps(body).encode()).action is Action.ACK


async def cancel_confirmed(app, tws: FakeTws, signal_id: str) -> None:
    """TWS confirms the cancel the daemon sent for this order."""
    await wait_until(lambda: tws.book[venue_id(app, signal_id)].cancel_pending,
                     what=f"cancel of {signal_id} sent")
    tws.confirm_cancel(venue_id(app, signal_id))


async def bracket_placed(chunks: int = 1, **entry):
    harness = IbkrHarness()
    broker = await harness.start(chunks=chunks)
    app, _ = make_app(broker=broker, env=SHORT_LEASES)
    assert app.processor.handle(order_body(**{**ENTRY, **entry})).action is Action.ACK
    await wait_until(lambda: all(status_of(app, s) == "SUBMITTED" for s in ("sig_1", *EXITS)),
                     what="entry and both children at TWS")
    return harness, app


async def stop(app, harness) -> None:
    await app.brackets.stop()
    await app.tracker.stop()
    await harness.stop()


async def test_given_entry_with_both_levels_when_placed_then_one_bracket_parent_first_last_sends():
    """Given an entry with stop_loss and take_profit, when it is placed, then TWS gets three
    orders at once, before any fill: the parent, the take-profit and the stop-loss (ib_async's
    bracketOrder order), children naming the parent, transmit only on the last, one ocaGroup,
    GTC, opposite side, tagged <parent>:TP / <parent>:SL; their records are bound to them."""
    harness, app = await bracket_placed()
    tws = harness.tws
    (parent_id, _, parent), (tp_id, _, take), (sl_id, _, stop_loss) = tws.received
    assert [o.transmit for o in (parent, take, stop_loss)] == [False, False, True]
    assert (take.parentId, stop_loss.parentId, parent.parentId) == (parent_id, parent_id, 0)
    assert (parent.orderRef, take.orderRef, stop_loss.orderRef) == ("sig_1", "sig_1:TP",
                                                                    "sig_1:SL")
    assert (take.orderType, take.lmtPrice, stop_loss.orderType, stop_loss.auxPrice) == \
        ("LMT", 110.0, "STP", 95.0)
    assert {take.action, stop_loss.action, take.tif, stop_loss.tif} == {"SELL", "GTC"}
    assert take.totalQuantity == stop_loss.totalQuantity == parent.totalQuantity == 10
    assert take.ocaGroup == stop_loss.ocaGroup == "sig_1:OCO" and parent.ocaGroup == ""
    assert take.ocaType == stop_loss.ocaType == OCA_REDUCE_WITH_BLOCK
    assert (venue_id(app, "sig_1:TP"), venue_id(app, "sig_1:SL")) == (tp_id, sl_id)
    assert tws.book[sl_id].status == tws.book[tp_id].status == "PreSubmitted"  # held by IB
    # the bracket manager lists the exits on the entry after the change, on the store thread
    await wait_until(lambda: record(app, "sig_1").get("exits"), what="the entry's exits")
    entry = record(app, "sig_1")
    assert entry["bracket_at_venue"] and entry["exits"] == list(EXITS)
    for signal_id in EXITS:
        child = record(app, signal_id)
        assert (child["placed_with_parent"], child["parent_signal_id"], child["quantity"],
                child["time_in_force"]) == (True, "sig_1", 10, "GTC")

    tws.fill_next(parent_id)
    await wait_until(lambda: status_of(app, "sig_1") == "FILLED", what="entry filled")
    await wait_until(lambda: app.brackets.in_flight == 0, what="brackets idle")
    assert tws.book[sl_id].status == tws.book[tp_id].status == "Submitted"  # activated by IB
    assert placed_ids(tws) == [parent_id, tp_id, sl_id]  # the fill placed nothing more
    await stop(app, harness)


async def test_given_partial_entry_fill_when_stop_fills_then_ib_reduces_the_take_profit():
    """Given the entry filled 5 of 10, when the stop executes what IB lets it (5), then IB
    reduces the take-profit by as much and the records follow; when the rest of the entry
    fills, the stop sells the rest, IB cancels the take-profit (OCA) and the position closes
    with the stop's PnL. Nothing is ever placed again."""
    harness, app = await bracket_placed(chunks=2)
    tws = harness.tws
    parent_id, sl_id, tp_id = (venue_id(app, s) for s in ("sig_1", "sig_1:SL", "sig_1:TP"))
    tws.fill_next(sl_id)
    assert tws.book[sl_id].filled == 0  # a child waits for its parent's fill
    tws.fill_next(parent_id)
    tws.fill_next(sl_id)
    assert (tws.book[sl_id].filled, tws.book[tp_id].order.totalQuantity) == (5, 5)
    tws.fill_next(sl_id)
    assert tws.book[sl_id].filled == 5  # never more than the parent has filled
    await wait_until(lambda: record(app, "sig_1:SL")["filled_quantity"] == 5
                     and record(app, "sig_1:TP")["quantity"] == 5, what="TP follows IB")
    assert status_of(app, "sig_1:TP") == "SUBMITTED"

    tws.fill_next(parent_id)
    tws.fill_next(sl_id)
    await wait_until(lambda: status_of(app, "sig_1:SL") == "FILLED"
                     and status_of(app, "sig_1:TP") == "CANCELLED"
                     and status_of(app, "sig_1") == "FILLED", what="bracket done")
    assert tws.book[tp_id].status == "Cancelled"
    await wait_until(lambda: record(app, "sig_1").get("exits_settled") is True, what="settled")
    positions = list(app.store.db["positions"].find({"symbol": "SPY"}))  # closed at 5, reopened
    assert {position["status"] for position in positions} == {"CLOSED"}
    assert sum(position["realized_pnl"] for position in positions) == pytest.approx(-50.0)
    assert placed_ids(tws) == sorted([parent_id, sl_id, tp_id])
    await stop(app, harness)


async def test_given_take_profit_fills_with_the_daemon_idle_then_ib_keeps_oco_and_records_follow():
    harness, app = await bracket_placed(chunks=2)
    tws = harness.tws
    for _ in range(2):
        tws.fill_next(venue_id(app, "sig_1"))
    await wait_until(lambda: status_of(app, "sig_1") == "FILLED", what="entry filled")
    stop_loss, take = (tws.book[venue_id(app, s)] for s in EXITS)
    manager, app.journal.brackets = app.journal.brackets, None  # the daemon does nothing now
    tws.fill_next(take.order_id)
    assert (stop_loss.order.totalQuantity, stop_loss.status) == (5, "Submitted")  # IB reduced
    tws.fill_next(take.order_id)
    assert stop_loss.status == "Cancelled"  # cancelled by IB

    app.journal.brackets = manager
    manager.schedule("sig_1")
    await wait_until(lambda: status_of(app, "sig_1:SL") == "CANCELLED"
                     and status_of(app, "sig_1:TP") == "FILLED", what="records follow IB")
    position = app.store.db["positions"].find_one({"symbol": "SPY"}, sort=[("opened_at", -1)])
    assert position["status"] == "CLOSED" and position["realized_pnl"] == pytest.approx(100.0)
    assert len(placed_ids(tws)) == 3
    await stop(app, harness)


async def test_given_unfilled_entry_when_cancelled_upstream_then_ib_cancels_its_children():
    harness, app = await bracket_placed()
    command(app, action="CANCEL", request_id="req_c", signal_id="sig_1", reason="withdrawn")
    await cancel_confirmed(app, harness.tws, "sig_1")
    await wait_until(lambda: all(status_of(app, s) == "CANCELLED" for s in ("sig_1", *EXITS)),
                     what="entry and children cancelled")
    assert all(venue.status == "Cancelled" for venue in harness.tws.book.values())
    for signal_id in EXITS:
        reason = record(app, signal_id)["cancel_reason"]
        assert reason == ENTRY_UNFILLED_REASON or "202" in reason  # ours or IB's, whichever won
    await wait_until(lambda: record(app, "sig_1").get("exits_settled") is True, what="settled")
    assert len(placed_ids(harness.tws)) == 3
    await stop(app, harness)


async def test_given_partly_filled_entry_when_cancelled_then_children_kept_for_the_filled_part():
    harness, app = await bracket_placed(chunks=2)
    tws = harness.tws
    tws.fill_next(venue_id(app, "sig_1"))
    await wait_until(lambda: record(app, "sig_1")["filled_quantity"] == 5, what="entry 5/10")
    command(app, action="CANCEL", request_id="req_c", signal_id="sig_1")
    await cancel_confirmed(app, tws, "sig_1")
    await wait_until(lambda: status_of(app, "sig_1") == "CANCELLED"
                     and all(record(app, s)["quantity"] == 5 for s in EXITS),
                     what="children resized to the filled part")
    assert all(status_of(app, s) == "SUBMITTED" for s in EXITS)
    assert [tws.book[venue_id(app, s)].order.totalQuantity for s in EXITS] == [5, 5]
    await stop(app, harness)


async def test_given_entry_quantity_modified_then_both_children_follow_at_ib():
    harness, app = await bracket_placed(order_type="LIMIT", limit_price=100.0)
    command(app, action="MODIFY", request_id="req_m", signal_id="sig_1", quantity=14)
    await wait_until(lambda: all(record(app, s)["quantity"] == 14 for s in EXITS),
                     what="children resized")
    tws = harness.tws
    assert [tws.book[venue_id(app, s)].order.totalQuantity for s in ("sig_1", *EXITS)] == \
        [14, 14, 14]
    assert len(placed_ids(tws)) == 3  # modified in place, never placed again
    await stop(app, harness)


async def test_given_position_closed_by_another_order_then_both_children_cancelled():
    harness, app = await bracket_placed()
    tws = harness.tws
    tws.fill_next(venue_id(app, "sig_1"))
    await wait_until(lambda: status_of(app, "sig_1") == "FILLED", what="entry filled")
    assert app.processor.handle(order_body(signal_id="sig_close", side="SELL", quantity=10,
                                           reference_price=100.0)).action is Action.ACK
    await wait_until(lambda: status_of(app, "sig_close") == "SUBMITTED", what="close placed")
    tws.fill_next(venue_id(app, "sig_close"))
    for signal_id in EXITS:
        await cancel_confirmed(app, tws, signal_id)
    await wait_until(lambda: all(status_of(app, s) == "CANCELLED" for s in EXITS),
                     what="children cancelled")
    assert all(tws.book[venue_id(app, s)].status == "Cancelled" for s in EXITS)
    await stop(app, harness)


async def restarted(first, tws: FakeTws, env: dict | None = None, **options):
    """A new daemon on the same store, and a new IB() on the same TWS (its book)."""
    ib = IB()
    second_tws = FakeTws(ib, book=tws.book)
    broker = IbkrBroker(ibkr_settings(), ib=ib)
    await broker.connect()
    second, _ = make_app(broker=broker, handle=first.handle, accounts=[],
                         env={**SHORT_LEASES, **(env or {})}, **options)
    open_ids = {doc["signal_id"] for doc in second.store.open_records()}
    loop = asyncio.get_running_loop()
    deadline, taken = loop.time() + 10, 0
    while taken < len(open_ids):  # once the first daemon's leases have run out
        assert loop.time() < deadline, f"open records taken over: {open_ids}"
        taken += await second.leases.sweep()
        await asyncio.sleep(0.01)
    second.brackets.resume()
    return second, second_tws, broker


async def test_given_crash_after_bracket_sent_before_recorded_when_restarted_then_found_by_tag():
    """Given the bracket at TWS but a crash before any record saw it (entry and children
    PENDING), when the daemon restarts, then each is found by its orderRef tag and bound to
    its order: nothing is sent again, and the take-profit's fill still cancels the stop."""
    harness, first = await bracket_placed()
    tws = harness.tws
    ids = {s: venue_id(first, s) for s in ("sig_1", *EXITS)}
    await stop(first, harness)
    first.store.records.update_many({}, {"$set": {"status": "PENDING", "order_id": None}})
    tws.fill_next(ids["sig_1"])  # while the daemon is down

    second, second_tws, broker = await restarted(first, tws)
    await wait_until(lambda: all(record(second, s)["order_id"] == str(ids[s]) for s in ids),
                     what="all three bound by tag")
    await wait_until(lambda: status_of(second, "sig_1") == "FILLED", what="entry filled")
    assert second_tws.received == []  # never placed twice
    second_tws.fill_next(ids["sig_1:TP"])
    await wait_until(lambda: status_of(second, "sig_1:TP") == "FILLED"
                     and status_of(second, "sig_1:SL") == "CANCELLED", what="OCO held")
    assert second_tws.received == []
    await second.brackets.stop()
    await second.tracker.stop()
    await broker.close()


async def test_given_stop_filled_while_daemon_down_when_restarted_then_records_follow_ib():
    harness, first = await bracket_placed()
    tws = harness.tws
    tws.fill_next(venue_id(first, "sig_1"))
    await wait_until(lambda: status_of(first, "sig_1") == "FILLED", what="entry filled")
    await stop(first, harness)
    tws.fill_next(venue_id(first, "sig_1:SL"))  # IB's OCA cancels the take-profit
    second, second_tws, broker = await restarted(first, tws)
    await wait_until(lambda: status_of(second, "sig_1:SL") == "FILLED"
                     and status_of(second, "sig_1:TP") == "CANCELLED", what="records follow")
    assert record(second, "sig_1:TP")["cancel_reason"] in (OCO_REASON, "IB status Cancelled")
    assert second_tws.received == []
    await second.brackets.stop()
    await second.tracker.stop()
    await broker.close()


async def test_given_ib_rejects_the_bracket_then_entry_and_children_rejected_never_resent():
    harness = IbkrHarness()
    broker = await harness.start(reject_reason="margin")
    app, _ = make_app(broker=broker)
    assert app.processor.handle(order_body(**ENTRY)).action is Action.ACK
    await wait_until(lambda: all(status_of(app, s) in ("REJECTED", "CANCELLED")
                                 for s in ("sig_1", *EXITS)), what="all refused")
    assert status_of(app, "sig_1") == "REJECTED"
    assert len(placed_ids(harness.tws)) == 3
    await stop(app, harness)
