"""Runs the real daemon (`execution-service run`) with its store calls counted and its own
share of each signal's latency timed.

Used by `benchmarks/pipeline.py --instrument`. Nothing in the service is changed: the
collection classes of mongomock (MONGODB_URI=mongomock://) and of litemongo's vendored
mongomock (the embedded store) are wrapped in this process only, and every top-level call
(one call = one round trip on a real MongoDB) is counted per (collection, method) with its
wall time. Nested calls made by the driver itself (find_one -> find, ...) are not counted.

Daemon-internal latency: the time from the moment the Pub/Sub client hands a message to the
daemon (`OrderConsumer`'s callback, on the client's thread) to the moment Pub/Sub accepted the
signal's FILLED confirmation (`TopicPublisher.send` heard back), per signal_id, in ms,
with the stages between (`STAGES`). It leaves out the emulator's two
deliveries, which the benchmark measures from outside.

Event-loop stalls: a task on the daemon's loop ticks every 5 ms; a watchdog thread samples the
main thread's stack every 10 ms while the loop has not ticked for more than 50 ms, and counts
the stacks (service frames and the leaf). This says what holds the loop when latency spikes.

On SIGUSR1 a snapshot is written to $BENCH_STORE_STATS (JSON), so the benchmark can take the
difference over its measured window.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict

METHODS = ("find_one", "find", "insert_one", "insert_many", "update_one", "update_many",
           "find_one_and_update", "replace_one", "count_documents", "aggregate",
           "delete_one", "delete_many", "create_index", "distinct")

_local = threading.local()
_lock = threading.Lock()
_stats: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
_arrivals: dict[str, float] = {}
_internal_ms: dict[str, float] = {}
_stages: dict[str, dict[str, float]] = defaultdict(dict)
STALL_SECONDS = 0.05
_loop_tick = [0.0]
_stall_stacks: Counter = Counter()
_stalls: list[float] = []  # length of each stall, seconds


def _wrap(cls, name: str) -> None:
    original = getattr(cls, name, None)
    if original is None or getattr(original, "_bench_counted", False):
        return

    def counted(self, *args, **kwargs):
        if getattr(_local, "depth", 0):
            return original(self, *args, **kwargs)
        _local.depth = 1
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            _local.depth = 0
            elapsed = time.perf_counter() - started
            with _lock:
                entry = _stats[(self.name, name)]
                entry[0] += 1
                entry[1] += elapsed

    counted._bench_counted = True  # type: ignore[attr-defined]
    counted.__name__ = name
    counted.__qualname__ = f"{cls.__name__}.{name}"
    setattr(cls, name, counted)


def install() -> None:
    """Count every store call (and position moves) from here on, in this process."""
    classes = []
    try:
        from mongomock.collection import Collection as MockCollection
        classes.append(MockCollection)
    except ImportError:
        pass
    try:
        from litemongo._vendor.mongomock.collection import Collection as LiteCollection
        classes.append(LiteCollection)
    except ImportError:
        pass
    for cls in classes:
        for name in METHODS:
            _wrap(cls, name)
    _install_position_count()


def _install_position_count() -> None:
    """Attempts to move a position, and those that lost a compare-and-set (conflicts), as
    ("position_book", "attempts"/"conflicts"): not store calls, reported apart."""
    from execution_service.service.positions import PositionBook

    original = PositionBook._try_apply

    def counted(self, *args, **kwargs):
        moved = original(self, *args, **kwargs)
        with _lock:
            _stats[("position_book", "attempts")][0] += 1
            if not moved:
                _stats[("position_book", "conflicts")][0] += 1
        return moved

    PositionBook._try_apply = counted


# A signal's timeline inside the daemon, ms after the Pub/Sub client's callback got it:
# handed (the event loop takes it up), claimed (the claim is durable, back on the loop),
# placing / placed (the broker call), recorded (the FILLED record written), publishing (handed
# to the publisher), sending (the publisher's thread starts the Publish request that carries
# it), accepted (Pub/Sub answered, back on the loop).
STAGES = ("handed", "claimed", "placing", "placed", "recorded", "publishing", "sending",
          "accepted")


def _stage(signal_id: str, stage: str) -> None:
    """The time (ms after the client's callback) a signal reached a stage, first time only."""
    arrived = _arrivals.get(signal_id)
    if arrived is not None:
        with _lock:
            _stages[signal_id].setdefault(stage, round((time.time() - arrived) * 1000, 3))


def _signal_id_of(message) -> str | None:
    try:
        signal_id = json.loads(message.data).get("signal_id")
    except (ValueError, AttributeError):
        return None
    return signal_id if isinstance(signal_id, str) else None


def _arrived(signal_id: str, at: float) -> None:
    _arrivals.setdefault(signal_id, at)
    with _lock:
        _stages[signal_id].setdefault("arrived_epoch", at)


def _accepted(signal_ids: list[str]) -> None:
    for signal_id in signal_ids:
        _stage(signal_id, "accepted")
        arrived = _arrivals.pop(signal_id, None)
        if arrived is not None:
            with _lock:
                _internal_ms[signal_id] = round((time.time() - arrived) * 1000, 3)


class _TimedSubscriber:
    """The subscriber client, its callbacks timed on the client's thread (the arrival)."""

    def __init__(self, subscriber):
        self._subscriber = subscriber

    def subscribe(self, subscription, callback, **kwargs):
        def timed(message):
            signal_id = _signal_id_of(message)
            if signal_id is not None:
                _arrived(signal_id, time.time())
            return callback(message)

        return self._subscriber.subscribe(subscription, timed, **kwargs)

    def __getattr__(self, name):
        return getattr(self._subscriber, name)


def _install_latency() -> None:
    _install_intake_timing()
    _install_path_timing()


def _install_intake_timing() -> None:
    """Arrival (the client's callback), hand-over to the loop, durable claim."""
    from execution_service.adapters import pubsub
    from execution_service.service.daemon import ExecutionDaemon

    original_start = pubsub.OrderConsumer.start
    original_on_message = ExecutionDaemon._on_message
    original_settle = ExecutionDaemon._settle

    def start(self, loop, handler):
        if not isinstance(self._subscriber, _TimedSubscriber):
            self._subscriber = _TimedSubscriber(self._subscriber)
        return original_start(self, loop, handler)

    def on_message(self, message):
        signal_id = _signal_id_of(message)
        if signal_id is not None:
            _stage(signal_id, "handed")
        return original_on_message(self, message)

    def settle(self, message, outcome):
        claim = outcome.track if outcome is not None else None
        if claim and claim.get("signal_id"):
            _stage(claim["signal_id"], "claimed")
        return original_settle(self, message, outcome)

    pubsub.OrderConsumer.start = start
    ExecutionDaemon._on_message = on_message
    ExecutionDaemon._settle = settle


def _install_path_timing() -> None:
    """The broker call, the FILLED record, the publish."""
    from brokers.mock import MockBroker
    from execution_service.adapters.publisher import TopicPublisher
    from execution_service.service.journal import OrderJournal

    original_send = TopicPublisher.send
    original_after_write = OrderJournal.after_write
    original_place = MockBroker.place_order

    async def place_order(self, request):
        _stage(request.signal_id, "placing")
        try:
            return await original_place(self, request)
        finally:
            _stage(request.signal_id, "placed")

    def after_write(self, doc, events, confirmations):
        if any(c.get("status") == "FILLED" for c in confirmations):
            _stage(doc["signal_id"], "recorded")
        return original_after_write(self, doc, events, confirmations)

    def send(self, messages, on_done):
        filled = [attributes.get("signal_id", "") for _payload, attributes in messages
                  if attributes.get("status") == "FILLED"]
        for signal_id in filled:
            _stage(signal_id, "publishing")

        def done(outcomes):
            _accepted(filled)
            on_done(outcomes)

        original_send(self, messages, done)

    TopicPublisher.send = send
    _install_request_timing()
    OrderJournal.after_write = after_write
    MockBroker.place_order = place_order


def _install_request_timing() -> None:
    """The publisher's thread starts the Publish request carrying a FILLED confirmation."""
    from execution_service.adapters.publisher import TopicPublisher

    original_request = TopicPublisher._request

    def request(self, messages, jobs, outcomes):
        for batch, _settle in jobs:
            for _payload, attributes in batch:
                if attributes.get("status") == "FILLED":
                    _stage(attributes.get("signal_id", ""), "sending")
        return original_request(self, messages, jobs, outcomes)

    TopicPublisher._request = request


def _stack_key(frame) -> str:
    # no source lines: reading them (linecache) would cost more than the sample is worth
    stack = traceback.StackSummary.extract(traceback.walk_stack(frame), lookup_lines=False)
    stack.reverse()
    mine = [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in stack
            if "/execution_service/" in f.filename or "/brokers/" in f.filename]
    leaf = stack[-1] if stack else None
    tail = f"{_short(leaf.filename)}:{leaf.lineno} {leaf.name}" if leaf else "?"
    return " > ".join(mine[-3:] + [tail])


def _short(filename: str) -> str:
    return "/".join(filename.split("/")[-2:])


def _watchdog(main_ident: int) -> None:
    stalled_since = None
    while True:
        time.sleep(0.01)
        tick = _loop_tick[0]
        if not tick:
            continue
        now = time.perf_counter()
        if now - tick > STALL_SECONDS:
            stalled_since = stalled_since or tick
            frame = sys._current_frames().get(main_ident)
            if frame is not None:
                key = _stack_key(frame)
                with _lock:
                    _stall_stacks[key] += 1
        elif stalled_since is not None:
            with _lock:
                _stalls.append(tick - stalled_since)
            stalled_since = None


async def _ticker() -> None:
    while True:
        _loop_tick[0] = time.perf_counter()
        await asyncio.sleep(0.005)


def _install_stall_watch() -> None:
    from execution_service.service.daemon import ExecutionDaemon

    original_run = ExecutionDaemon.run

    async def run(self, stop):
        ticker = asyncio.get_running_loop().create_task(_ticker(), name="bench-ticker")
        try:
            return await original_run(self, stop)
        finally:
            ticker.cancel()

    ExecutionDaemon.run = run
    threading.Thread(target=_watchdog, args=(threading.main_thread().ident,), daemon=True,
                     name="bench-stall-watchdog").start()


_gc_started = [0.0]
_gc_pauses: dict[int, list] = defaultdict(lambda: [0, 0.0, 0.0])  # generation -> n, s, max s


def _on_gc(phase: str, info: dict) -> None:
    """Every cyclic collection stops all threads of the daemon: counted per generation."""
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    elapsed = time.perf_counter() - _gc_started[0]
    entry = _gc_pauses[info["generation"]]
    entry[0] += 1
    entry[1] += elapsed
    entry[2] = max(entry[2], elapsed)


def gc_snapshot() -> dict:
    return {str(generation): {"count": n, "total_s": round(total, 4),
                              "max_ms": round(1000 * longest, 2)}
            for generation, (n, total, longest) in sorted(_gc_pauses.items())}


_store_jobs: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])


