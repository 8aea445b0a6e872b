"""The processor, tracker, journal and outbox wired for real, with fakes at the edges."""

from __future__ import annotations

from datetime import timedelta

import pytest

from brokers.base import BrokerStatus
from execution_service.domain.records import new_claim
from execution_service.domain.signals import parse_signal
from execution_service.errors import PlacementUncertain, TransientBrokerError
from execution_service.service.outbox import ConfirmationOutbox
from execution_service.service.processor import Action
from tests.fakes.service_fakes import (
    FlakyStore,
    ScriptedBroker,
    SteppedClock,
    make_app,
    order_body,
    settle,
)
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.asyncio


async def test_given_three_chunks_when_processed_then_partials_then_filled():
    app, publisher = make_app(env={"MOCK_FILL_CHUNKS": "3"})
    assert app.processor.handle(order_body(quantity=100)).action is Action.ACK
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "FILLED" and record["filled_quantity"] == 100
    assert [f["quantity"] for f in record["fills"]] == [33, 33, 34]
    assert publisher.statuses("sig_1") == ["SUBMITTED", "PARTIALLY_FILLED", "PARTIALLY_FILLED",
                                           "FILLED"]
    assert [p["sequence"] for p, _ in publisher.messages] == [1, 2, 3, 4]
    assert record["published_sequence"] == 4 and record["outbox_pending"] is False
    position = app.store.open_position({"account_id": "acc_1", "strategy_name": "Strat",
                                        "symbol": "SPY"})
    assert position["quantity"] == 100 and len(position["fill_keys"]) == 3
    assert app.notifier.kinds() == ["PARTIAL_FILL", "PARTIAL_FILL", "FILLED"]
    assert app.store.get_signal("sig_1")["execution_status"] == "FILLED"


async def test_given_store_down_when_message_arrives_then_nack_and_later_processed():
    app, publisher = make_app(store_class=FlakyStore)
    app.store.down = True
    assert app.processor.handle(order_body()).action is Action.HOLD
    assert app.store.mock_ledger.count() == 0
    app.store.down = False
    assert app.processor.handle(order_body()).action is Action.ACK
    await settle(app)
    assert app.store.get_record("sig_1")["status"] == "FILLED"
    assert publisher.statuses("sig_1") == ["SUBMITTED", "FILLED"]


async def test_given_publisher_failing_then_confirmations_delivered_after_recovery():
    app, publisher = make_app()
    publisher.failing = True
    app.processor.handle(order_body())
    await eventually(lambda: publisher.refused >= 3, what="three refused publishes")
    assert app.store.get_record("sig_1")["outbox_pending"] is True
    publisher.failing = False
    await settle(app)
    assert publisher.statuses("sig_1") == ["SUBMITTED", "FILLED"]
    assert app.store.get_record("sig_1")["outbox_pending"] is False


async def test_given_unpublished_confirmations_in_store_when_restarted_then_published():
    first, refusing = make_app()
    refusing.failing = True
    first.processor.handle(order_body())
    await eventually(lambda: not first.tracker.in_flight, what="tracking finished")
    await first.outbox.stop()  # the process dies with both confirmations unpublished
    second, publisher = make_app(handle=first.handle, start_outbox=False)
    assert second.outbox.load_unpublished() == 2
    second.outbox.start()
    await settle(second)
    assert publisher.statuses("sig_1") == ["SUBMITTED", "FILLED"]
    assert second.store.get_record("sig_1")["published_sequence"] == 2


async def test_given_broker_unreachable_then_rejected_after_max_attempts_with_alert():
    broker = ScriptedBroker()
    broker.connect_error = TransientBrokerError("SCRIPTED 127.0.0.1:1 unreachable: refused")
    app, publisher = make_app(broker=broker)
    app.processor.handle(order_body())
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "REJECTED"
    assert record["reject_reason"] == ("broker connection failed after 3 attempts: SCRIPTED "
                                       "127.0.0.1:1 unreachable: refused")
    assert broker.connect_calls == 3 and broker.place_calls == 0
    assert "BROKER_CONNECTION_LOST" in app.notifier.kinds()
    assert publisher.statuses("sig_1") == ["REJECTED"]


async def test_given_uncertain_placement_then_found_by_tag_and_never_resent():
    broker = ScriptedBroker()
    broker.place_error = PlacementUncertain("timed out while placing")
    app, publisher = make_app(broker=broker, env={"ORDER_TIMEOUT_SECONDS": "30"})
    app.processor.handle(order_body())
    await eventually(lambda: app.store.get_record("sig_1")["status"] == "SUBMITTED",
                     what="the order SUBMITTED")
    broker.fill("SCR-1", "X1", 100, 10.0, app.clock())
    await settle(app)
    assert broker.place_calls == 1
    assert app.store.get_record("sig_1")["status"] == "FILLED"


async def test_given_cancel_that_raced_a_fill_then_late_fill_recorded():
    broker = ScriptedBroker()
    app, publisher = make_app(broker=broker, env={"ORDER_TIMEOUT_SECONDS": "0.05",
                                                  "LATE_FILL_GRACE_SECONDS": "0.3"})
    app.processor.handle(order_body(quantity=10))
    await eventually(lambda: app.store.get_record("sig_1")["status"] == "CANCELLED",
                     what="the order CANCELLED")
    broker.fill("SCR-1", "LATE-1", 4, 10.0, app.clock())
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "CANCELLED" and record["filled_quantity"] == 4
    assert record["events"][-1]["event"] == "LATE_FILL"
    assert "LATE_FILL" in app.notifier.kinds()
    assert publisher.statuses("sig_1")[-1] == "CANCELLED"
    assert app.store.open_position({"account_id": "acc_1", "strategy_name": "Strat",
                                    "symbol": "SPY"})["quantity"] == 4


