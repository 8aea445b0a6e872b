"""A store that fails for a while: messages are held unacknowledged (never nacked, never
dead-lettered) and all processed once it takes a write again."""

from __future__ import annotations

import asyncio
import json

import pytest
from google.cloud import pubsub_v1

from execution_service.adapters.publisher import TopicPublisher, confirmations_publisher
from execution_service.adapters.pubsub import (
    OrderConsumer,
    PubSubNames,
    make_publisher,
    subscription_disagreements,
)
from execution_service.bootstrap import build_app
from execution_service.config import load_settings
from execution_service.service.daemon import ExecutionDaemon
from tests.fakes.pubsub_tools import PubSubRig
from tests.fakes.service_fakes import FlakyStore
from tests.fakes.stores import memory_store


@pytest.mark.asyncio
async def test_given_store_down_when_50_signals_arrive_then_held_and_all_fill_once_after_it(
        emulator_host, project_id):
    rig = PubSubRig(project_id)
    settings = load_settings(environ={
        "GOOGLE_CLOUD_PROJECT": project_id, "PUBSUB_EMULATOR_HOST": emulator_host,
        "MONGODB_URI": "mongomock://", "MOCK_FILL_DELAY_SECONDS": "0",
        "ORDER_POLL_SECONDS": "0.05"})
    names = PubSubNames(settings)
    publisher, subscriber = make_publisher(), pubsub_v1.SubscriberClient()
    handle, reader = memory_store()
    store = FlakyStore(handle.database)
    app = build_app(settings, confirmations_publisher(publisher, names.confirmations_topic),
                    handle=handle, store=store)
    store.upsert_account("acc_1", {"broker": "MOCK", "enabled": True}, app.clock())
    daemon = ExecutionDaemon(app, OrderConsumer(subscriber, names.orders_subscription, 50),
                             TopicPublisher(publisher, names.dead_letter_topic), app.clock, 0.5)
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    try:
        while not daemon._consumer.running:
            await asyncio.sleep(0.05)
        store.down = True
        ids = [f"sig_outage_{n}" for n in range(50)]
        for signal_id in ids:
            await asyncio.to_thread(rig.publish, {
                "signal_id": signal_id, "order_type": "MARKET", "symbol": "SPY",
                "side": "BUY", "quantity": 1, "account_id": "acc_1",
                "strategy_name": "Outage", "reference_price": 10.0})
        await asyncio.wait_for(_until(lambda: daemon.intake.holding == len(ids)), 30)
        assert reader.recent_records(0) == []
        assert store.health.down and rig.dead_letters() == []
        store.down = False
        await asyncio.to_thread(rig.wait_for, lambda: all(rig.terminal(i) for i in ids), 30,
                                "all filled after the outage")
        for signal_id in ids:
            assert rig.statuses(signal_id) == ["SUBMITTED", "FILLED"]
        assert app.store.mock_ledger.count() == len(ids)
        assert rig.dead_letters() == [] and daemon.intake.holding == 0
        await asyncio.wait_for(_until(lambda: not store.health.down), 30)
        assert daemon.healthy() == (True, "ok")
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
        subscriber.close()
        rig.close()
    counters = json.loads(json.dumps(app.counters.as_dict()))
    assert counters["orders_filled"] == counters["orders_received"] == len(ids)
    assert counters["held"] >= 1 and daemon.intake.total_held >= len(ids)


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.05)


def test_given_setup_pubsub_then_the_subscription_agrees_with_the_daemon_else_each_difference(
        emulator_host, project_id):
    rig = PubSubRig(project_id)
    try:
        assert subscription_disagreements(rig.names, rig.subscriber) == []
        by_hand = f"projects/{project_id}/subscriptions/by-hand"
        rig.subscriber.create_subscription(name=by_hand, topic=rig.names.orders_topic,
                                           ack_deadline_seconds=60)
        rig.names.orders_subscription = by_hand
        problems = subscription_disagreements(rig.names, rig.subscriber)
        assert "ack_deadline_seconds is 60, the daemon expects 10" in problems
        assert "max_delivery_attempts is None, the daemon expects 5" in problems
    finally:
        rig.close()


