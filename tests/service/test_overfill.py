"""A venue that fills more than the order's quantity: recorded as the venue reports it, the
position follows the venue, and the operator is alerted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from brokers.base import BrokerStatus
from tests.fakes.service_fakes import ScriptedBroker, make_app, order_body, settle

pytestmark = pytest.mark.asyncio
KEY = {"account_id": "acc_1", "strategy_name": "Strat", "symbol": "SPY"}


async def _until(condition, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline
        await asyncio.sleep(0.01)


async def test_given_a_venue_filling_12_of_10_then_12_recorded_held_and_alerted():
    broker = ScriptedBroker()
    app, publisher = make_app(broker=broker)
    app.processor.handle(order_body(quantity=10))
    await _until(lambda: broker.orders)
    [order_id] = broker.orders
    broker.fill(order_id, "X1", 12, 10.0, datetime.now(UTC))
    broker.set_status(order_id, BrokerStatus.FILLED)
    await settle(app)
    record = app.store.get_record("sig_1")
    assert (record["status"], record["filled_quantity"]) == ("FILLED", 12)
    assert app.store.open_position(KEY)["quantity"] == 12
    [alert] = [e for e in app.notifier.events if "Overfill" in getattr(e, "text", "")]
    assert "filled 12 of 10" in alert.text
    assert publisher.statuses("sig_1") == ["SUBMITTED", "FILLED"]


async def test_given_a_filled_order_when_the_venue_reports_one_more_fill_then_an_overfill():
    """Given an order FILLED at 10; when a later look shows another execution of 2; then it
    is an OVERFILL confirmation, the position is 12 and the operator is alerted."""
    from execution_service.service.tracker import OrderTracker

    broker = ScriptedBroker()
    app, publisher = make_app(broker=broker)
    app.processor.handle(order_body(quantity=10))
    await _until(lambda: broker.orders)
    [order_id] = broker.orders
    broker.fill(order_id, "X1", 10, 10.0, datetime.now(UTC))
    broker.set_status(order_id, BrokerStatus.FILLED)
    await settle(app)
    broker.fill(order_id, "X2", 2, 10.5, datetime.now(UTC))
    tracker: OrderTracker = app.tracker
    await tracker._follow_snapshot(app.store.get_record("sig_1"), broker.orders[order_id])
    await settle(app)
    assert app.store.get_record("sig_1")["filled_quantity"] == 12
    assert app.store.open_position(KEY)["quantity"] == 12
    assert publisher.statuses("sig_1") == ["SUBMITTED", "FILLED", "FILLED"]
    assert [p["event"] for p, _ in publisher.messages][-1] == "OVERFILL"
    assert any("Overfill" in getattr(e, "text", "") for e in app.notifier.events)
