"""Test-side Pub/Sub helpers over the real client and the real emulator."""

from __future__ import annotations

import json
import time
import uuid

from google.cloud import pubsub_v1

from execution_service.adapters.pubsub import PubSubNames, setup_pubsub
from execution_service.domain.orders import TERMINAL_STATUSES


class Names(PubSubNames):
    def __init__(self, project: str):
        class _S:
            GOOGLE_CLOUD_PROJECT = project
            TRADING_ORDERS_TOPIC = "trading-orders"
            TRADING_ORDERS_SUBSCRIPTION = "trading-orders-sub"
            EXECUTION_CONFIRMATIONS_TOPIC = "execution-confirmations"
            DEAD_LETTER_TOPIC = "trading-orders-dead-letter"

        super().__init__(_S)


class PubSubRig:
    """Creates the topics, listens to confirmations and dead letters, publishes orders."""

    def __init__(self, project: str):
        self.names = Names(project)
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        setup_pubsub(self.names, self.publisher, self.subscriber)
        self.confirmations_sub = f"projects/{project}/subscriptions/test-confirmations"
        self.subscriber.create_subscription(name=self.confirmations_sub,
                                            topic=self.names.confirmations_topic)
        self.confirmations: list[dict] = []
        self.confirmation_attributes: list[dict] = []

    def publish(self, body: bytes | dict | str) -> str:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        return self.publisher.publish(self.names.orders_topic, body).result(timeout=30)

    def pull(self, subscription: str, max_messages: int = 500) -> list:
        response = self.subscriber.pull(subscription=subscription, max_messages=max_messages,
                                        timeout=5, return_immediately=True)
        if response.received_messages:
            self.subscriber.acknowledge(subscription=subscription,
                                        ack_ids=[m.ack_id for m in response.received_messages])
        return [m.message for m in response.received_messages]

    def collect_confirmations(self) -> list[dict]:
        for message in self.pull(self.confirmations_sub):
            self.confirmations.append(json.loads(message.data))
            self.confirmation_attributes.append(dict(message.attributes))
        return self.confirmations

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.collect_confirmations()
            result = predicate()
            if result:
                return result
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; confirmations: "
                             f"{[(c['signal_id'], c['status']) for c in self.confirmations]}")

    def statuses(self, signal_id: str) -> list[str]:
        return [c["status"] for c in sorted(self.confirmations, key=lambda c: c["sequence"])
                if c["signal_id"] == signal_id]

    def terminal(self, signal_id: str) -> dict | None:
        for c in self.confirmations:
            if c["signal_id"] == signal_id and c["status"] in TERMINAL_STATUSES:
                return c
        return None

    def dead_letters(self) -> list:
        return self.pull(self.names.dead_letter_subscription)

    def close(self) -> None:
        self.subscriber.close()


def market_signal(defaults: dict, **fields) -> dict:
    """A valid MARKET BUY 10 SPY @ 100 signal with a fresh id; `defaults` (account_id,
    strategy_name…) then `fields` override."""
    body = {"signal_id": f"sig_{uuid.uuid4().hex[:12]}", "order_type": "MARKET",
            "symbol": "SPY", "side": "BUY", "quantity": 10, "reference_price": 100.0}
    return {**body, **defaults, **fields}
