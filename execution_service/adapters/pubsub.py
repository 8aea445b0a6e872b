"""Google Cloud Pub/Sub: the trading-orders consumer, publishers, and topic setup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import timedelta

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

logger = logging.getLogger(__name__)
MAX_DELIVERY_ATTEMPTS = 5


class PubSubNames:
    def __init__(self, settings) -> None:
        project = settings.GOOGLE_CLOUD_PROJECT
        self.project = project
        self.orders_topic = f"projects/{project}/topics/{settings.TRADING_ORDERS_TOPIC}"
        self.orders_subscription = (f"projects/{project}/subscriptions/"
                                    f"{settings.TRADING_ORDERS_SUBSCRIPTION}")
        self.confirmations_topic = (f"projects/{project}/topics/"
                                    f"{settings.EXECUTION_CONFIRMATIONS_TOPIC}")
        self.dead_letter_topic = f"projects/{project}/topics/{settings.DEAD_LETTER_TOPIC}"
        self.dead_letter_subscription = (f"projects/{project}/subscriptions/"
                                         f"{settings.DEAD_LETTER_TOPIC}-sub")


def make_publisher() -> pubsub_v1.PublisherClient:
    batching = pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.002)
    return pubsub_v1.PublisherClient(batch_settings=batching)


def setup_pubsub(names: PubSubNames, publisher=None, subscriber=None) -> list[str]:
    """Create topics and subscriptions; idempotent. Returns what was created."""
    publisher = publisher or pubsub_v1.PublisherClient()
    subscriber = subscriber or pubsub_v1.SubscriberClient()
    created = []
    for topic in (names.orders_topic, names.confirmations_topic, names.dead_letter_topic):
        try:
            publisher.create_topic(name=topic)
            created.append(topic)
        except gexc.AlreadyExists:
            pass
    subscriptions = [
        {"name": names.orders_subscription, "topic": names.orders_topic,
         "ack_deadline_seconds": 10,
         "retry_policy": {"minimum_backoff": duration_pb2.Duration(seconds=1),
                          "maximum_backoff": duration_pb2.Duration(seconds=30)},
         "dead_letter_policy": {"dead_letter_topic": names.dead_letter_topic,
                                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS}},
        {"name": names.dead_letter_subscription, "topic": names.dead_letter_topic,
         "ack_deadline_seconds": 60},
    ]
    for request in subscriptions:
        try:
            subscriber.create_subscription(request=request)
            created.append(request["name"])
        except gexc.AlreadyExists:
            pass
    return created


async def await_future(future) -> object:
    """Await a google.api_core / concurrent future from asyncio without blocking the loop."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def done(fut):
        def settle():
            if waiter.done():
                return
            error = fut.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(fut.result())
        loop.call_soon_threadsafe(settle)

    future.add_done_callback(done)
    return await waiter


class TopicPublisher:
    """Publishes to one topic; `publish` raises when Pub/Sub refuses (the caller retries)."""

    def __init__(self, client: pubsub_v1.PublisherClient, topic: str, timeout: float = 10.0):
        self._client = client
        self._topic = topic
        self._timeout = timeout

    async def publish(self, payload: bytes, attributes: dict[str, str]) -> None:
        future = self._client.publish(self._topic, payload, timeout=self._timeout, **attributes)
        await asyncio.wait_for(await_future(future), self._timeout)

    async def publish_many(self, messages: list[tuple[bytes, dict[str, str]]]
                           ) -> list[BaseException | None]:
        """Publish a batch and wake the event loop once, when Pub/Sub has answered for all of
        it; one outcome per message (None: accepted)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        outcomes: list[BaseException | None] = [None] * len(messages)
        remaining = [len(messages)]
        lock = threading.Lock()

        def settle(index: int, future) -> None:
            outcomes[index] = future.exception()
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        for index, (payload, attributes) in enumerate(messages):
            future = self._client.publish(self._topic, payload, timeout=self._timeout,
                                          **attributes)
            future.add_done_callback(lambda f, i=index: settle(i, f))
        if messages:
            try:
                await asyncio.wait_for(asyncio.shield(done), self._timeout)
            except TimeoutError:
                return [o if o is not None or done.done() else TimeoutError("publish timed out")
                        for o in outcomes]
        return outcomes


class OrderConsumer:
    """Streaming pull on trading-orders-sub; messages are handed to the event loop in batches
    (one wake-up for whatever arrived meanwhile).

    `handler(message)` runs on the event loop and acks or nacks the message itself.
    """

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, subscription: str,
                 max_in_flight: int):
        self._subscriber = subscriber
        self._subscription = subscription
        # Short lease extensions: what a crashed process held comes back to the others within
        # ~10 s (with the 60 s default the emulator held it for minutes).
        self._flow = pubsub_v1.types.FlowControl(
            max_messages=max_in_flight, max_duration_per_lease_extension=10,
            max_lease_duration=timedelta(minutes=10).total_seconds())
        self._future = None
        self._inbox: deque = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._handler: Callable | None = None

    def start(self, loop: asyncio.AbstractEventLoop, handler: Callable) -> None:
        self._handler = handler

        def callback(message) -> None:  # on the client's threads
            with self._lock:
                self._inbox.append(message)
                if self._scheduled:
                    return
                self._scheduled = True
            loop.call_soon_threadsafe(self._drain)

        self._future = self._subscriber.subscribe(self._subscription, callback,
                                                  flow_control=self._flow)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._inbox:
                    self._scheduled = False
                    return
                batch = list(self._inbox)
                self._inbox.clear()
            for message in batch:
                self._handler(message)

    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    def failure(self) -> BaseException | None:
        if self._future is None or not self._future.done() or self._future.cancelled():
            return None
        return self._future.exception()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop pulling, then handle what was already handed over."""
        if self._future is not None:
            self._future.cancel()
            with contextlib.suppress(Exception):  # cancelled or failed: both mean stopped
                await asyncio.wait_for(asyncio.to_thread(self._future.result), timeout)
        if self._handler is not None:
            self._drain()
