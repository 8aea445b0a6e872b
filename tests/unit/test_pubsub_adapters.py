"""The Pub/Sub adapters' own logic with a fake transport: batches coalesced into Publish
requests off the event loop, outcomes per message, and fairness on the event loop. (The
real client against the emulator: tests/integration.)"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import pytest

from execution_service.adapters.pubsub import OrderConsumer, TopicPublisher
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.asyncio


class FakePublishRequests:
    """One Publish request per call, like the generated client's `publish`: it raises when
    Pub/Sub refuses the request (`refuse_when` is in one of its messages)."""

    def __init__(self, refuse_when: bytes | None = None, hang_when: bytes | None = None):
        self.refuse_when, self.hang_when = refuse_when, hang_when
        self.requests: list[list[bytes]] = []
        self.threads: set[str] = set()

    def __call__(self, *, request, retry, timeout: float):
        self.threads.add(threading.current_thread().name)
        assert request.topic == "projects/p/topics/confirmations"
        data = [m.data for m in request.messages]
        self.requests.append(data)
        if self.hang_when in data:
            time.sleep(timeout + 2)
        if self.refuse_when in data:
            raise ConnectionError("refused (test)")


def publisher_with(requests: FakePublishRequests, timeout: float = 10.0) -> TopicPublisher:
    return TopicPublisher(None, "projects/p/topics/confirmations", timeout,
                          publish_request=requests)


async def send(publisher: TopicPublisher, messages) -> list:
    done = asyncio.get_running_loop().create_future()
    publisher.send(messages, done.set_result)
    return await asyncio.wait_for(done, 5)


async def test_given_a_batch_then_one_request_and_one_outcome_per_message():
    requests = FakePublishRequests()
    outcomes = await send(publisher_with(requests), [(b"a", {"k": "1"}), (b"b", {})])
    assert outcomes == [None, None]
    assert requests.requests == [[b"a", b"b"]]


async def test_given_a_refused_request_then_each_of_its_messages_is_refused():
    requests = FakePublishRequests(refuse_when=b"b")
    outcomes = await send(publisher_with(requests), [(b"a", {}), (b"b", {})])
    assert all(isinstance(o, ConnectionError) for o in outcomes)


async def test_given_a_message_the_client_cannot_build_then_only_it_is_refused():
    requests = FakePublishRequests()
    outcomes = await send(publisher_with(requests), [(b"a", {}), (b"b", {"n": 1})])
    assert outcomes[0] is None and isinstance(outcomes[1], Exception)  # attributes are strings
    assert requests.requests == [[b"a"]]


async def queued_together(publisher: TopicPublisher, batches: list[list]) -> list:
    """Queue every batch before the worker starts, then let it run."""
    loop = asyncio.get_running_loop()
    answers = [loop.create_future() for _ in batches]
    for batch, answer in zip(batches, answers, strict=True):
        publisher._jobs.put((batch, lambda o, a=answer: loop.call_soon_threadsafe(a.set_result, o)))
    publisher._ensure_worker()
    return await asyncio.wait_for(asyncio.gather(*answers), 5)


async def test_given_batches_queued_together_then_they_share_one_request():
    requests = FakePublishRequests()
    outcomes = await queued_together(publisher_with(requests),
                                     [[(b"a", {})], [(b"b", {})], [(b"c", {})]])
    assert outcomes == [[None]] * 3
    assert requests.requests == [[b"a", b"b", b"c"]]


async def test_given_more_than_pub_subs_limit_queued_then_requests_stay_within_it():
    requests = FakePublishRequests()
    batches = [[(f"{n}-{i}".encode(), {}) for i in range(400)] for n in range(3)]
    outcomes = await queued_together(publisher_with(requests), batches)
    assert all(o is None for batch in outcomes for o in batch)
    assert [len(r) for r in requests.requests] == [800, 400]  # at most 1,000 per request
    assert [d for r in requests.requests for d in r] == [d for b in batches for d, _ in b]


async def test_given_requests_then_they_are_made_off_the_event_loop_thread():
    requests = FakePublishRequests()
    await send(publisher_with(requests), [(b"a", {})])
    assert requests.threads == {"publish-confirmations"}


async def test_given_no_answer_then_the_batch_times_out_instead_of_hanging():
    requests = FakePublishRequests(hang_when=b"lost")
    outcomes = await send(publisher_with(requests, timeout=0.1), [(b"ok", {}), (b"lost", {})])
    assert all(isinstance(o, TimeoutError) for o in outcomes)


async def test_given_the_worker_went_idle_then_the_next_batch_starts_it_again(monkeypatch):
    monkeypatch.setattr(TopicPublisher, "IDLE_SECONDS", 0.05)
    publisher = publisher_with(FakePublishRequests())
    assert await send(publisher, [(b"a", {})]) == [None]
    await eventually(lambda: publisher._worker is None, 30, "the idle worker to stop")
    assert await send(publisher, [(b"b", {})]) == [None]


# -- the consumer ------------------------------------------------------------------------------


class FakeSubscriber:
    def __init__(self) -> None:
        self.callbacks: list = []
        self.futures: list[Future] = []

    def subscribe(self, subscription: str, callback, flow_control=None) -> Future:
        self.callbacks.append(callback)
        self.futures.append(Future())
        return self.futures[-1]


class RecordingScheduler:
    """Stands in for the event loop's timer: records what `call_later` asked for, runs it when
    the test says so (no wall time involved)."""

    def __init__(self) -> None:
        self.delayed: list[tuple[float, object]] = []

    def call_later(self, delay: float, callback, *args) -> None:
        self.delayed.append((delay, lambda: callback(*args)))

    def run_delayed(self) -> None:
        for _, callback in sorted(self.delayed, key=lambda pair: pair[0]):
            callback()


async def test_given_several_streams_then_they_open_a_fraction_of_a_tick_apart():
    """Given four streams, when the consumer starts, then one opens at once and the others are
    scheduled a quarter tick apart; a failed stream means the consumer is not running."""
    subscriber, scheduler = FakeSubscriber(), RecordingScheduler()
    consumer = OrderConsumer(subscriber, "projects/p/subscriptions/s", 100, streams=4)
    consumer.start(scheduler, lambda message: None)
    assert len(subscriber.callbacks) == 1
    tick = OrderConsumer.TICK_SECONDS
    assert [delay for delay, _ in scheduler.delayed] == pytest.approx(
        [tick / 4, 2 * tick / 4, 3 * tick / 4])
    scheduler.run_delayed()
    assert len(subscriber.callbacks) == 4
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
    # it ran between batches while messages flowed (handling all at once gives none)
    assert len({n for n in other_work_at if 0 < n < 300}) >= 2
