"""Kinds travel as types from the code that knows them: the rejection class and the cancel
cause are said where the decision is made and reach the record, the metrics and the notice;
the journey log is chosen by logger, never by reading our own text."""

from __future__ import annotations

import logging

import pytest

from brokers.base import BrokerStatus
from execution_service.domain.notices import AlertKind, CancelCause, NoticeKind
from execution_service.errors import TransientBrokerError
from execution_service.service.ports import JOURNEY_LOGGER
from tests.fakes.service_fakes import ScriptedBroker, make_app, order_body, settle
from tests.fakes.service_logging import service_logging
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.asyncio
RESTRICTED = {"_id": "acc_1", "broker": "MOCK", "enabled": True, "allowed_symbols": ["SPY"]}


def _rejections(app) -> dict[str, float]:
    text = app.metrics.exposition().decode()
    rows = (line.rsplit(" ", 1) for line in text.splitlines()
            if line.startswith("execution_rejections_total{"))
    return {name.split('"')[1]: float(value) for name, value in rows}


async def test_given_a_symbol_named_like_a_connection_failure_when_not_allowed_then_an_account_rejection():  # noqa: E501
    """Given an account allowing only SPY, when a signal for the symbol DISCONNECT arrives,
    then the record, the metrics and the notice call it an account rejection (the reason's
    words are never read for it)."""
    app, publisher = make_app(accounts=[RESTRICTED])
    app.processor.handle(order_body(symbol="DISCONNECT"))
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "REJECTED" and "DISCONNECT" in record["reject_reason"]
    assert record["reject_class"] == "account"
    assert _rejections(app)["account"] == 1 and _rejections(app)["connection"] == 0
    assert app.notifier.kinds() == [str(NoticeKind.REJECTED)]


async def test_given_a_reason_that_reads_like_a_timeout_when_validation_fails_then_validation():
    """Given a strategy name mentioning a timeout and an unreachable broker, when the signal
    fails validation, then its class is validation."""
    app, _ = make_app()
    app.processor.handle(order_body(quantity=0, strategy_name="broker unreachable timed out"))
    await settle(app)
    assert app.store.get_record("sig_1")["reject_class"] == "validation"
    assert _rejections(app)["validation"] == 1


async def test_given_the_broker_unreachable_when_placing_then_a_connection_rejection():
    """Given a broker that cannot be reached, when every attempt fails, then the class is
    connection, said by the tracker that gave up."""
    broker = ScriptedBroker()
    broker.connect_error = TransientBrokerError("SCRIPTED unreachable")
    app, _ = make_app(broker=broker)
    app.processor.handle(order_body())
    await settle(app)
    assert app.store.get_record("sig_1")["reject_class"] == "connection"
    assert _rejections(app)["connection"] == 1


async def test_given_an_order_not_filled_in_time_when_cancelled_then_the_cause_is_timeout():
    """Given a broker that never fills, when the order times out, then the record keeps the
    TIMEOUT cause and the CANCELLED notice carries it."""
    broker = ScriptedBroker()
    app, _ = make_app(broker=broker, env={"ORDER_TIMEOUT_SECONDS": "0.05"})
    app.processor.handle(order_body())
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "CANCELLED" and record["cancel_cause"] == "TIMEOUT"
    cancelled = [n for n in app.notifier.events if n.kind == NoticeKind.CANCELLED]
    assert [n.cancel_cause for n in cancelled] == [CancelCause.TIMEOUT]


async def test_given_the_broker_cancels_on_its_own_then_the_cause_is_broker():
    """Given a working order, when the broker cancels it unasked (its reason starting with
    "timeout" like ours), then the cause is BROKER: the words are the broker's."""
    broker = ScriptedBroker()
    app, _ = make_app(broker=broker, env={"ORDER_TIMEOUT_SECONDS": "30"})
    app.processor.handle(order_body())
    await eventually(lambda: broker.orders, what="the order placed")
    broker.set_status("SCR-1", BrokerStatus.CANCELLED, "timeout at the exchange")
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "CANCELLED" and record["cancel_cause"] == "BROKER"
    assert [n.cancel_cause for n in app.notifier.events
            if n.kind == NoticeKind.CANCELLED] == [CancelCause.BROKER]


async def test_given_lines_on_other_loggers_that_read_like_the_journey_then_only_journey_lines_go_there(  # noqa: E501
        tmp_path):
    """Given the service's logging, when a journey line (a tracking failure, which reads
    like none of the others) and an ordinary line that starts like one are logged, then the
    journey log has exactly the journey line, and the service log has both."""
    with service_logging(tmp_path):
        logging.getLogger(JOURNEY_LOGGER).warning("Tracking sig_j failed unexpectedly")
        logging.getLogger("elsewhere").warning("Order of business: not a journey line")
    journey = (tmp_path / "signal_processing.log").read_text().splitlines()
    assert len(journey) == 1 and journey[0].endswith("Tracking sig_j failed unexpectedly")
    assert len((tmp_path / "execution_service.log").read_text().splitlines()) == 2


async def test_given_a_broker_connection_lost_then_the_alert_is_keyed_by_the_broker_it_came_from():
    """Given a broker built by the factory, when its connection drops with a detail holding
    colons, then the alert names the broker and collapses under that broker's key (the
    broker's name is passed along, not cut back out of the text)."""
    broker = ScriptedBroker()
    app, _ = make_app(broker=broker)
    app.brokers.create_broker("MOCK").connection_listener(False, "api: socket: closed")
    alerts = [a for a in app.notifier.events if a.kind == AlertKind.BROKER_CONNECTION_LOST]
    assert [(a.text, a.key) for a in alerts] == [
        ("MOCK: api: socket: closed", "BROKER_CONNECTION_LOST:MOCK")]
