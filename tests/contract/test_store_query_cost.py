"""Store contract, what the hot path and the periodic rescans cost: a record write sends only
what changed, and the queries asked on every fill (a position's open exits) and every few
seconds (the outbox's unpublished records) are planned on an index, so they read only what
they answer, however many orders are open or stored (issue 20)."""

from __future__ import annotations

import pytest

from execution_service.adapters.record_queries import UNPUBLISHED, open_exits_filter
from tests.contract.test_store_records import claim

POSITION = {"account_id": "acc_1", "strategy_name": "S", "symbol": "SPY"}


def test_given_a_record_when_updated_with_its_own_values_and_one_change_then_read_back_so(
        store, second_store):
    store.insert_record(claim("sig_1", filled_quantity=0.0, order_id=None))
    doc = store.get_record("sig_1")
    updated = store.update_record(doc, {"status": "PENDING", "filled_quantity": 0.0,
                                        "order_id": "O-1"}, [], [])
    assert updated["version"] == 1 and updated["order_id"] == "O-1"
    stored = second_store.get_record("sig_1")
    assert (stored["version"], stored["status"], stored["order_id"]) == (1, "PENDING", "O-1")
    assert stored["filled_quantity"] == 0.0


def test_given_a_record_when_a_value_is_equal_but_of_another_type_then_it_is_written(store):
    """1 == 1.0 in Python, not in BSON: the stored type follows what the service wrote."""
    store.insert_record(claim("sig_1", filled_quantity=1))
    doc = store.get_record("sig_1")
    store.update_record(doc, {"filled_quantity": 1.0}, [], [])
    assert isinstance(store.get_record("sig_1")["filled_quantity"], float)


def test_given_no_change_when_updated_then_the_version_still_moves_and_a_stale_copy_fails(
        store, second_store):
    store.insert_record(claim("sig_1"))
    doc = store.get_record("sig_1")
    assert store.update_record(doc, {"status": "PENDING"}, [], [])["version"] == 1
    assert second_store.update_record(doc, {"status": "SUBMITTED"}, [], []) is None
    assert store.get_record("sig_1")["status"] == "PENDING"


def _candidates(store, query: dict) -> int:
    """How many documents the engine reads to answer `query` (litemongo's planner: the
    in-memory and the embedded store; a real MongoDB plans for itself)."""
    return sum(1 for _ in store.records._store.find_candidates(query))


@pytest.fixture
def litemongo_store(store, store_handle):
    if store.on_server:
        pytest.skip("a real MongoDB plans its own queries (its indexes: test_server_settings)")
    return store


def test_given_many_open_orders_and_no_exits_when_a_fill_asks_for_exits_then_none_is_read(
        litemongo_store):
    """Given 60 open orders on the position; when its open exits are asked (on every fill);
    then the role index answers alone: no order is read. With one exit placed: only it."""
    for n in range(60):
        litemongo_store.insert_record(claim(f"sig_{n}", status="SUBMITTED", **POSITION))
    assert _candidates(litemongo_store, open_exits_filter(POSITION)) == 0
    assert litemongo_store.open_exits(POSITION) == []
    litemongo_store.insert_record(claim("sig_0:SL", status="SUBMITTED", parent_signal_id="sig_0",
                                        role="STOP_LOSS", **POSITION))
    assert _candidates(litemongo_store, open_exits_filter(POSITION)) == 1
    assert [doc["signal_id"] for doc in litemongo_store.open_exits(POSITION)] == ["sig_0:SL"]


def test_given_many_published_records_when_the_outbox_rescans_then_only_pending_ones_are_read(
        litemongo_store):
    """Given 60 records published and marked, one pending; when the outbox rescans (every few
    seconds); then one record is read, not all of them."""
    for n in range(60):
        litemongo_store.insert_record(claim(f"sig_{n}", confirmation_sequence=1,
                                            published_sequence=1))
    litemongo_store.insert_record(claim("sig_pending", confirmation_sequence=1,
                                        outbox_pending=True))
    assert _candidates(litemongo_store, UNPUBLISHED) == 1
    assert [doc["signal_id"] for doc in litemongo_store.records_with_unpublished()] == \
        ["sig_pending"]
    litemongo_store.mark_published({"sig_pending": 1})
    assert _candidates(litemongo_store, UNPUBLISHED) == 0


def test_given_many_records_when_three_are_marked_published_at_once_then_only_they_are_read(
        litemongo_store):
    """Given 60 records, when three are marked published in one call (the outbox's batch),
    then the engine reads those three only: `_id $in` is planned on the primary key."""
    for n in range(60):
        litemongo_store.insert_record(claim(f"sig_{n}", confirmation_sequence=2,
                                            outbox_pending=True))
    ids = [f"exec_sig_{n}" for n in (3, 30, 59)]
    assert _candidates(litemongo_store, {"_id": {"$in": ids}, "confirmation_sequence":
                                         {"$lte": 2}}) == 3
    litemongo_store.mark_published({"sig_3": 2, "sig_30": 2, "sig_59": 2})
    assert len(litemongo_store.records_with_unpublished()) == 57
