"""Background tasks are supervised: one that raises is logged with its traceback and restarted
with back-off, and /healthz (the daemon's `healthy`) names it while it is down; a store that
cannot take the heartbeat is named too."""

from __future__ import annotations

import asyncio
import logging

import pytest

from execution_service.service.daemon import ExecutionDaemon
from execution_service.service.supervisor import TaskSupervisor
from tests.fakes.service_fakes import FlakyStore, make_app, wait_until

pytestmark = pytest.mark.asyncio


class _Consumer:
    running = True


async def test_given_a_task_that_raises_then_it_is_logged_and_restarted(caplog):
    supervisor = TaskSupervisor(backoff_base=0.01)
    runs, release = [], asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom in the heartbeat")
        await release.wait()

    with caplog.at_level(logging.ERROR):
        supervisor.start("heartbeat", flaky)
        await wait_until(lambda: len(runs) == 2, what="a restart")
    assert supervisor.problems() == [] and supervisor.restarts == {"heartbeat": 1}
    failure = next(r for r in caplog.records if "heartbeat failed" in r.getMessage())
    assert failure.exc_info is not None and "boom" in str(failure.exc_info[1])
    release.set()
    await supervisor.stop()


async def test_given_a_supervised_daemon_task_down_then_healthz_names_it():
    app, _ = make_app()
    daemon = ExecutionDaemon(app, _Consumer(), None, app.clock, heartbeat_seconds=0.05)
    daemon.supervisor = TaskSupervisor(backoff_base=30.0)
    daemon.write_heartbeat()
    assert daemon.healthy() == (True, "ok")

    async def broken() -> None:
        raise ValueError("halts table unreadable")

    daemon.supervisor.start("halts", broken)
    await wait_until(lambda: not daemon.healthy()[0], what="healthz turns unhealthy")
    assert daemon.healthy() == (False, "task halts down: ValueError: halts table unreadable")
    daemon.write_heartbeat()
    status = app.store.read_statuses()[0]
    assert status["problems"] == ["task halts down: ValueError: halts table unreadable"]
    await daemon.supervisor.stop()
    await app.outbox.stop()


async def test_given_the_store_cannot_take_the_heartbeat_then_healthz_says_so_until_it_can():
    app, _ = make_app(store_class=FlakyStore)
    daemon = ExecutionDaemon(app, _Consumer(), None, app.clock, heartbeat_seconds=0.05)
    app.store.down = True
    daemon.write_heartbeat()
    healthy, reason = daemon.healthy()
    assert not healthy and reason.startswith("store cannot be written: store unavailable")
    app.store.down = False
    daemon.write_heartbeat()
    assert daemon.healthy() == (True, "ok")
    await app.outbox.stop()