async def test_given_timeout_with_partial_fill_then_cancelled_keeping_the_part():
    """Given an order 6/10 filled, when the service's clock passes its timeout, then it is
    cancelled keeping the 6 (the clock is the test's: the fill always comes first)."""
    broker, clock = ScriptedBroker(), SteppedClock()
    app, publisher = make_app(broker=broker, env={"ORDER_TIMEOUT_SECONDS": "60"}, clock=clock)
    app.processor.handle(order_body(quantity=10))
    await eventually(lambda: broker.orders, what="the order placed")
    broker.fill("SCR-1", "P1", 6, 10.0, app.clock())
    await eventually(lambda: app.store.get_record("sig_1")["filled_quantity"] == 6,
                     what="the part filled")
    assert app.store.get_record("sig_1")["status"] == "PARTIALLY_FILLED"
    clock.advance(60)
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "CANCELLED" and record["filled_quantity"] == 6
    assert record["cancel_reason"].startswith("timeout: not filled within 60s")
    assert publisher.statuses("sig_1") == ["SUBMITTED", "PARTIALLY_FILLED", "CANCELLED"]


async def test_given_pending_claim_unknown_to_broker_when_recovered_then_placed_once():
    app, publisher = make_app(env={"MOCK_FILL_DELAY_SECONDS": "0"})
    signal = parse_signal(order_body(signal_id="sig_crash"))
    app.store.insert_record(new_claim(signal, broker="MOCK", broker_tag="sig_crash",
                                      at=app.clock()))
    assert await app.leases.sweep() == 1
    await settle(app)
    assert app.store.get_record("sig_crash")["status"] == "FILLED"
    assert app.store.mock_ledger.count("sig_crash") == 1


async def test_given_pending_claim_already_at_broker_when_recovered_then_not_resent():
    broker = ScriptedBroker()
    app, publisher = make_app(broker=broker)
    signal = parse_signal(order_body(signal_id="sig_sent"))
    app.store.insert_record(new_claim(signal, broker="MOCK", broker_tag="sig_sent",
                                      at=app.clock()))
    from brokers.base import OrderRequest

    await broker.place_order(OrderRequest("sig_sent", "acc_1", "SPY", "BUY", 100, "MARKET"))
    broker.fill("SCR-1", "E1", 100, 10.0, app.clock())
    broker.set_status("SCR-1", BrokerStatus.FILLED)
    await app.leases.sweep()
    await settle(app)
    assert broker.place_calls == 1
    assert app.store.get_record("sig_sent")["status"] == "FILLED"


async def test_given_submitted_long_ago_when_recovered_then_timeout_from_submitted_at():
    broker = ScriptedBroker()
    broker.connected = True
    app, publisher = make_app(broker=broker, env={"ORDER_TIMEOUT_SECONDS": "60"})
    signal = parse_signal(order_body(signal_id="sig_old"))
    doc = new_claim(signal, broker="MOCK", broker_tag="sig_old", at=app.clock())
    long_ago = app.clock() - timedelta(minutes=5)
    from brokers.base import OrderRequest

    await broker.place_order(OrderRequest("sig_old", "acc_1", "SPY", "BUY", 100, "MARKET"))
    doc.update(status="SUBMITTED", order_id="SCR-1", submitted_at=long_ago)
    app.store.insert_record(doc)
    await app.leases.sweep()
    await settle(app)
    assert broker.cancel_calls == 1
    assert app.store.get_record("sig_old")["status"] == "CANCELLED"


async def test_given_duplicate_signal_then_acked_and_placed_once():
    app, publisher = make_app()
    assert app.processor.handle(order_body()).action is Action.ACK
    outcome = app.processor.handle(order_body())
    assert outcome.action is Action.ACK and outcome.reason == "duplicate"
    await settle(app)
    assert app.store.mock_ledger.count() == 1
    assert app.counters.duplicates == 1


async def test_given_mock_reject_rate_one_then_rejected_with_reason():
    app, publisher = make_app(env={"MOCK_REJECT_RATE": "1", "MOCK_SEED": "7"})
    app.processor.handle(order_body())
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "REJECTED"
    assert record["reject_reason"].startswith("Insufficient margin (mock broker")
    assert app.notifier.kinds() == ["REJECTED"]


class _RefuseFirstOf(list):
    """A publisher that refuses the first confirmation of one signal, once."""

    def __init__(self, signal_id: str, sequence: int):
        super().__init__()
        self.target = (signal_id, sequence)
        self.refused = False

    async def publish(self, payload: bytes, attributes: dict[str, str]) -> None:
        key = (attributes["signal_id"], int(attributes["sequence"]))
        if key == self.target and not self.refused:
            self.refused = True
            raise ConnectionError("refused once (test)")
        self.append(key)


async def test_given_one_confirmation_refused_then_no_gap_is_ever_marked():
    app, _ = make_app()
    publisher = _RefuseFirstOf("sig_1", 1)
    app.outbox = ConfirmationOutbox(app.store, publisher, clock=app.clock, retry_base=0.01)
    app.journal._outbox = app.outbox
    app.outbox.start()
    marks = []
    mark_published = app.store.mark_published

    def spy(marked):
        marks.extend((sequence, list(publisher)) for sequence in marked.values())
        mark_published(marked)

    app.store.mark_published = spy
    app.processor.handle(order_body())
    await settle(app)
    assert publisher.refused
    assert sorted(publisher) == [("sig_1", 1), ("sig_1", 2)]  # FILLED went first, then #1
    assert marks and all(("sig_1", n) in accepted for sequence, accepted in marks
                         for n in range(1, sequence + 1))
    record = app.store.get_record("sig_1")
    assert record["published_sequence"] == 2 and record["outbox_pending"] is False
