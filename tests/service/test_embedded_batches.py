"""The embedded store on the store thread, committed a batch of calls at a time: a caller's
result comes back only once its write is on disk; a failed commit fails exactly its callers
with StoreUnavailable; messages whose claims were lost so are held, then claimed and filled
once; the event loop never runs sqlite."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from execution_service.adapters.mock_ledger_store import MOCK_LEDGER
from execution_service.adapters.store import open_store
from execution_service.errors import StoreUnavailable
from execution_service.service import store_thread as store_thread_module
from execution_service.service.daemon import ExecutionDaemon
from tests.fakes.service_fakes import make_app, order_body
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def embedded_app(tmp_path):
    handle = open_store(None, "trading", tmp_path / "data")
    app, publisher = make_app(env={"MONGODB_URI": f"embedded://{tmp_path / 'data'}"},
                              handle=handle)
    yield app, publisher, tmp_path
    await app.outbox.stop()
    await app.tracker.stop()
    app.close()


def on_disk(tmp_path, collection: str) -> set[str]:
    """Document keys as another process sees them (committed only)."""
    with sqlite3.connect(tmp_path / "data" / "trading" / collection) as connection:
        return {key for (key,) in connection.execute("SELECT _id FROM documents")}


def connection_of(app, collection: str):
    return app.handle.database[collection]._wrapped._store._connection


def fail_next_commit(app, collection: str) -> list[str]:
    """The next commit of this file fails as a disk error would; says when it has."""
    connection = connection_of(app, collection)
    failed = []

    def commit() -> None:
        del connection.commit
        failed.append(collection)
        raise sqlite3.OperationalError("disk I/O error")

    connection.commit = commit
    return failed


def claim_of(n: int) -> dict:
    return {"_id": f"exec_{n}", "signal_id": f"sig_{n}", "status": "PENDING"}


async def test_given_calls_queued_behind_a_busy_thread_then_one_commit_and_each_result_after_it(
        embedded_app, monkeypatch):
    """Given the store thread busy; when five claims queue up behind it; then they run as
    one batch with one commit of the records file, and each caller, when its result comes
    back, finds its claim already on disk."""
    monkeypatch.setattr(store_thread_module, "BATCH_MAX_SECONDS", 60.0)  # a slow machine too
    app, _, tmp_path = embedded_app
    store, store_thread = app.store, app.store_thread
    await store_thread.run(store.insert_record, claim_of(0))  # index built on first use
    commits = []
    connection_of(app, "execution_confirmations").set_trace_callback(
        lambda sql: commits.append(sql) if sql.startswith("COMMIT") else None)
    release = threading.Event()
    busy = asyncio.ensure_future(store_thread.run(release.wait))
    await eventually(lambda: store_thread.stalled_for() > 0, what="the thread busy")

    async def claim(n: int) -> bool:
        await store_thread.run(store.insert_record, claim_of(n))
        return f"s:exec_{n}" in on_disk(tmp_path, "execution_confirmations")

    claims = [asyncio.ensure_future(claim(n)) for n in range(1, 6)]
    await asyncio.sleep(0)  # every claim queued
    release.set()
    assert await asyncio.gather(*claims) == [True] * 5
    await busy
    assert len(commits) == 1


async def test_given_a_commit_that_fails_then_its_callers_and_the_records_after_it_fail(
        embedded_app):
    """Given a batch with a claim (records) and a signal_store row; when signal_store's
    commit fails; then both callers get StoreUnavailable (records commit after every other
    file, and stop at the first failure), neither is on disk, and the store's health records
    the outage."""
    app, _, tmp_path = embedded_app
    store, store_thread = app.store, app.store_thread
    await store_thread.run(store.update_signal, "sig_0", {"status": "PENDING"}, None)
    failed = fail_next_commit(app, "signal_store")
    release = threading.Event()
    busy = asyncio.ensure_future(store_thread.run(release.wait))
    await eventually(lambda: store_thread.stalled_for() > 0, what="the thread busy")
    claim = asyncio.ensure_future(store_thread.run(store.insert_record, claim_of(1)))
    row = asyncio.ensure_future(store_thread.run(store.update_signal, "sig_1", {}, None))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(StoreUnavailable, match="earlier file's commit"):
        await claim
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        await row
    await busy
    assert failed == ["signal_store"]
    assert "s:exec_1" not in on_disk(tmp_path, "execution_confirmations")
    assert len(on_disk(tmp_path, "signal_store")) == 1  # sig_0's row only
    assert app.store.health.down


class _Consumer:
    running = True

    def start(self, loop, handler) -> None:
        self.handler = handler

    async def stop(self, timeout: float) -> None:
        pass


class _Message:
    def __init__(self, n: int) -> None:
        self.data = order_body(signal_id=f"sig_{n}", quantity=1)
        self.message_id = str(n)
        self.attributes: dict = {}
        self.acks = self.nacks = 0

    def ack(self) -> None:
        self.acks += 1

    def nack(self) -> None:
        self.nacks += 1


async def test_given_the_claims_commit_fails_then_the_messages_are_held_and_later_filled_once(
        embedded_app):
    """Given a daemon on the embedded store; when the commit of the records file holding a
    batch of claims fails; then none of those messages is acked or nacked (held), and once
    the file commits again each signal is claimed, filled and acked exactly once."""
    app, _, _ = embedded_app
    daemon = ExecutionDaemon(app, _Consumer(), None, app.clock, heartbeat_seconds=0.05)
    await app.store_thread.run(app.store.insert_record, claim_of(0))  # index built
    failed = fail_next_commit(app, "execution_confirmations")
    messages = [_Message(n) for n in range(1, 6)]
    release = threading.Event()
    busy = asyncio.ensure_future(app.store_thread.run(release.wait))
    await eventually(lambda: app.store_thread.stalled_for() > 0, what="the thread busy")
    for message in messages:
        daemon._on_message(message)  # one batch of claims behind the busy call
    release.set()
    await busy
    await eventually(lambda: failed, what="the failed commit")
    await eventually(lambda: all(m.acks == 1 for m in messages), timeout=60,
                     what="every message acked after the failure")
    assert [(m.acks, m.nacks) for m in messages] == [(1, 0)] * 5

    def filled() -> bool:
        statuses = app.store.counts_by_status()
        return statuses.get("FILLED", 0) == 5

    await eventually(lambda: filled(), timeout=60, what="five fills")
    ledger = app.handle.database[MOCK_LEDGER]
    assert ledger.count_documents({}) == 5  # each signal reached the broker once


async def test_given_the_embedded_store_then_store_work_never_runs_on_the_event_loop(
        embedded_app):
    app, _, _ = embedded_app
    loop_thread = threading.get_ident()
    used_from = set()
    connection_of(app, "execution_confirmations").set_trace_callback(
        lambda sql: used_from.add(threading.get_ident()))
    await app.store_thread.run(app.store.insert_record, claim_of(1))
    await app.store_thread.run(app.store.get_record, "sig_1")
    assert used_from and loop_thread not in used_from
