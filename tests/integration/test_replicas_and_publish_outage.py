"""Through the real emulator: two daemons on one store and one subscription place each
signal once, and confirmations refused by Pub/Sub for a while are delivered afterwards."""

from __future__ import annotations

import asyncio

import pytest
from google.cloud import pubsub_v1

from execution_service.adapters import publisher as publishers
from execution_service.adapters.publisher import TopicPublisher
from execution_service.adapters.pubsub import (
    OrderConsumer,
    PubSubNames,
    make_publisher,
)
from execution_service.adapters.store import Store, StoreHandle
from execution_service.bootstrap import build_app
from execution_service.config import load_settings
from execution_service.service.daemon import ExecutionDaemon
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.stores import memory_store
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.asyncio


class FlakyTopic(TopicPublisher):
    """The real publisher, refusing everything while `down` is set (fault injection)."""

    down = False
    refused = 0

    def send(self, messages, on_done):
        if self.down:
            self.refused += len(messages)
            on_done([ConnectionError("pubsub down (injected)")] * len(messages))
            return
        super().send(messages, on_done)


def _daemon(settings, handle, names, confirmations_publisher=None):
    publisher, subscriber = make_publisher(), pubsub_v1.SubscriberClient()
    topic = confirmations_publisher or publishers.confirmations_publisher(
        publisher, names.confirmations_topic)
    app = build_app(settings, topic, handle=handle)
    app.store.upsert_account("acc_1", {"broker": "MOCK", "enabled": True}, app.clock())
    daemon = ExecutionDaemon(app, OrderConsumer(subscriber, names.orders_subscription, 50),
                             TopicPublisher(publisher, names.dead_letter_topic), app.clock, 0.5)
    return daemon, subscriber


async def _run(daemons, body):
    stop = asyncio.Event()
    tasks = [asyncio.create_task(d.run(stop)) for d, _ in daemons]
    try:
        await eventually(lambda: all(d._consumer.running for d, _ in daemons), 30,
                         "every consumer running")
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        for _, subscriber in daemons:
            subscriber.close()


def _settings(project_id, emulator_host):
    return load_settings(environ={
        "GOOGLE_CLOUD_PROJECT": project_id, "PUBSUB_EMULATOR_HOST": emulator_host,
        "MONGODB_URI": "mongomock://", "MOCK_FILL_DELAY_SECONDS": "0.05",
        "ORDER_POLL_SECONDS": "0.05"})


def _handle() -> StoreHandle:
    return memory_store()[0]


async def test_given_two_daemons_and_each_signal_twice_then_each_placed_once(emulator_host,
                                                                             project_id):
    rig = PubSubRig(project_id)
    settings, handle = _settings(project_id, emulator_host), _handle()
    names = PubSubNames(settings)
    daemons = [_daemon(settings, handle, names) for _ in range(2)]
    ids = [f"sig_twice_{n}" for n in range(40)]

    async def body():
        for signal_id in ids:
            body = market_signal({"account_id": "acc_1", "strategy_name": "Replicas"},
                                 signal_id=signal_id)
            await asyncio.to_thread(rig.publish, body)
            await asyncio.to_thread(rig.publish, body)
        await asyncio.to_thread(rig.wait_for, lambda: all(rig.terminal(i) for i in ids), 60,
                                "every signal filled")
        await eventually(lambda: sum(d.app.counters.duplicates for d, _ in daemons) >= len(ids),
                         30, "every late copy judged a duplicate")

    await _run(daemons, body)
    assert Store(handle.database).mock_ledger.count() == len(ids)
    assert sum(d.app.counters.duplicates for d, _ in daemons) == len(ids)
    for signal_id in ids:
        assert rig.statuses(signal_id).count("SUBMITTED") == 1


async def test_given_pubsub_refusing_confirmations_then_delivered_afterwards(emulator_host,
                                                                            project_id):
    rig = PubSubRig(project_id)
    settings, handle = _settings(project_id, emulator_host), _handle()
    names = PubSubNames(settings)
    flaky = FlakyTopic(make_publisher(), names.confirmations_topic, ordered_by="signal_id")
    daemon = _daemon(settings, handle, names, flaky)
    ids = [f"sig_outage_{n}" for n in range(10)]

    async def body():
        flaky.down = True
        for signal_id in ids:
            await asyncio.to_thread(rig.publish, market_signal(
                {"account_id": "acc_1", "strategy_name": "Outage"}, signal_id=signal_id))
        reader = Store(handle.database)
        await eventually(lambda: reader.counts_by_status().get("FILLED", 0) >= len(ids), 30,
                         "every order filled")
        assert flaky.refused and not rig.collect_confirmations()
        flaky.down = False
        await asyncio.to_thread(rig.wait_for, lambda: all(rig.terminal(i) for i in ids), 60,
                                "confirmations after the outage")

    await _run([daemon], body)
    for signal_id in ids:
        assert rig.statuses(signal_id)[:2] == ["SUBMITTED", "FILLED"]
    assert Store(handle.database).records_with_unpublished() == []
