"""A venue that fills more than the order's quantity: recorded as the venue reports it, the
position follows the venue, and the operator is alerted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from brokers.base import BrokerStatus
from tests.fakes.service_fakes import ScriptedBroker, make_app, order_body, settle, wait_until

pytestmark = pytest.mark.asyncio
KEY = {"account_id": "acc_1", "strategy_name": "Strat", "symbol": "SPY"}


async def _filled_at_the_venue(quantity: float):
    """An order of 10 placed; the venue reports one execution of `quantity`, and FILLED."""
    broker = ScriptedBroker()
    app, publisher = make_app(broker=broker)
    app.processor.handle(order_body(quantity=10))
    await wait_until(lambda: broker.orders, what="the order placed")
    [order_id] = broker.orders
    broker.fill(order_id, "X1", quantity, 10.0, datetime.now(UTC))
    broker.set_status(order_id, BrokerStatus.FILLED)
    await settle(app)
    return app, publisher, broker, order_id


async def test_given_a_venue_filling_12_of_10_then_12_recorded_held_and_alerted():
    app, publisher, _, _ = await _filled_at_the_venue(12)
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

    app, publisher, broker, order_id = await _filled_at_the_venue(10)
    broker.fill(order_id, "X2", 2, 10.5, datetime.now(UTC))
    tracker: OrderTracker = app.tracker
    await tracker._follow_snapshot(app.store.get_record("sig_1"), broker.orders[order_id])
    await settle(app)
    assert app.store.get_record("sig_1")["filled_quantity"] == 12
    assert app.store.open_position(KEY)["quantity"] == 12
    assert publisher.statuses("sig_1") == ["SUBMITTED", "FILLED", "FILLED"]
    assert [p["event"] for p, _ in publisher.messages][-1] == "OVERFILL"
    assert any("Overfill" in getattr(e, "text", "") for e in app.notifier.events)
