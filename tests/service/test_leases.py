"""Claims with leases: live owners keep their orders, dead ones' orders are taken over."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from execution_service.clock import utc_now
from execution_service.domain.records import new_claim
from execution_service.domain.signals import parse_signal
from execution_service.service.leases import claimable
from tests.fakes.service_fakes import (
    ScriptedBroker,
    SteppedClock,
    make_app,
    order_body,
    settle,
    wait_until,
)

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
    await wait_until(lambda: first.store.get_record("sig_move")["status"] == "SUBMITTED",
                     what="the order SUBMITTED")
    second, _ = make_app(handle=first.handle)
    record = first.store.get_record("sig_move")
    assert second.store.take_over(record, {"id": "new-owner", "host": "x", "pid": 1},
                                  second.clock() + timedelta(seconds=30), second.clock())
    await first.leases.renew()
    await wait_until(lambda: not first.tracker.in_flight, what="the old owner letting go")


@pytest.mark.asyncio
async def test_given_two_replicas_keeping_leases_concurrently_when_each_signal_reaches_both_then_placed_once_and_never_taken_over():  # noqa: E501
    """Given two replicas on one store and one venue, each signal reaching both (in
    alternating order); when, with every order working, the clock passes the lease length
    several times over and each replica renews its leases and sweeps for orphans in turn,
    then no live order is taken over, each is placed once and filled, and the second copy of
    each signal is a duplicate."""
    clock, venue = SteppedClock(), ScriptedBroker()
    env = {"LEASE_SECONDS": "10", "ORDER_TIMEOUT_SECONDS": "600"}
    first, _ = make_app(env=env, broker=venue, clock=clock)
    clock.advance(1)  # a distinct owner id for the second replica
    second, _ = make_app(env=env, broker=venue, clock=clock, handle=first.handle)
    assert first.leases.owner["id"] != second.leases.owner["id"]
    claimed_by: dict[str, str] = {}
    for n in range(30):
        signal_id = f"sig_rep_{n}"
        arrives_first, arrives_second = (first, second) if n % 2 else (second, first)
        arrives_first.processor.handle(order_body(signal_id=signal_id))
        arrives_second.processor.handle(order_body(signal_id=signal_id))
        claimed_by[signal_id] = arrives_first.leases.owner["id"]
    await wait_until(lambda: len(venue.orders) == 30, what="every order working")
    for _ in range(4):  # 16 s of a 10 s lease
        clock.advance(4)
        for replica in (first, second):
            await replica.leases.renew()
        assert [await replica.leases.sweep() for replica in (second, first)] == [0, 0]
        await asyncio.sleep(0)  # the trackers keep polling meanwhile
    for order_id, order in list(venue.orders.items()):
        venue.fill(order_id, f"X-{order_id}", order.quantity, 10.0, clock())
    await settle(first)
    await settle(second)
    assert venue.place_calls == 30
    assert first.counters.duplicates + second.counters.duplicates == 30
    for signal_id, owner_id in claimed_by.items():
        record = first.store.get_record(signal_id)
        events = [e["event"] for e in record["events"]]
        assert record["status"] == "FILLED"
        assert events.count("SUBMITTED") == 1
        assert "TAKEN_OVER" not in events, (signal_id, events)
        assert record["owner"]["id"] == owner_id


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

