"""Protective exits (SPEC §12) on Interactive Brokers: the exits go to TWS as one OCA group
(ocaType 2, reduce with block), so one exit's fill reduces or cancels the other at the venue
even while the daemon does nothing. ib_async's real IB() driven by FakeTws (which keeps OCA
groups as TWS does), with the real processor, tracker, journal and bracket manager over
mongomock."""

from __future__ import annotations

import pytest

from brokers.ibkr_contracts import OCA_REDUCE_WITH_BLOCK
from execution_service.service.processor import Action
from tests.contract.harness_ibkr import IbkrHarness
from tests.fakes.service_fakes import make_app, order_body, status_of, wait_until

pytestmark = pytest.mark.asyncio
ENTRY = {"quantity": 10, "reference_price": 100.0, "stop_loss": 95.0, "take_profit": 110.0}


def venue_id(app, signal_id: str) -> int:
    return int(app.store.get_record(signal_id)["order_id"])


async def test_given_ib_exits_when_take_profit_fills_with_the_daemon_idle_then_ib_keeps_oco():
    harness = IbkrHarness()
    broker = await harness.start(chunks=2)
    tws = harness.tws
    app, _ = make_app(broker=broker)
    assert app.processor.handle(order_body(**ENTRY)).action is Action.ACK
    await wait_until(lambda: status_of(app, "sig_1") == "SUBMITTED", what="entry at TWS")
    for _ in range(2):
        tws.fill_next(venue_id(app, "sig_1"))
    await wait_until(lambda: status_of(app, "sig_1:SL") == "SUBMITTED"
                     and status_of(app, "sig_1:TP") == "SUBMITTED"
                     and app.store.get_record("sig_1:SL")["quantity"] == 10, what="exits")
    stop, take = (tws.book[venue_id(app, s)] for s in ("sig_1:SL", "sig_1:TP"))
    assert (stop.order.orderType, stop.order.auxPrice, stop.order.action, stop.order.tif) == \
        ("STP", 95.0, "SELL", "GTC")
    assert (take.order.orderType, take.order.lmtPrice, take.order.totalQuantity) == \
        ("LMT", 110.0, 10)
    assert stop.order.ocaGroup == take.order.ocaGroup == "sig_1:OCO"
    assert stop.order.ocaType == take.order.ocaType == OCA_REDUCE_WITH_BLOCK
    assert tws.book[venue_id(app, "sig_1")].order.ocaGroup == ""  # the entry is in no group

    manager, app.journal.brackets = app.journal.brackets, None  # the daemon does nothing now
    tws.fill_next(take.order_id)
    assert (stop.order.totalQuantity, stop.status) == (5, "Submitted")  # reduced by IB
    tws.fill_next(take.order_id)
    assert stop.status == "Cancelled"  # cancelled by IB

    app.journal.brackets = manager
    manager.schedule("sig_1")
    await wait_until(lambda: status_of(app, "sig_1:SL") == "CANCELLED"
                     and status_of(app, "sig_1:TP") == "FILLED", what="records follow IB")
    position = app.store.db["positions"].find_one({"symbol": "SPY"}, sort=[("opened_at", -1)])
    assert position["status"] == "CLOSED" and position["realized_pnl"] == pytest.approx(100.0)
    assert sorted({order_id for order_id, _, _ in tws.received}) == sorted(
        venue_id(app, s) for s in ("sig_1", "sig_1:SL", "sig_1:TP"))
    await manager.stop()
    await app.tracker.stop()
    await harness.stop()
