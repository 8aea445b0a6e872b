"""Store work off the event loop: one dedicated thread runs it, and a store that hangs holds up
that thread, never the loop (heartbeats, Pub/Sub flow, Telegram and broker sockets go on).

Two lanes. `run` is the order path (claims, fills, the mock broker's ledger: a signal waits
for it), oldest signal first: work asked for by a task that said whose it is (`on_behalf_of`,
the tracker's task per order, with the time its signal was claimed) goes before the work of
younger signals (by at most OLDEST_FIRST_SECONDS: a resting order polled for hours does
not shut out new ones), and everything else in submission order. So a burst of signals goes
through one signal after another (claim, place, fill recorded, published) instead of stage by stage,
and after a stall the oldest signals come out first. One task's calls are awaited one by one,
so a record's writes keep their order.

`run_background` is upkeep no signal waits for (the outbox's marks and signal_store rows,
heartbeats, leases, halt polls, rescans), in submission order: taken only when no order-path
work is queued, or once it has waited BACKGROUND_MAX_WAIT (and then at most every other
call, so when every call is slow, in a store outage, neither lane starves the other): a burst
of signals does not queue behind upkeep, and upkeep is never starved. Long upkeep (the
outbox's marks, up to 50 signals' worth a call) stops early when order-path work is waiting
(`order_path_waiting`). The upkeep writes touch records only in ways that do not depend on
their order against the order path (`$max` marks, lease dates).

Results go back to the loop in batches: one wake-up of the loop for whatever finished while
it was busy, not one per call.

With a store that commits in batches (`batches`, the embedded store), the calls queued when
one starts (and those queued while it runs, up to BATCH_MAX_CALLS or BATCH_MAX_SECONDS) run
as one batch, in the order above, and are committed together: each result is handed back only
after the commit, so nothing that depends on a write leaves the process before it is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

from execution_service.errors import StoreUnavailable
from execution_service.service.ports import StoreBatches

T = TypeVar("T")
ANSWER_SECONDS = 5.0  # how long someone at a door (HTTP, Telegram) waits for the store
BACKGROUND_MAX_WAIT = 0.05  # seconds upkeep may wait behind order-path work
OLDEST_FIRST_SECONDS = 1.0  # how far an older signal's work may go ahead of newer work
BATCH_MAX_CALLS = 64  # calls committed together at most (a batching store)
BATCH_MAX_SECONDS = 0.005  # no call joins a batch that has run this long: results wait for it
_SIGNAL_SINCE: ContextVar[float | None] = ContextVar("store_work_signal_since", default=None)


def on_behalf_of(since: float) -> None:
    """The current task's store work from now on is for a signal claimed at `since` (epoch
    seconds): the order path runs the oldest signal's work first. Set inside the task (a
    task's context is its own)."""
    _SIGNAL_SINCE.set(since)


