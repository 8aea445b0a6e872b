"""The Pub/Sub adapters' own logic, with the client library's futures and a fake transport:
hand-over of batches, outcomes per message, and fairness on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import pytest

from execution_service.adapters.pubsub import OrderConsumer, TopicPublisher

pytestmark = pytest.mark.asyncio


class FakePublisherClient:
    """`publish` like the client library: a future per message, settled on another thread."""

    def __init__(self, refuse: set[bytes] = frozenset(), raise_on: set[bytes] = frozenset(),
                 never_answer: set[bytes] = frozenset()) -> None:
        self.refuse, self.raise_on, self.never_answer = refuse, raise_on, never_answer
        self.sent: list[bytes] = []
        self.threads: set[str] = set()

    def publish(self, topic: str, data: bytes, timeout: float, **attributes) -> Future:
        self.threads.add(threading.current_thread().name)
        if data in self.raise_on:
            raise ValueError("message too large (test)")
        future: Future = Future()
        self.sent.append(data)
        if data not in self.never_answer:
            error = ConnectionError("refused (test)") if data in self.refuse else None
            threading.Timer(0.01, lambda: future.set_exception(error) if error
                            else future.set_result("id")).start()
        return future


async def send(publisher: TopicPublisher, messages) -> list:
    done = asyncio.get_running_loop().create_future()
    publisher.send(messages, done.set_result)
    return await asyncio.wait_for(done, 5)


async def test_given_a_batch_then_one_outcome_per_message_in_order():
    client = FakePublisherClient(refuse={b"b"}, raise_on={b"c"})
    publisher = TopicPublisher(client, "projects/p/topics/t")
    outcomes = await send(publisher, [(b"a", {}), (b"b", {}), (b"c", {}), (b"d", {})])
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], ConnectionError)
    assert isinstance(outcomes[2], ValueError)  # refused by the client itself, not raised
    assert client.sent == [b"a", b"b", b"d"]


async def test_given_client_calls_then_they_are_made_off_the_event_loop_thread():
    client = FakePublisherClient()
    publisher = TopicPublisher(client, "projects/p/topics/confirmations")
    await send(publisher, [(b"a", {})])
    assert client.threads == {"publish-confirmations"}


async def test_given_no_answer_then_the_batch_times_out_instead_of_hanging():
    client = FakePublisherClient(never_answer={b"lost"})
    publisher = TopicPublisher(client, "projects/p/topics/t", timeout=0.1)
    outcomes = await send(publisher, [(b"ok", {}), (b"lost", {})])
    assert outcomes[0] is None and isinstance(outcomes[1], TimeoutError)


async def test_given_the_worker_went_idle_then_the_next_batch_starts_it_again(monkeypatch):
    monkeypatch.setattr(TopicPublisher, "IDLE_SECONDS", 0.05)
    publisher = TopicPublisher(FakePublisherClient(), "projects/p/topics/t")
    assert await send(publisher, [(b"a", {})]) == [None]
    deadline = time.monotonic() + 2
    while publisher._worker is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert publisher._worker is None
    assert await send(publisher, [(b"b", {})]) == [None]


# -- the consumer ------------------------------------------------------------------------------


class FakeSubscriber:
    def __init__(self) -> None:
        self.callbacks: list = []
        self.futures: list[Future] = []
        self.opened_at: list[float] = []

    def subscribe(self, subscription: str, callback, flow_control=None) -> Future:
        self.callbacks.append(callback)
        self.opened_at.append(time.monotonic())
        self.futures.append(Future())
        return self.futures[-1]


async def test_given_several_streams_then_they_open_a_fraction_of_a_tick_apart():
    subscriber = FakeSubscriber()
    consumer = OrderConsumer(subscriber, "projects/p/subscriptions/s", 100, streams=4)
    consumer.start(asyncio.get_running_loop(), lambda message: None)
    await asyncio.sleep(0.1)
    assert len(subscriber.callbacks) == 4
    gaps = [b - a for a, b in zip(subscriber.opened_at, subscriber.opened_at[1:], strict=False)]
    assert all(gap >= 0.005 for gap in gaps)  # 50 ms / 4 apart, not all at once
    assert consumer.running
    subscriber.futures[2].set_exception(RuntimeError("stream failed (test)"))
    assert not consumer.running and isinstance(consumer.failure(), RuntimeError)


async def test_given_messages_keep_arriving_then_other_work_runs_between_batches():
    subscriber = FakeSubscriber()
    consumer = OrderConsumer(subscriber, "projects/p/subscriptions/s", 100)
    handled: list[int] = []
    other_work_at: list[int] = []

    def handler(message: int) -> None:
        handled.append(message)
        time.sleep(0.002)  # a claim's worth of work

    consumer.start(asyncio.get_running_loop(), handler)
    callback = subscriber.callbacks[0]
    feeding = threading.Thread(target=lambda: [callback(n) or time.sleep(0.0005)
                                               for n in range(300)])
    feeding.start()

    async def other_work() -> None:
        while len(handled) < 300:
            other_work_at.append(len(handled))
            await asyncio.sleep(0)

    await asyncio.wait_for(other_work(), 10)
    feeding.join()
    assert handled == list(range(300))
    assert len({n for n in other_work_at if 0 < n < 300}) >= 5  # ran while messages flowed