def _install_store_thread_timing() -> None:
    """Per kind of store-thread job (lane, the work's name): how many, time queued (submitted
    -> started) and time running, total and longest."""
    from execution_service.service.store_thread import StoreThread

    original_submit = StoreThread._submit

    async def submit(self, background, work, *args, **kwargs):
        if self.inline:
            return await original_submit(self, background, work, *args, **kwargs)
        name = getattr(work, "__qualname__", None) or type(work).__name__
        queued = time.perf_counter()

        def timed(*a, **kw):
            started = time.perf_counter()
            try:
                return work(*a, **kw)
            finally:
                ended = time.perf_counter()
                with _lock:
                    entry = _store_jobs[("background" if background else "order", name)]
                    entry[0] += 1
                    entry[1] += started - queued
                    entry[2] = max(entry[2], started - queued)
                    entry[3] += ended - started
                    entry[4] = max(entry[4], ended - started)

        return await original_submit(self, background, timed, *args, **kwargs)

    StoreThread._submit = submit


def store_jobs_snapshot() -> dict:
    with _lock:
        return {f"{lane}:{name}": {"count": n, "queued_s": round(queued, 4),
                                   "queued_max_ms": round(1000 * queued_max, 2),
                                   "run_s": round(run, 4), "run_max_ms": round(1000 * run_max, 2)}
                for (lane, name), (n, queued, queued_max, run, run_max) in _store_jobs.items()}


