"""Claims with leases: live owners keep their orders, dead ones' orders are taken over."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from execution_service.clock import utc_now
from execution_service.domain.records import new_claim
from execution_service.domain.signals import parse_signal
from execution_service.service.leases import claimable
from tests.fakes.service_fakes import make_app, order_body, settle, wait_until

ME = {"id": "hostA:10:1", "host": "hostA", "pid": 10}


def doc_owned_by(owner: dict | None, expires) -> dict:
    return {"owner": owner, "lease_expires_at": expires}


def test_claimable_rules():
    now = utc_now()
    later, earlier = now + timedelta(seconds=10), now - timedelta(seconds=1)
    other_host = {"id": "hostB:5:1", "host": "hostB", "pid": 5}
    same_host_dead = {"id": "hostA:11:1", "host": "hostA", "pid": 11}
    assert not claimable(doc_owned_by(ME, earlier), ME, now)  # ours already
    assert not claimable(doc_owned_by(other_host, later), ME, now)  # alive elsewhere
    assert claimable(doc_owned_by(other_host, earlier), ME, now)  # lease expired
    assert claimable(doc_owned_by(None, None), ME, now)  # never leased
    assert claimable(doc_owned_by(same_host_dead, later), ME, now, alive=lambda pid: False)
    assert not claimable(doc_owned_by(same_host_dead, later), ME, now, alive=lambda pid: True)


def _claim(app, signal_id: str, owner: dict, expires) -> None:
    doc = new_claim(parse_signal(order_body(signal_id=signal_id)), broker="MOCK",
                    broker_tag=signal_id, at=app.clock(), owner=owner)
    doc["lease_expires_at"] = expires
    app.store.insert_record(doc)


@pytest.mark.asyncio
async def test_given_live_lease_elsewhere_then_kept_until_it_expires():
    app, _ = make_app()
    other = {"id": "elsewhere:1:1", "host": "elsewhere", "pid": 1}
    _claim(app, "sig_live", other, app.clock() + timedelta(seconds=30))
    _claim(app, "sig_dead", other, app.clock() - timedelta(seconds=1))
    assert await app.leases.sweep() == 1
    await settle(app)
    assert app.store.get_record("sig_live")["status"] == "PENDING"
    dead = app.store.get_record("sig_dead")
    assert dead["status"] == "FILLED"
    assert dead["owner"]["id"] != other["id"]
    assert "TAKEN_OVER" in [event["event"] for event in dead["events"]]


@pytest.mark.asyncio
async def test_given_record_taken_over_then_the_old_owner_stops_writing():
    first, _ = make_app(env={"MOCK_FILL_DELAY_SECONDS": "5", "ORDER_TIMEOUT_SECONDS": "30"})
    first.processor.handle(order_body(signal_id="sig_move"))
    while first.store.get_record("sig_move")["status"] != "SUBMITTED":
        await asyncio.sleep(0.01)
    second, _ = make_app(handle=first.handle)
    record = first.store.get_record("sig_move")
    assert second.store.take_over(record, {"id": "new-owner", "host": "x", "pid": 1},
                                  second.clock() + timedelta(seconds=30), second.clock())
    await first.leases.renew()
    for _ in range(200):
        if not first.tracker.in_flight:
            break
        await asyncio.sleep(0.02)
    assert not first.tracker.in_flight  # LeaseLost: it let go


@pytest.mark.asyncio
async def test_given_two_replicas_and_each_signal_twice_then_each_placed_once():
    first, _ = make_app()
    second, _ = make_app(handle=first.handle)
    for n in range(30):
        body = order_body(signal_id=f"sig_rep_{n}")
        first.processor.handle(body)
        second.processor.handle(body)
    await settle(first)
    await settle(second)
    assert first.store.mock_ledger.count() == 30
    assert first.counters.duplicates + second.counters.duplicates == 30
    for n in range(30):
        record = first.store.get_record(f"sig_rep_{n}")
        assert record["status"] == "FILLED"
        assert [e["event"] for e in record["events"]].count("SUBMITTED") == 1


@pytest.mark.asyncio
async def test_given_a_replicas_unpublished_confirmations_then_left_to_it_while_it_lives():
    """Given replica A's order with its confirmations unpublished (Pub/Sub refusing A); when
    replica B rescans; then B leaves them to A while A's lease runs, and takes them up once
    the lease has expired (A is gone)."""
    first, refusing = make_app()
    refusing.failing = True
    first.processor.handle(order_body())
    await wait_until(lambda: not first.tracker.in_flight, what="tracking done")
    second, publisher = make_app(handle=first.handle)
    assert await second.outbox.rescan() == 0 and publisher.messages == []
    record = first.store.get_record("sig_1")
    first.store.records.update_one({"_id": record["_id"]}, {"$set": {
        "lease_expires_at": utc_now() - timedelta(seconds=1)}})
    assert await second.outbox.rescan() == 2
    await settle(second)
    assert publisher.statuses("sig_1") == ["SUBMITTED", "FILLED"]
    await first.outbox.stop()

