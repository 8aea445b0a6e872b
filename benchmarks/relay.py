"""A daemon that does nothing: the floor of a signal's path through the emulator.

Used by `pipeline.py` for the two-hop floor of the latency phase. It runs the daemon's own
Pub/Sub adapters, `OrderConsumer` in (the same streams) and `TopicPublisher` out, and
republishes every message as it arrives, then acks it: no store, no broker, no validation.
What the daemon adds to a signal's latency is its latency minus this.

    python benchmarks/relay.py SUBSCRIPTION TOPIC STREAMS   (PUBSUB_EMULATOR_HOST set)
"""

from __future__ import annotations

import asyncio
import signal
import sys

from google.cloud import pubsub_v1

from execution_service.adapters.publisher import TopicPublisher
from execution_service.adapters.pubsub import OrderConsumer, make_publisher


async def relay(subscription: str, topic: str, streams: int) -> None:
    # the daemon's setting; relayed signals carry no signal_id attribute: none waits for another
    publisher = TopicPublisher(make_publisher(), topic, ordered_by="signal_id")
    subscriber = pubsub_v1.SubscriberClient()
    consumer = OrderConsumer(subscriber, subscription, 200, streams)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def handle(message) -> None:
        publisher.send([(message.data, dict(message.attributes))], lambda _outcomes: None)
        message.ack()

    consumer.start(loop, handle)
    print("relaying", flush=True)
    await stop.wait()
    await consumer.stop()
    subscriber.close()


if __name__ == "__main__":
    asyncio.run(relay(sys.argv[1], sys.argv[2], int(sys.argv[3])))
