"""Store work runs on one dedicated thread, in submission order, and a store call that hangs
holds up that thread, never the event loop; /healthz names the stalled store."""

from __future__ import annotations

import asyncio
import threading

import pytest

from execution_service.service import daemon as daemon_module
from execution_service.service.daemon import ExecutionDaemon
from execution_service.service.store_thread import StoreThread
from tests.fakes.service_fakes import make_app

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
