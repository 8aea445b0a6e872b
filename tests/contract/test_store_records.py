"""Store contract, execution records: the unique claim, compare-and-set, leases, the outbox
marks and BSON dates, on every backend (tests/contract/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execution_service.adapters.store import DuplicateSignal
from execution_service.domain.records import record_id

T0 = datetime(2026, 11, 24, 10, 30, 0, 123456, tzinfo=UTC)
OWNER_A = {"id": "host-a:1:100", "host": "host-a", "pid": 1}
OWNER_B = {"id": "host-b:2:200", "host": "host-b", "pid": 2}


def claim(signal_id: str, *, at: datetime = T0, status: str = "PENDING", owner=OWNER_A,
          **fields) -> dict:
    return {"_id": record_id(signal_id), "signal_id": signal_id, "status": status,
            "account_id": "acc_1", "received_at": at, "submitted_at": None, "version": 0,
            "events": [{"status": "PENDING", "event": "CLAIMED", "at": at}],
            "confirmations": [], "confirmation_sequence": 0, "published_sequence": 0,
            "outbox_pending": False, "owner": owner, "lease_expires_at": at, **fields}


def ms(value: datetime) -> datetime:
    """BSON dates keep milliseconds."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def test_given_a_claim_when_the_same_signal_is_claimed_again_then_duplicate_and_one_record(
        store, second_store):
    store.insert_record(claim("sig_1"))
    with pytest.raises(DuplicateSignal):
        second_store.insert_record(claim("sig_1", status="REJECTED"))
    with pytest.raises(DuplicateSignal):  # same signal_id under another _id: the unique index
        second_store.insert_record({**claim("sig_1"), "_id": "other"})
    assert store.get_record("sig_1")["status"] == "PENDING"
    assert [r["signal_id"] for r in store.recent_records(0)] == ["sig_1"]
    assert store.get_record("sig_unknown") is None


def test_given_dates_when_stored_then_read_back_tz_aware_utc_to_the_millisecond(store):
    store.insert_record(claim("sig_1", submitted_at=T0 + timedelta(seconds=1)))
    record = store.get_record("sig_1")
    assert record["received_at"] == ms(T0) and record["received_at"].tzinfo is not None
    assert record["received_at"].utcoffset() == timedelta(0)
    assert record["events"][0]["at"] == ms(T0)
    assert record["submitted_at"] == ms(T0 + timedelta(seconds=1))


def test_given_a_record_when_two_writers_change_the_same_version_then_only_the_first_wins(
        store, second_store):
    store.insert_record(claim("sig_1"))
    doc = store.get_record("sig_1")
    event = {"status": "SUBMITTED", "event": "SUBMITTED", "at": ms(T0)}
    confirmation = {"sequence": 1, "status": "SUBMITTED"}
    changed = store.update_record(doc, {"status": "SUBMITTED", "order_id": "O-1"}, [event],
                                  [confirmation])
    assert changed["version"] == 1 and changed["status"] == "SUBMITTED"
    assert second_store.update_record(doc, {"status": "REJECTED"}, [], []) is None
    stored = store.get_record("sig_1")
    assert stored["status"] == "SUBMITTED" and stored["version"] == 1
    assert [e["event"] for e in stored["events"]] == ["CLAIMED", "SUBMITTED"]
    assert stored["confirmations"] == [confirmation]
    assert {k: v for k, v in changed.items() if k != "_id"} == \
        {k: v for k, v in stored.items() if k != "_id"}  # built, not read back: the same
    assert store.update_record(stored, {"notes": "n"}, [], [])["version"] == 2


def test_given_an_order_tracked_by_another_owner_then_take_over_bumps_the_version(
        store, second_store):
    store.insert_record(claim("sig_1", status="SUBMITTED"))
    doc = store.get_record("sig_1")
    later = T0 + timedelta(seconds=15)
    taken = second_store.take_over(doc, OWNER_B, later, T0)
    assert taken["owner"] == OWNER_B and taken["version"] == 1
    assert taken["lease_expires_at"] == ms(later)
    assert taken["events"][-1]["event"] == "TAKEN_OVER"
    assert taken["events"][-1]["previous_owner"] == OWNER_A["id"]
    assert store.take_over(doc, OWNER_A, later, T0) is None  # stale version
    assert store.update_record(doc, {"status": "FILLED"}, [], []) is None  # the old owner's
    assert store.owned_elsewhere(["sig_1"], OWNER_A["id"]) == ["sig_1"]
    assert second_store.owned_elsewhere(["sig_1"], OWNER_B["id"]) == []


