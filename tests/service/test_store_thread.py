"""Store work runs on one dedicated thread: the order path oldest signal first (otherwise in
submission order) and ahead of upkeep, upkeep in submission order and never starved; a store
call that hangs holds up that thread, never the event loop; /healthz names the stalled
store."""

from __future__ import annotations

import asyncio
import threading

import pytest

from execution_service.errors import StoreUnavailable
from execution_service.service import daemon as daemon_module
from execution_service.service import store_thread as store_thread_module
from execution_service.service.daemon import ExecutionDaemon
from execution_service.service.store_thread import StoreThread, on_behalf_of
from tests.fakes.service_fakes import make_app
from tests.fakes.waiting import eventually, wait_until

pytestmark = pytest.mark.asyncio


async def test_given_calls_from_many_tasks_then_one_thread_runs_them_in_submission_order():
    store_thread = StoreThread()
    ran: list[tuple[int, int]] = []

    async def submit(n: int) -> None:
        await store_thread.run(lambda: ran.append((n, threading.get_ident())))

    tasks = [asyncio.ensure_future(submit(n)) for n in range(200)]
    await asyncio.gather(*tasks)
    store_thread.close()
    assert [n for n, _ in ran] == list(range(200))
    assert len({ident for _, ident in ran}) == 1
    assert ran[0][1] != threading.get_ident()


class _Consumer:
    running = True


async def test_given_a_store_call_that_hangs_then_the_loop_runs_on_and_healthz_names_it(
        monkeypatch):
    """Given the store thread stuck in a call; when the loop is probed; then it keeps
    turning, and healthz says the store call is waiting; once the call returns, healthy."""
    monkeypatch.setattr(daemon_module, "STORE_STALL_SECONDS", 0.0)
    app, _ = make_app()
    daemon = ExecutionDaemon(app, _Consumer(), None, app.clock)
    daemon.write_heartbeat()
    release = threading.Event()
    stuck = asyncio.ensure_future(app.store_thread.run(release.wait))
    turns = 0
    while app.store_thread.stalled_for() == 0.0 or turns < 100:
        await asyncio.sleep(0)  # the loop turns while the store thread is stuck
        turns += 1
    healthy, reason = daemon.healthy()
    assert not healthy and reason.startswith("store: a call has been waiting")
    release.set()
    await stuck
    assert daemon.healthy() == (True, "ok")
    await app.outbox.stop()


