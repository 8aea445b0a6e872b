"""The Pub/Sub adapters' own logic with a fake transport: batches coalesced into Publish
requests off the event loop, outcomes per message, and fairness on the event loop. (The
real client against the emulator: tests/integration.)"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import pytest

from execution_service.adapters.publisher import TopicPublisher
from execution_service.adapters.pubsub import OrderConsumer
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.asyncio


class FakePublishRequests:
    """One Publish request per call, like the generated client's `publish`: it raises when
    Pub/Sub refuses the request (`refuse_when` is in one of its messages)."""

    def __init__(self, refuse_when: bytes | None = None, hang_when: bytes | None = None,
                 hold_when: bytes | None = None):
        self.refuse_when, self.hang_when, self.hold_when = refuse_when, hang_when, hold_when
        self.released = threading.Event()  # a request holding `hold_when` answers when set
        self.requests: list[list[bytes]] = []
        self.answered: list[list[bytes]] = []
        self.log: list[tuple[str, bytes]] = []  # ("asked" | "answered", message), in order
        self.threads: set[str] = set()

    def __call__(self, *, request, timeout: float):
        self.threads.add(threading.current_thread().name)
        assert request.topic == "projects/p/topics/confirmations"
        data = [m.data for m in request.messages]
        self.requests.append(data)
        self.log.extend(("asked", d) for d in data)
        if self.hang_when in data:
            time.sleep(timeout + 2)
        if self.hold_when in data:
            assert self.released.wait(30), "the test never released the held request"
        self.answered.append(data)
        self.log.extend(("answered", d) for d in data)
        if self.refuse_when in data:
            raise ConnectionError("refused (test)")


def publisher_with(requests: FakePublishRequests, timeout: float = 10.0,
                   ordered_by: str | None = None) -> TopicPublisher:
    return TopicPublisher(None, "projects/p/topics/confirmations", timeout,
                          publish_request=requests, ordered_by=ordered_by)


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
    assert requests.threads and all(name.startswith("publish-confirmations")
                                    for name in requests.threads)


async def test_given_no_answer_then_the_batch_times_out_instead_of_hanging():
    requests = FakePublishRequests(hang_when=b"lost")
    outcomes = await send(publisher_with(requests, timeout=0.1), [(b"ok", {}), (b"lost", {})])
    assert all(isinstance(o, TimeoutError) for o in outcomes)


async def test_given_answered_batches_then_no_timeout_stays_scheduled_on_the_loop():
    """Given many batches Pub/Sub answered, when they are done, then none of their timeouts is
    still pending (each held its messages and a timer for the whole timeout before)."""
    loop = asyncio.get_running_loop()
    publisher = publisher_with(FakePublishRequests(), timeout=60.0)
    for n in range(20):
        assert await send(publisher, [(str(n).encode(), {})]) == [None]
    pending = [h for h in loop._scheduled if not h.cancelled() and h.when() > loop.time() + 30]
    assert pending == []


async def test_given_a_batch_that_timed_out_then_its_late_answer_is_not_reported_again():
    """Given a batch whose answer comes after its timeout, when the answer comes (a later batch
    without an order key is sent only after it, and reported after it), then the batch was
    reported once: as timed out."""
    requests = FakePublishRequests(hold_when=b"late")
    publisher = publisher_with(requests, timeout=0.1)
    reports: list = []
    timed_out = asyncio.get_running_loop().create_future()

    def on_done(outcomes):
        reports.append(outcomes)
        if not timed_out.done():
            timed_out.set_result(None)

    publisher.send([(b"late", {})], on_done)
    await asyncio.wait_for(timed_out, 5)
    requests.released.set()
    assert await send(publisher, [(b"next", {})]) == [None]
    assert requests.answered == [[b"late"], [b"next"]]
    assert len(reports) == 1 and isinstance(reports[0][0], TimeoutError)


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


def signal_message(signal_id: str, status: str) -> tuple[bytes, dict[str, str]]:
    return f"{signal_id}:{status}".encode(), {"signal_id": signal_id, "status": status}


async def with_first_held(ordered_by: str | None = "signal_id",
                          first: tuple = signal_message("a", "SUBMITTED")):
    """A publisher whose first request (`first`) Pub/Sub holds until `requests.released`;
    returns (requests, publisher, the first batch's answer), once that request is out."""
    requests = FakePublishRequests(hold_when=first[0])
    publisher = publisher_with(requests, ordered_by=ordered_by)
    answer = sent(publisher, [first])
    await eventually(lambda: requests.requests, 30, "the first request to go out")
    return requests, publisher, answer


def sent(publisher: TopicPublisher, messages) -> asyncio.Future:
    answer = asyncio.get_running_loop().create_future()
    publisher.send(messages, answer.set_result)
    return answer


async def test_given_a_request_still_out_then_another_signals_message_does_not_wait_for_it():
    """Given ordered by signal and signal a's request held by Pub/Sub, when signal b's
    confirmation is sent, then it is requested and accepted while a's is still out."""
    requests, publisher, held = await with_first_held()
    assert await send(publisher, [signal_message("b", "FILLED")]) == [None]
    assert not held.done()
    requests.released.set()
    assert await asyncio.wait_for(held, 10) == [None]


async def test_given_a_signals_request_still_out_then_its_next_message_waits_for_the_answer():
    """Given ordered by signal and a's SUBMITTED held by Pub/Sub, when a's FILLED is sent
    (and b's after it), then a's FILLED is asked for only after the SUBMITTED was answered:
    a's confirmations reach Pub/Sub in order."""
    requests, publisher, first = await with_first_held()
    answers = [first, sent(publisher, [signal_message("a", "FILLED")]),
               sent(publisher, [signal_message("b", "FILLED")])]
    requests.released.set()
    assert await asyncio.wait_for(asyncio.gather(*answers), 10) == [[None]] * 3
    log = requests.log
    assert log.index(("answered", b"a:SUBMITTED")) < log.index(("asked", b"a:FILLED"))


async def test_given_no_order_attribute_then_each_request_waits_for_the_one_before():
    """Given a publisher without `ordered_by` and its first request held, when another batch
    is sent, then it is asked for only after the first one was answered."""
    requests, publisher, first = await with_first_held(None, (b"first", {}))
    second = sent(publisher, [(b"second", {})])
    requests.released.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 10) == [[None], [None]]
    assert requests.log == [("asked", b"first"), ("answered", b"first"),
                            ("asked", b"second"), ("answered", b"second")]