@pytest.mark.asyncio
async def test_given_the_store_gone_under_a_running_daemon_then_every_working_order_completes(
        emulator_host, project_id):
    """Given 40 orders working (fills due in 3 s) under a running daemon; when every store
    call (records, positions, the mock broker's ledger) fails for a while and then works
    again; then, with no restart, /healthz said what was wrong, every order is FILLED once,
    every confirmation is published with no gap, positions equal the fills and reconcile is
    clean."""
    from execution_service.adapters.store import Store
    from execution_service.service.reconcile import reconcile
    from tests.fakes.stores import SwitchableDatabase

    rig = PubSubRig(project_id)
    settings = load_settings(environ={
        "GOOGLE_CLOUD_PROJECT": project_id, "PUBSUB_EMULATOR_HOST": emulator_host,
        "MONGODB_URI": "mongomock://", "MOCK_FILL_DELAY_SECONDS": "3.0",
        "ORDER_POLL_SECONDS": "0.05", "RETRY_BACKOFF_SECONDS": "0.05",
        "SUPERVISE_SECONDS": "0.2", "OUTBOX_RESCAN_SECONDS": "0.5"})
    names = PubSubNames(settings)
    publisher, subscriber = make_publisher(), pubsub_v1.SubscriberClient()
    handle, _ = memory_store()
    switch = SwitchableDatabase(handle.database)
    switch.down = False
    app = build_app(settings, confirmations_publisher(publisher, names.confirmations_topic),
                    handle=handle, store=Store(switch))
    app.store.upsert_account("acc_1", {"broker": "MOCK", "enabled": True}, app.clock())
    daemon = ExecutionDaemon(app, OrderConsumer(subscriber, names.orders_subscription, 50),
                             TopicPublisher(publisher, names.dead_letter_topic), app.clock, 0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    ids = [f"sig_gone_{n}" for n in range(40)]
    try:
        await asyncio.wait_for(_until(lambda: daemon.healthy()[0]), 30)
        for n, signal_id in enumerate(ids):
            await asyncio.to_thread(rig.publish, {
                "signal_id": signal_id, "order_type": "MARKET", "symbol": f"SYM{n % 3}",
                "side": "BUY" if n % 4 else "SELL", "quantity": 1 + n % 5,
                "account_id": "acc_1", "strategy_name": "Gone", "reference_price": 10.0})
        counts = app.store.counts_by_status
        await asyncio.wait_for(_until(lambda: counts().get("SUBMITTED", 0) + counts().get(
            "FILLED", 0) == len(ids)), 30)
        switch.down = True
        await asyncio.wait_for(_until(lambda: not daemon.healthy()[0]), 30)
        assert "store" in daemon.healthy()[1]
        await asyncio.sleep(3.0)  # the outage lasts past every fill's due time
        switch.down = False
        await asyncio.to_thread(rig.wait_for, lambda: all(rig.terminal(i) for i in ids), 60,
                                "all filled after the outage")
        await asyncio.wait_for(_until(lambda: not app.outbox.backlog and
                                      not app.store.records_with_unpublished()), 30)
        await asyncio.wait_for(_until(lambda: daemon.healthy()[0]), 30)
        for signal_id in ids:
            assert rig.statuses(signal_id) == ["SUBMITTED", "FILLED"], signal_id
            record = app.store.get_record(signal_id)
            assert record["status"] == "FILLED" and record["published_sequence"] == 2
        assert app.store.mock_ledger.count() == len(ids)
        report = await reconcile(app.store, app.brokers)
        assert report["mismatches"] == [] and report["records"] == len(ids)
        assert len(app.store.list_positions("OPEN")) == 3
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
        subscriber.close()
        rig.close()
