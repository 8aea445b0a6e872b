"""Publishing to Pub/Sub from the event loop: `TopicPublisher` (confirmations, dead letters)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from functools import partial

import grpc
from google.api_core import exceptions as api_exceptions
from google.api_core.gapic_v1 import routing_header
from google.cloud import pubsub_v1
from google.pubsub_v1 import types as gapic_types

MAX_MESSAGES_PER_REQUEST = 1000  # Pub/Sub's limit per Publish request
# A Publish request built as plain protobuf (the generated client's own types) and sent as is
# (`publish_rpc`): building it through the proto-plus wrappers cost more CPU than the RPC (a
# request of two messages, against the emulator: 564 us of CPU that way, 283 us this way).
_PubsubMessage = gapic_types.PubsubMessage.pb()
_PublishRequest = gapic_types.PublishRequest.pb()


def publish_rpc(client: pubsub_v1.PublisherClient) -> Callable:
    """One Publish RPC on the client's own gRPC channel (its transport: credentials, endpoint,
    emulator), called with the plain protobuf request. Of the generated client's per-call
    wrappers (retry, timeout, error mapping, routing header) we need only the last two, kept
    here; the rest cost ~200 us of CPU a request against the emulator (546-675 -> 327-404 us)."""
    rpc = client.transport.publish

    def publish(*, request, timeout: float) -> None:
        try:
            rpc(request, timeout=timeout,
                metadata=(routing_header.to_grpc_metadata((("topic", request.topic),)),))
        except grpc.RpcError as e:  # as the generated client raises it
            raise api_exceptions.from_grpc_error(e) from e

    return publish


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
    """Publishes to one topic; `publish` raises when Pub/Sub refuses (the caller retries).

    `send` hands batches to one worker thread, which sends whatever is queued as one Publish
    request: the library's batching publisher starts two threads per batch, and waiting for
    those starts stalled the event loop for up to ~180 ms on a busy machine. Up to
    REQUESTS_IN_FLIGHT requests are out at once, each made on a thread of its own, so a message
    does not wait for the answer to an unrelated earlier request; messages with the same
    `ordered_by` attribute (a signal's confirmations) keep their order: a request carrying one
    is made once every earlier request carrying it has been answered. Without `ordered_by`
    every request waits for the one before. While every slot is taken, what is queued goes in
    the next request. The worker exits when idle and is started again on demand.
    """

    IDLE_SECONDS = 10.0
    REQUESTS_IN_FLIGHT = 4

    def __init__(self, client: pubsub_v1.PublisherClient, topic: str, timeout: float = 10.0,
                 publish_request: Callable | None = None, ordered_by: str | None = None):
        self._client = client
        self._topic = topic
        self._timeout = timeout
        self._publish_request = publish_request or publish_rpc(client)
        self._ordered_by = ordered_by
        self._name = f"publish-{topic.rsplit('/', 1)[-1]}"
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.REQUESTS_IN_FLIGHT)
        self._senders: ThreadPoolExecutor | None = None  # the worker's own
        self._last_request: dict[object, Future] = {}  # order key -> last request carrying it
        self._order_lock = threading.Lock()

    async def publish(self, payload: bytes, attributes: dict[str, str]) -> None:
        future = self._client.publish(self._topic, payload, timeout=self._timeout, **attributes)
        await asyncio.wait_for(await_future(future), self._timeout)

    def send(self, messages: list[tuple[bytes, dict[str, str]]],
             on_done: Callable[[list[BaseException | None]], None]) -> None:
        """Publish a batch without waiting; `on_done(outcomes)` runs on the event loop once
        Pub/Sub has answered for all of it (or the timeout passed), one outcome per message
        (None: accepted)."""
        if not messages:
            on_done([])
            return
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def finish(outcomes: list[BaseException | None]) -> None:  # on the loop
            nonlocal timer
            if timer is not None and not timer.cancelled():
                timer.cancel()  # answered or timed out: the other one does nothing
                timer = None
                on_done(outcomes)

        def settle(outcomes: list[BaseException | None]) -> None:  # on a publisher thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(finish, outcomes)

        def time_out() -> None:
            finish([TimeoutError("publish timed out")] * len(messages))

        timer = loop.call_later(self._timeout + 1.0, time_out)
        self._jobs.put((messages, settle))
        self._ensure_worker()

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True, name=self._name)
                self._worker.start()

    def _work(self) -> None:
        carried = None  # a job that did not fit into the last request
        while True:
            if carried is not None:
                jobs, carried = [carried], None
            else:
                try:
                    jobs = [self._jobs.get(timeout=self.IDLE_SECONDS)]
                except queue.Empty:
                    with self._worker_lock:
                        if self._jobs.empty():
                            self._worker = None
                            if self._senders is not None:
                                self._senders.shutdown(wait=False)  # requests out finish
                                self._senders = None
                            return
                    continue
            self._slots.acquire()  # meanwhile, what is queued waits to go in this request
            count = len(jobs[0][0])
            while count < MAX_MESSAGES_PER_REQUEST:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if count + len(job[0]) > MAX_MESSAGES_PER_REQUEST:
                    carried = job
                    break
                jobs.append(job)
                count += len(job[0])
            self._publish(jobs)

    def _publish(self, jobs: list) -> None:
        """Everything queued meanwhile in one Publish request (the client library's batcher
        would start two threads per batch), made on a sender thread once every earlier request
        it must follow has been answered; the request's outcome is each message's."""
        outcomes = [[None] * len(messages) for messages, _ in jobs]
        request, keys = [], set()
        for job_outcomes, (messages, _) in zip(outcomes, jobs, strict=True):
            for index, (payload, attributes) in enumerate(messages):
                try:
                    request.append(_PubsubMessage(data=payload, attributes=attributes))
                except Exception as e:  # refused before anything was sent
                    job_outcomes[index] = e
                else:
                    keys.add(None if self._ordered_by is None
                             else attributes.get(self._ordered_by, object()))
        if not request:
            self._answer(jobs, outcomes)
            return
        with self._order_lock:
            earlier = [self._last_request[key] for key in keys if key in self._last_request]
        futures_wait(earlier)
        if self._senders is None:
            self._senders = ThreadPoolExecutor(self.REQUESTS_IN_FLIGHT, self._name)
        try:
            sent = self._senders.submit(self._request, request, jobs, outcomes)
        except RuntimeError as e:  # the interpreter is shutting down: nothing is sent
            self._answer(jobs, outcomes, e)
            return
        with self._order_lock:
            self._last_request.update(dict.fromkeys(keys, sent))
        sent.add_done_callback(partial(self._forget, keys))

    def _request(self, request: list, jobs: list, outcomes: list[list]) -> None:
        error = None
        try:
            # no retry here: the outbox retries what was refused, with its back-off
            self._publish_request(request=_PublishRequest(topic=self._topic, messages=request),
                                  timeout=self._timeout)
        except Exception as e:
            error = e
        self._answer(jobs, outcomes, error)

    def _answer(self, jobs: list, outcomes: list[list], error: BaseException | None = None
                ) -> None:
        """Each job's outcomes (`error` for every message not refused already); the request's
        slot is free again."""
        try:
            for job_outcomes, (_, settle) in zip(outcomes, jobs, strict=True):
                if error is not None:
                    job_outcomes[:] = [o if o is not None else error for o in job_outcomes]
                settle(job_outcomes)
        finally:
            self._slots.release()

    def _forget(self, keys: set, sent: Future) -> None:
        with self._order_lock:
            for key in keys:
                if self._last_request.get(key) is sent:
                    del self._last_request[key]


def confirmations_publisher(client: pubsub_v1.PublisherClient, topic: str) -> TopicPublisher:
    """execution-confirmations: a signal's confirmations in order, no signal waiting for
    another's."""
    return TopicPublisher(client, topic, ordered_by="signal_id")
