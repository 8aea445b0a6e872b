"""Google Cloud Pub/Sub: the trading-orders consumer, the client publisher, and topic setup
(our own publisher for confirmations: publisher.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

logger = logging.getLogger(__name__)
# The subscription's settings and the consumer's, from one place so they agree. A held message
# (store outage: service/held_messages.py) keeps its lease for MAX_LEASE_SECONDS, renewed every
# ACK_DEADLINE_SECONDS; then Pub/Sub redelivers it, spending one of MAX_DELIVERY_ATTEMPTS.
MAX_DELIVERY_ATTEMPTS = 5
ACK_DEADLINE_SECONDS = 10
MAX_LEASE_SECONDS = 3600
RETENTION_SECONDS = 7 * 24 * 3600  # undelivered messages wait this long (Pub/Sub's maximum)


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
         "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
         "message_retention_duration": duration_pb2.Duration(seconds=RETENTION_SECONDS),
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


def subscription_disagreements(names: PubSubNames, subscriber) -> list[str]:
    """How the existing trading-orders subscription differs from what the daemon expects."""
    found = subscriber.get_subscription(subscription=names.orders_subscription)
    expected = {"ack_deadline_seconds": ACK_DEADLINE_SECONDS,
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
                "message_retention_seconds": RETENTION_SECONDS}
    actual = {"ack_deadline_seconds": found.ack_deadline_seconds,
              "max_delivery_attempts": found.dead_letter_policy.max_delivery_attempts or None,
              "message_retention_seconds": int(found.message_retention_duration.total_seconds())}
    return [f"{name} is {actual[name]}, the daemon expects {value}"
            for name, value in expected.items() if actual[name] != value]


class OrderConsumer:
    """Streaming pull on trading-orders-sub over `streams` parallel streams; messages are
    handed to the event loop in batches (one wake-up for whatever arrived meanwhile).

    `handler(message)` runs on the event loop and acks or nacks the message itself.
    The emulator answers each stream on a 50 ms tick, so one stream adds 0-50 ms to every
    message; streams opened a fraction of a tick apart take turns, and the wait shrinks.
    """

    TICK_SECONDS = 0.05

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, subscription: str,
                 max_in_flight: int, streams: int = 1):
        self._subscriber = subscriber
        self._subscription = subscription
        self._streams = max(1, streams)
        # Short lease extensions: what a crashed process held comes back to the others within
        # ~10 s (with the 60 s default the emulator held it for minutes).
        self._flow = pubsub_v1.types.FlowControl(
            max_messages=max(1, -(-max_in_flight // self._streams)),
            max_duration_per_lease_extension=ACK_DEADLINE_SECONDS,
            max_lease_duration=MAX_LEASE_SECONDS)
        self._futures: list = []
        self._stopped = False
        self._inbox: deque = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._handler: Callable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, handler: Callable) -> None:
        self._handler = handler
        self._loop = loop

        def callback(message) -> None:  # on the client's threads
            with self._lock:
                self._inbox.append(message)
                if self._scheduled:
                    return
                self._scheduled = True
            loop.call_soon_threadsafe(self._drain)

        def open_stream() -> None:
            if not self._stopped:
                self._futures.append(self._subscriber.subscribe(
                    self._subscription, callback, flow_control=self._flow))

        open_stream()
        for n in range(1, self._streams):
            loop.call_later(n * self.TICK_SECONDS / self._streams, open_stream)

    def _drain(self) -> None:
        """Handle what has arrived, then let the loop's other work (placing, publishing) run
        before the next batch: a steady stream of messages must not starve it."""
        with self._lock:
            batch = list(self._inbox)
            self._inbox.clear()
        for message in batch:
            self._handler(message)
        with self._lock:
            if not self._inbox:
                self._scheduled = False
                return
        self._loop.call_soon(self._drain)

    @property
    def running(self) -> bool:
        return bool(self._futures) and not any(future.done() for future in self._futures)

    def failure(self) -> BaseException | None:
        for future in self._futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                return future.exception()
        return None

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop pulling, then handle what was already handed over."""
        self._stopped = True
        for future in self._futures:
            future.cancel()
        for future in self._futures:
            with contextlib.suppress(Exception):  # cancelled or failed: both mean stopped
                await asyncio.wait_for(asyncio.to_thread(future.result), timeout)
        if self._handler is not None:
            self._drain()