def stall_snapshot() -> dict:
    with _lock:
        stalls = sorted(_stalls)
        stacks = _stall_stacks.most_common(25)
    return {"count": len(stalls), "total_s": round(sum(stalls), 3),
            "max_ms": round(1000 * stalls[-1], 1) if stalls else None,
            "sampled_stacks": [[key, n] for key, n in stacks]}


def snapshot() -> dict:
    with _lock:
        return {f"{collection}.{method}": {"calls": calls, "seconds": round(seconds, 6)}
                for (collection, method), (calls, seconds) in _stats.items()}


def _dump(_signum=None, _frame=None) -> None:
    path = os.environ.get("BENCH_STORE_STATS")
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as out:
        with _lock:
            internal = dict(_internal_ms)
            stages = {signal_id: dict(times) for signal_id, times in _stages.items()}
        json.dump({"at": time.time(), "stats": snapshot(), "internal_ms": internal,
                   "stages_ms": stages,
                   "stalls": stall_snapshot(), "gc": gc_snapshot(),
                   "store_jobs": store_jobs_snapshot()}, out)
    os.replace(tmp, path)


def main() -> None:
    install()
    _install_latency()
    _install_store_thread_timing()
    _install_stall_watch()
    gc.callbacks.append(_on_gc)
    signal.signal(signal.SIGUSR1, _dump)
    sys.argv = ["execution-service", "run", *sys.argv[1:]]
    from execution_service.cli import main as cli_main

    try:
        cli_main()
    finally:
        _dump()


if __name__ == "__main__":
    main()