async def _blocked(store_thread: StoreThread) -> tuple[threading.Event, asyncio.Future]:
    """The store thread busy in a call until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    held = asyncio.ensure_future(store_thread.run(hold))
    await eventually(started.is_set, what="the store thread to take the first call")
    return release, held


async def test_given_upkeep_and_order_work_queued_then_the_order_path_runs_first():
    """Given the store thread busy, and upkeep (marks, heartbeats) queued before a burst of
    claims; when it frees up; then the claims run first, in order, and the upkeep after,
    in order."""
    store_thread = StoreThread(background_max_wait=60.0)
    release, held = await _blocked(store_thread)
    ran: list[str] = []
    upkeep = [asyncio.ensure_future(store_thread.run_background(ran.append, f"mark{n}"))
              for n in range(3)]
    await asyncio.sleep(0)
    claims = [asyncio.ensure_future(store_thread.run(ran.append, f"claim{n}")) for n in range(3)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(held, *upkeep, *claims)
    store_thread.close()
    assert ran == ["claim0", "claim1", "claim2", "mark0", "mark1", "mark2"]


async def test_given_order_work_that_never_stops_then_upkeep_still_runs_within_its_wait():
    """Given upkeep queued and a stream of order-path work that keeps the lane full; when the
    upkeep has waited its maximum; then it runs before the next order-path call (never
    starved: heartbeats and leases go on at full load)."""
    now = [0.0]
    store_thread = StoreThread(background_max_wait=0.05, clock=lambda: now[0])
    release, held = await _blocked(store_thread)
    ran: list[str] = []
    upkeep = asyncio.ensure_future(store_thread.run_background(ran.append, "heartbeat"))
    await asyncio.sleep(0)

    def claim(n: int) -> None:
        ran.append(f"claim{n}")
        now[0] += 0.02  # each order-path call takes 20 ms of the fake clock

    claims = [asyncio.ensure_future(store_thread.run(claim, n)) for n in range(6)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(held, upkeep, *claims)
    store_thread.close()
    assert ran.index("heartbeat") == 3  # after 60 ms of claims: past its 50 ms
    assert [r for r in ran if r != "heartbeat"] == [f"claim{n}" for n in range(6)]


async def test_given_a_store_error_in_upkeep_then_its_caller_gets_it_and_the_thread_goes_on():
    """Given an upkeep call that fails (the store is down right then); when it runs; then
    the error reaches the caller that asked, and the next calls of both lanes still run."""
    store_thread = StoreThread()

    def fail() -> None:
        raise StoreUnavailable("store down")

    with pytest.raises(StoreUnavailable, match="store down"):
        await store_thread.run_background(fail)
    assert await store_thread.run(lambda: "claimed") == "claimed"
    assert await store_thread.run_background(lambda: "marked") == "marked"
    store_thread.close()


async def test_given_many_results_while_the_loop_is_busy_then_one_wake_up_takes_them_all():
    """Given 50 store calls that finish while the event loop is busy; when it is free again;
    then all 50 callers have their results, handed back with a single wake-up of the loop
    (each wake-up is a write to the loop's self-pipe and a turn of its selector)."""
    store_thread = StoreThread()
    loop = asyncio.get_running_loop()
    wake_ups = []
    original = loop.call_soon_threadsafe

    def counted(callback, *args, **kwargs):
        wake_ups.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    try:
        done = []
        calls = [asyncio.ensure_future(store_thread.run(done.append, n)) for n in range(50)]
        await asyncio.sleep(0)  # the calls are queued
        wait_until(lambda: len(done) == 50, what="the store thread to run all 50 calls")
        assert await asyncio.gather(*calls) == [None] * 50
    finally:
        del loop.call_soon_threadsafe
        store_thread.close()
    assert done == list(range(50))
    assert len(wake_ups) == 1


async def test_given_a_caller_that_gave_up_then_its_queued_call_never_runs():
    """Given a call queued behind a busy store thread; when its caller is cancelled (a
    shutdown); then the call is skipped, and the ones after it run."""
    store_thread = StoreThread()
    release, held = await _blocked(store_thread)
    ran: list[str] = []
    dropped = asyncio.ensure_future(store_thread.run(ran.append, "dropped"))
    kept = asyncio.ensure_future(store_thread.run(ran.append, "kept"))
    await asyncio.sleep(0)
    dropped.cancel()
    release.set()
    await asyncio.gather(held, kept)
    store_thread.close()
    assert ran == ["kept"]


async def test_given_the_thread_closed_then_queued_callers_are_cancelled_and_new_ones_refused():
    """Given calls of both lanes queued behind a running one; when the store thread is
    closed; then the running call finishes, the queued ones are cancelled (never run
    half-way), and a new call is refused with a clear error."""
    store_thread = StoreThread()
    release, held = await _blocked(store_thread)
    ran: list[str] = []
    queued = [asyncio.ensure_future(store_thread.run(ran.append, "claim")),
              asyncio.ensure_future(store_thread.run_background(ran.append, "mark"))]
    await asyncio.sleep(0)
    store_thread.close()
    release.set()
    await held
    for call in queued:
        with pytest.raises(asyncio.CancelledError):
            await call
    assert ran == []
    with pytest.raises(RuntimeError, match="closed"):
        await store_thread.run(ran.append, "late")


async def test_given_work_for_signals_of_different_ages_then_the_oldest_signal_goes_first():
    """Given the store thread busy, and queued behind it: a new batch's claims (no signal
    yet), then the fill of a signal claimed 0.2 s ago, then the placement of one claimed
    0.5 s ago; when it frees up; then the oldest signal's work runs first, then the younger
    one's, then the new claims: a burst goes through signal by signal, oldest first."""
    store_thread = StoreThread(wall_clock=lambda: 1000.0)
    release, held = await _blocked(store_thread)
    ran: list[str] = []

    async def for_signal(since: float, what: str) -> None:
        on_behalf_of(since)
        await store_thread.run(ran.append, what)

    calls = [asyncio.ensure_future(store_thread.run(ran.append, "new claims"))]
    await asyncio.sleep(0)
    calls.append(asyncio.ensure_future(for_signal(999.8, "fill of the younger")))
    await asyncio.sleep(0)
    calls.append(asyncio.ensure_future(for_signal(999.5, "placement of the older")))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(held, *calls)
    store_thread.close()
    assert ran == ["placement of the older", "fill of the younger", "new claims"]


async def test_given_an_order_resting_for_hours_then_its_polls_do_not_shut_out_new_claims():
    """Given a claim queued at t=1000, and later (t=1002) a poll for an order claimed hours
    ago; when the store thread frees up; then the claim runs first: an old signal's work goes
    ahead of newer work by at most OLDEST_FIRST_SECONDS, never for good."""
    now = [1000.0]
    store_thread = StoreThread(wall_clock=lambda: now[0])
    release, held = await _blocked(store_thread)
    ran: list[str] = []

    async def poll_of_resting_order() -> None:
        on_behalf_of(1000.0 - 3 * 3600)
        await store_thread.run(ran.append, "poll of the resting order")

    calls = [asyncio.ensure_future(store_thread.run(ran.append, "claim"))]
    await asyncio.sleep(0)
    now[0] += store_thread_module.OLDEST_FIRST_SECONDS + 1.0
    calls.append(asyncio.ensure_future(poll_of_resting_order()))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(held, *calls)
    store_thread.close()
    assert ran == ["claim", "poll of the resting order"]


async def test_given_one_task_saying_whose_work_it_is_then_other_tasks_are_not_affected():
    """Given a task that said its work is for an old signal; when another task, started
    after it, asks for store work; then that work is keyed by its own submission, not by the
    first task's signal (each task's context is its own)."""
    seen: list[float | None] = []

    async def tracked() -> None:
        on_behalf_of(100.0)
        seen.append(store_thread_module._SIGNAL_SINCE.get())

    async def other() -> None:
        seen.append(store_thread_module._SIGNAL_SINCE.get())

    await asyncio.ensure_future(tracked())
    await asyncio.ensure_future(other())
    assert seen == [100.0, None]


async def test_given_every_call_slow_as_in_an_outage_then_neither_lane_starves_the_other():
    """Given a store outage (every call takes 3 s of the clock) with upkeep always overdue
    (heartbeats, halt polls queued) and order-path work queued (a batch of messages to hold);
    when the store thread works through them; then the lanes take turns: the order path is
    never shut out by overdue upkeep (the messages get held), and upkeep still runs."""
    now = [0.0]
    store_thread = StoreThread(background_max_wait=0.05, clock=lambda: now[0])
    release, held = await _blocked(store_thread)
    ran: list[str] = []

    def slow(what: str) -> None:
        ran.append(what)
        now[0] += 3.0

    calls = [asyncio.ensure_future(store_thread.run_background(slow, f"upkeep{n}"))
             for n in range(4)]
    calls += [asyncio.ensure_future(store_thread.run(slow, f"hold{n}")) for n in range(2)]
    await asyncio.sleep(0)
    now[0] += 3.0  # the call holding the thread was slow too
    release.set()
    await asyncio.gather(held, *calls)
    store_thread.close()
    assert ran == ["upkeep0", "hold0", "upkeep1", "hold1", "upkeep2", "upkeep3"]