async def test_given_every_slot_taken_then_what_is_queued_meanwhile_goes_in_one_request(
        monkeypatch):
    """Given one request at a time and the first one held, when three more batches are sent
    meanwhile, then they go out together in the next request once the first is answered."""
    monkeypatch.setattr(TopicPublisher, "REQUESTS_IN_FLIGHT", 1)
    requests, publisher, first = await with_first_held()
    answers = [first, *(sent(publisher, [signal_message(name, "FILLED")]) for name in "bcd")]
    requests.released.set()
    assert await asyncio.wait_for(asyncio.gather(*answers), 10) == [[None]] * 4
    assert requests.requests == [[b"a:SUBMITTED"], [b"b:FILLED", b"c:FILLED", b"d:FILLED"]]

class RefusingSenders:
    """Stands in for the sender threads once the interpreter is shutting down."""

    def submit(self, *args):
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def shutdown(self, wait: bool = True) -> None:
        pass


async def test_given_no_thread_can_take_a_request_then_its_messages_fail_and_nothing_is_stuck(
        monkeypatch):
    """Given one request at a time and the sender threads refusing work (interpreter
    shutdown), when a batch is sent, then each message fails with that error (the outbox keeps
    it to retry) and the slot is free: once threads take work again, the next batch goes."""
    monkeypatch.setattr(TopicPublisher, "REQUESTS_IN_FLIGHT", 1)
    requests = FakePublishRequests()
    publisher = publisher_with(requests, ordered_by="signal_id")
    publisher._senders = RefusingSenders()
    outcomes = await send(publisher, [signal_message("a", "FILLED")])
    assert [type(o) for o in outcomes] == [RuntimeError]
    publisher._senders = None
    assert await send(publisher, [signal_message("a", "FILLED")]) == [None]
    assert requests.requests == [[b"a:FILLED"]]