class StoreThread:
    """`inline`: run the work in place instead (tests of one service). `batches`: the store's
    batches, committed a batch of calls at a time."""

    def __init__(self, inline: bool = False, answer_seconds: float = ANSWER_SECONDS,
                 background_max_wait: float = BACKGROUND_MAX_WAIT,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 batches: StoreBatches | None = None) -> None:
        self._inline = inline
        self._batches = batches
        self.answer_seconds = answer_seconds
        self._background_max_wait = background_max_wait
        self._clock = clock
        self._wall_clock = wall_clock  # epoch seconds, as `on_behalf_of` is given
        self._order_path: list = []  # heap of (signal's time or submission time, n, job)
        self._submitted = itertools.count()
        self._background: deque = deque()  # (queued at, job)
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_was_background = False
        self._busy_since: float | None = None  # read from the metrics thread too
        # per event loop: (asyncio future, result, error) not yet handed back
        self._finished: dict[asyncio.AbstractEventLoop, list] = {}
        self._finished_lock = threading.Lock()

    @property
    def inline(self) -> bool:
        return self._inline

    async def run(self, work: Callable[..., T], *args, **kwargs) -> T:
        """Order-path store work: the oldest signal's first (`on_behalf_of`), ahead of
        upkeep that has not waited its maximum."""
        return await self._submit(False, work, *args, **kwargs)

    async def run_background(self, work: Callable[..., T], *args, **kwargs) -> T:
        """Upkeep: runs when no order-path work is queued, or once it has waited
        BACKGROUND_MAX_WAIT (at most every other call)."""
        return await self._submit(True, work, *args, **kwargs)

    async def _submit(self, background: bool, work: Callable[..., T], *args, **kwargs) -> T:
        call = functools.partial(self._timed, work, *args, **kwargs)
        if self._inline:
            return call()
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        job = (call, waiter, loop)
        with self._wake:
            if self._closed:
                raise RuntimeError("the store thread is closed")
            if background:
                self._background.append((self._clock(), job))
            else:
                now, since = self._wall_clock(), _SIGNAL_SINCE.get()
                key = now if since is None else max(since, now - OLDEST_FIRST_SECONDS)
                heapq.heappush(self._order_path, (key, next(self._submitted), job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True, name="store")
                self._thread.start()
            self._wake.notify()
        return await waiter

    def _next_job(self, wait: bool = True):
        """Under the lock: the job to run now, None when closed (or, unless `wait`, when none
        is queued)."""
        while True:
            if self._closed:
                return None
            if self._background and (not self._order_path or self._background_due()):
                self._last_was_background = True
                return self._background.popleft()[1]
            if self._order_path:
                self._last_was_background = False
                return heapq.heappop(self._order_path)[2]
            if not wait:
                return None
            self._wake.wait()

    def order_path_waiting(self) -> bool:
        """Is order-path work queued? (Upkeep running on the store thread asks, to stop
        early and let it in: the store thread cannot be preempted.)"""
        return bool(self._order_path)

    def _background_due(self) -> bool:
        """Upkeep has waited its maximum, and did not take the last turn."""
        return (not self._last_was_background
                and self._clock() - self._background[0][0] >= self._background_max_wait)

    def _work(self) -> None:
        while True:
            with self._wake:
                job = self._next_job()
            if job is None:
                return
            if self._batches is not None:
                self._run_batch(job, self._batches)
                continue
            call, waiter, loop = job
            if waiter.cancelled():  # its caller gave up before it ran (read racily: harmless)
                continue
            try:
                outcome = (call(), None)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                outcome = (None, e)
            self._hand_back(loop, waiter, *outcome)

    def _run_batch(self, job, batches: StoreBatches) -> None:
        """`job` and those queued behind it, committed together; then every result."""
        ran: list = []
        started = self._clock()
        try:
            with batches.batch() as batch:
                while job is not None:
                    if not job[1].cancelled():
                        batch.run(job[0])
                        ran.append(job)
                    if len(ran) >= BATCH_MAX_CALLS or \
                            self._clock() - started >= BATCH_MAX_SECONDS:
                        break
                    with self._wake:
                        job = self._next_job(wait=False)
                self._busy_since = time.monotonic()  # the commit: a hung disk shows as a stall
            outcomes = batch.outcomes()
        except Exception as e:  # noqa: BLE001 - the thread goes on; each caller hears of it
            outcomes = [(None, e)] * len(ran)
        finally:
            self._busy_since = None
        for (_call, waiter, loop), outcome in zip(ran, outcomes, strict=True):
            self._hand_back(loop, waiter, *outcome)

    def _hand_back(self, loop: asyncio.AbstractEventLoop, waiter, result, error) -> None:
        with self._finished_lock:
            finished = self._finished.setdefault(loop, [])
            finished.append((waiter, result, error))
            if len(finished) > 1:
                return  # a wake-up is already on its way; it takes this one too
        try:
            loop.call_soon_threadsafe(self._settle_finished, loop)
        except RuntimeError:  # the loop has closed: nobody waits
            with self._finished_lock:
                self._finished.pop(loop, None)

    def _settle_finished(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: every result that came back to it since its last wake-up."""
        with self._finished_lock:
            finished = self._finished.pop(loop, [])
        for waiter, result, error in finished:
            if waiter.done():
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(result)

    async def answer(self, work: Callable[..., T], *args) -> T:
        """`run` for someone waiting at a door (HTTP, Telegram): StoreUnavailable after
        `answer_seconds` (a call still queued then is dropped; one already running finishes
        unseen)."""
        try:
            return await asyncio.wait_for(self.run(work, *args), self.answer_seconds)
        except TimeoutError:
            raise self.no_answer() from None

    def no_answer(self, detail: str = "") -> StoreUnavailable:
        return StoreUnavailable(f"store unavailable: no answer within "
                                f"{self.answer_seconds:g}s{detail}")

    def _timed(self, work: Callable[..., T], *args, **kwargs) -> T:
        self._busy_since = time.monotonic()
        try:
            return work(*args, **kwargs)
        finally:
            self._busy_since = None

    def stalled_for(self) -> float:
        """Seconds the store call now running has taken (0 when none runs)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        """Queued work is dropped (its callers are cancelled); a call running finishes."""
        with self._wake:
            self._closed = True
            dropped = [job for *_, job in self._order_path] + [job for _, job in self._background]
            self._order_path.clear()
            self._background.clear()
            self._wake.notify_all()
        for _call, waiter, loop in dropped:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
                loop.call_soon_threadsafe(waiter.cancel)