def test_given_leases_when_renewed_then_only_the_owners_records_move(store):
    store.insert_record(claim("sig_a"))
    store.insert_record(claim("sig_b", owner=OWNER_B))
    until = T0 + timedelta(seconds=30)
    store.renew_leases(["sig_a", "sig_b", "sig_missing"], OWNER_A["id"], until)
    assert store.get_record("sig_a")["lease_expires_at"] == ms(until)
    assert store.get_record("sig_b")["lease_expires_at"] == ms(T0)


def test_given_confirmations_when_marked_published_then_pending_clears_only_at_the_latest(
        store):
    store.insert_record(claim("sig_1", confirmation_sequence=2, outbox_pending=True))
    store.insert_record(claim("sig_2", at=T0 + timedelta(seconds=1), outbox_pending=True,
                              confirmation_sequence=1))
    assert [r["signal_id"] for r in store.records_with_unpublished()] == ["sig_1", "sig_2"]
    store.mark_published({"sig_1": 1})  # not the latest: the mark moves, still pending
    record = store.get_record("sig_1")
    assert record["published_sequence"] == 1 and record["outbox_pending"] is True
    store.mark_published({"sig_1": 2})
    store.mark_published({"sig_1": 1})  # a late answer never moves the mark back
    record = store.get_record("sig_1")
    assert record["published_sequence"] == 2 and record["outbox_pending"] is False
    assert [r["signal_id"] for r in store.records_with_unpublished()] == ["sig_2"]



def test_given_several_signals_when_marked_published_in_one_call_then_each_as_if_alone(store):
    """Given three records (one published through its latest confirmation, one with a newer
    confirmation, one at another sequence) and a signal with no record, when all are marked
    in one call, then each mark moves as a single mark would, and only the latest clear."""
    store.insert_record(claim("sig_a", confirmation_sequence=2, outbox_pending=True))
    store.insert_record(claim("sig_b", confirmation_sequence=3, outbox_pending=True))
    store.insert_record(claim("sig_c", confirmation_sequence=1, outbox_pending=True,
                              published_sequence=1))
    store.mark_published({"sig_a": 2, "sig_b": 2, "sig_c": 1, "sig_none": 2})
    marks = {s: (store.get_record(s)["published_sequence"], store.get_record(s)["outbox_pending"])
             for s in ("sig_a", "sig_b", "sig_c")}
    assert marks == {"sig_a": (2, False), "sig_b": (2, True), "sig_c": (1, False)}
    assert store.get_record("sig_none") is None

def test_given_records_in_every_status_then_listings_counts_and_open_records_agree(store):
    statuses = ["PENDING", "SUBMITTED", "PARTIALLY_FILLED", "FILLED", "FILLED", "REJECTED",
                "CANCELLED"]
    for n, status in enumerate(statuses):
        store.insert_record(claim(f"sig_{n}", status=status, at=T0 + timedelta(seconds=n)))
    assert store.counts_by_status() == {"PENDING": 1, "SUBMITTED": 1, "PARTIALLY_FILLED": 1,
                                        "FILLED": 2, "REJECTED": 1, "CANCELLED": 1}
    assert [r["signal_id"] for r in store.open_records()] == ["sig_0", "sig_1", "sig_2"]
    assert [r["signal_id"] for r in store.recent_records(3)] == ["sig_6", "sig_5", "sig_4"]
    assert len(store.recent_records(0)) == len(statuses)


def test_given_records_when_counted_for_the_rate_limit_then_recent_unrejected_of_the_account(
        store):
    store.insert_record(claim("sig_old", status="FILLED", at=T0 - timedelta(seconds=61)))
    store.insert_record(claim("sig_new", status="FILLED", at=T0))
    store.insert_record(claim("sig_rej", status="REJECTED", at=T0))
    store.insert_record(claim("sig_other", status="FILLED", at=T0, account_id="acc_2"))
    store.insert_record(claim("sig_new:SL", status="SUBMITTED", at=T0,
                              parent_signal_id="sig_new", role="STOP_LOSS"))  # an exit (§12)
    assert store.count_orders_since("acc_1", T0 - timedelta(seconds=60)) == 1
    assert store.count_orders_since("acc_1", T0) == 0  # strictly after


