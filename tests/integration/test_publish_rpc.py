"""The confirmations publisher's own Publish RPC (`publish_rpc`) against the real emulator
through the real client's transport: what it sends arrives whole, and a refusal comes back as
the generated client's exception, naming what was wrong."""

from __future__ import annotations

import asyncio

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1

from execution_service.adapters.publisher import confirmations_publisher
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.asyncio


@pytest.fixture
def topic_and_subscription(emulator_host, project_id):
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project_id, "execution-confirmations")
    subscription = subscriber.subscription_path(project_id, "confirmations-check")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    yield publisher, subscriber, topic, subscription
    subscriber.close()


async def send(publisher, messages) -> list:
    done = asyncio.get_running_loop().create_future()
    publisher.send(messages, done.set_result)
    return await asyncio.wait_for(done, 30)


async def test_given_confirmations_when_sent_then_each_arrives_whole(
        topic_and_subscription):
    client, subscriber, topic, subscription = topic_and_subscription
    publisher = confirmations_publisher(client, topic)
    sent = [(f"{signal}-{n}".encode(), {"signal_id": signal, "status": f"S{n}"})
            for n in range(5) for signal in ("a", "b")]
    for start in range(0, len(sent), 3):
        assert await send(publisher, sent[start:start + 3]) == [None] * len(sent[start:start + 3])
    received: list = []

    def pulled() -> bool:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=10)
        if response.received_messages:
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[m.ack_id for m in response.received_messages])
        received.extend((m.message.data, dict(m.message.attributes))
                        for m in response.received_messages)
        return len(received) >= len(sent)

    await eventually(pulled, timeout=30, what="every confirmation pulled")
    assert sorted(received) == sorted(sent)  # each whole: data and attributes


async def test_given_a_topic_that_does_not_exist_then_each_message_fails_with_not_found(
        topic_and_subscription):
    client, _subscriber, topic, _subscription = topic_and_subscription
    publisher = confirmations_publisher(client, f"{topic}-missing")
    outcomes = await send(publisher, [(b"x", {"signal_id": "a"}), (b"y", {"signal_id": "b"})])
    assert all(isinstance(o, api_exceptions.NotFound) for o in outcomes)
    assert "topic" in str(outcomes[0]).lower()
