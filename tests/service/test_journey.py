"""A signal's journey read back from the store the real wiring wrote (SPEC §4-§6)."""

from __future__ import annotations

import asyncio
import re

import pytest

from execution_service.service.journey import render_journey, signal_journey
from tests.fakes.service_fakes import make_app, order_body, settle

pytestmark = pytest.mark.asyncio
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"


async def test_given_a_filled_order_then_events_confirmations_position_and_signal():
    app, _ = make_app()
    app.processor.handle(order_body())
    await settle(app)

    journey = signal_journey(app.store, "sig_1")

    assert [e["status"] for e in journey["events"]] == ["PENDING", "SUBMITTED", "FILLED"]
    assert [(c["sequence"], c["status"], c["published"]) for c in journey["confirmations"]] \
        == [(1, "SUBMITTED", True), (2, "FILLED", True)]
    [position] = journey["positions"]
    assert position["symbol"] == "SPY" and position["quantity"] == 100
    assert position["order_ids"] == [journey["record"]["order_id"]]
    assert position["signal_fill_keys"] and "fill_keys" not in position
    assert journey["record"]["status"] == "FILLED" and "events" not in journey["record"]
    assert journey["signal"]["execution_status"] == "FILLED"


async def test_given_a_filled_order_when_rendered_then_one_line_per_event_with_iso_times():
    app, _ = make_app()
    app.processor.handle(order_body())
    await settle(app)

    text = render_journey(signal_journey(app.store, "sig_1"))

    assert text.startswith("Signal sig_1: FILLED  BUY 100 SPY MARKET")
    event_lines = [line for line in text.splitlines()
                   if re.match(rf"  {ISO}  (PENDING|SUBMITTED|FILLED) ", line)]
    assert [line.split()[1] for line in event_lines] == ["PENDING", "SUBMITTED", "FILLED"]
    assert "exec_id=" in event_lines[2] and "price=235.15" in event_lines[2]
    assert "#2 FILLED" in text and "NOT PUBLISHED" not in text
    assert "OPEN LONG 100 SPY @ 235.15" in text
    assert "Signal store: execution_status FILLED" in text


async def test_given_publisher_down_then_confirmations_marked_unpublished():
    app, publisher = make_app()
    publisher.failing = True
    app.processor.handle(order_body())
    while app.tracker.in_flight:
        await asyncio.sleep(0.01)

    journey = signal_journey(app.store, "sig_1")

    assert [c["published"] for c in journey["confirmations"]] == [False, False]
    assert "NOT PUBLISHED" in render_journey(journey)


async def test_given_an_invalid_order_then_one_rejected_event_and_no_position():
    app, _ = make_app()
    app.processor.handle(order_body(quantity=0))
    await settle(app)

    journey = signal_journey(app.store, "sig_1")

    assert [e["status"] for e in journey["events"]] == ["REJECTED"]
    assert journey["positions"] == []
    assert "Reason: quantity must be > 0, got 0" in render_journey(journey)


async def test_given_an_unknown_signal_then_none():
    app, _ = make_app()
    assert signal_journey(app.store, "sig_nobody") is None


async def test_given_only_an_upstream_signal_document_then_a_journey_without_record():
    app, _ = make_app()
    app.store.signals.insert_one({"signal_id": "sig_up", "symbol": "SPY"})

    journey = signal_journey(app.store, "sig_up")

    assert journey["record"] is None and journey["events"] == []
    assert "has not received this signal" in render_journey(journey)