def test_given_a_signal_when_updated_then_created_once_and_upstream_fields_kept(store):
    store.signals.insert_one({"signal_id": "sig_up", "symbol": "SPY"})  # written upstream
    store.update_signal("sig_up", {"execution_status": "FILLED", "order_id": "O-1"}, T0)
    store.update_signal("sig_new", {"execution_status": "REJECTED"}, T0)
    store.update_signal("sig_new", {"execution_status": "REJECTED"}, T0)
    upstream = store.get_signal("sig_up")
    assert upstream["symbol"] == "SPY" and upstream["execution_status"] == "FILLED"
    assert "created_by" not in upstream
    created = store.get_signal("sig_new")
    assert created["created_by"] == "execution_service"
    assert created["execution_updated_at"] == ms(T0)
    assert store.signals.count_documents({"signal_id": "sig_new"}) == 1
    assert store.get_signal("sig_none") is None


def test_given_orders_of_every_status_then_working_orders_are_the_open_ones_of_account_symbol(
        store):
    store.insert_record(claim("sig_w1", status="SUBMITTED", symbol="SPY", side="BUY",
                              quantity=100, filled_quantity=40.0, limit_price=230.0))
    store.insert_record(claim("sig_w2", status="PENDING", symbol="SPY", side="SELL",
                              quantity=5, filled_quantity=0.0))
    store.insert_record(claim("sig_done", status="FILLED", symbol="SPY"))
    store.insert_record(claim("sig_qqq", status="SUBMITTED", symbol="QQQ"))
    store.insert_record(claim("sig_other", status="SUBMITTED", symbol="SPY", account_id="acc_2"))
    working = sorted(store.working_orders("acc_1", "SPY"), key=lambda doc: doc["_id"])
    assert [doc["_id"] for doc in working] == ["exec_sig_w1", "exec_sig_w2"]
    assert (working[0]["side"], working[0]["quantity"], working[0]["filled_quantity"],
            working[0]["limit_price"]) == ("BUY", 100, 40.0, 230.0)


def test_given_open_and_done_records_of_two_owners_then_owned_open_ids_and_cancels_asked(store):
    store.insert_record(claim("sig_open"))
    store.insert_record(claim("sig_done", status="FILLED"))
    store.insert_record(claim("sig_theirs", owner=OWNER_B))
    store.insert_record(claim("sig_cancel", status="PENDING_CANCEL",
                              cancel_requested_reason="operator"))
    assert sorted(store.open_signal_ids_owned_by(OWNER_A["id"])) == ["sig_cancel", "sig_open"]
    assert store.open_signal_ids_owned_by("nobody") == []


def test_given_entries_and_exits_then_open_exits_of_a_position_and_unsettled_brackets(store):
    """Protective exits (§12): the working exits of one position, and the entries with levels
    and fills whose bracket is not settled."""
    position = {"account_id": "acc_1", "strategy_name": "S", "symbol": "SPY"}
    store.insert_record(claim("e1", status="FILLED", filled_quantity=10.0, stop_loss=95.0,
                              exits_settled=False, **position))
    store.insert_record(claim("e1:SL", status="SUBMITTED", parent_signal_id="e1",
                              role="STOP_LOSS", **position))
    store.insert_record(claim("e1:TP", status="CANCELLED", parent_signal_id="e1",
                              role="TAKE_PROFIT", **position))
    store.insert_record(claim("e2", status="FILLED", filled_quantity=5.0, take_profit=110.0,
                              exits_settled=True, **position))
    store.insert_record(claim("e3", status="SUBMITTED", filled_quantity=0.0, stop_loss=95.0,
                              exits_settled=False, **position))
    store.insert_record(claim("plain", status="FILLED", filled_quantity=5.0, **position))
    store.insert_record(claim("before_exits", status="FILLED", filled_quantity=5.0,
                              stop_loss=95.0, **position))  # claimed before §12 existed
    store.insert_record(claim("x:SL", status="SUBMITTED", parent_signal_id="x",
                              role="STOP_LOSS", **{**position, "symbol": "QQQ"}))
    assert [doc["signal_id"] for doc in store.open_exits(position)] == ["e1:SL"]
    assert [doc["signal_id"] for doc in store.unsettled_brackets()] == ["e1"]



def test_given_records_when_a_cancel_is_asked_on_one_then_only_it_is_listed(store,
                                                                             second_store):
    """Given three records, when another process asks to cancel one, then cancels_asked
    names that one alone, and only among the ids asked about."""
    for signal_id in ("sig_1", "sig_2", "sig_3"):
        store.insert_record(claim(signal_id, status="SUBMITTED"))
    doc = second_store.get_record("sig_2")
    assert second_store.update_record(doc, {"cancel_requested_reason": "by request req_1"}, [],
                                      []) is not None
    assert store.cancels_asked(["sig_1", "sig_2", "sig_3"]) == ["sig_2"]
    assert store.cancels_asked(["sig_1", "sig_3"]) == []
    assert store.cancels_asked([]) == []
