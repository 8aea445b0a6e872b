"""Store contract, everything but execution records: accounts, positions, heartbeats, halts,
the mock broker's ledger, indexes, on every backend (tests/contract/conftest.py). The last
test keeps the contract complete: every public Store method has a case here."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path

from execution_service.adapters.store import Store

T0 = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
KEY = {"account_id": "acc_1", "strategy_name": "Strat", "symbol": "SPY"}


def position(n: int, *, status: str = "OPEN", fill_key: str = "sig_1:E1", **fields) -> dict:
    return {"_id": f"pos_{n}", **KEY, "side": "LONG", "quantity": 10.0,
            "avg_entry_price": 100.0, "status": status, "opened_at": T0 + timedelta(seconds=n),
            "order_ids": [f"O-{n}"], "fill_keys": [fill_key], "realized_pnl": 0.0,
            "version": 0, **fields}


def test_given_accounts_when_upserted_and_updated_then_fields_set_and_cleared(store):
    store.upsert_account("acc_b", {"broker": "MOCK", "enabled": True}, T0)
    first = store.upsert_account("acc_a", {"broker": "MOCK", "max_order_quantity": 10}, T0)
    again = store.upsert_account("acc_a", {"enabled": False}, T0 + timedelta(seconds=1))
    assert first["created_at"] == again["created_at"] == T0
    assert again["max_order_quantity"] == 10 and again["enabled"] is False
    updated = store.update_account_fields("acc_a", {"display_name": "A"},
                                          ["max_order_quantity"], T0 + timedelta(seconds=2))
    assert updated["display_name"] == "A" and "max_order_quantity" not in updated
    assert store.get_account("acc_a") == updated
    assert store.update_account_fields("acc_none", {"enabled": True}, [], T0) is None
    assert store.get_account("acc_none") is None
    assert [a["_id"] for a in store.list_accounts()] == ["acc_a", "acc_b"]
    assert store.count_accounts() == 2


def test_given_a_position_when_two_writers_apply_fills_then_one_wins_and_a_fill_counts_once(
        store, second_store):
    assert store.insert_position(position(1)) is True
    assert second_store.insert_position(position(1)) is False  # same _id: already opened
    current = store.open_position(KEY)
    assert store.update_position(current, {"quantity": 20.0}, "sig_2:E1") is True
    assert second_store.update_position(current, {"quantity": 30.0}, "sig_3:E1") is False
    fresh = store.get_position("pos_1")
    assert fresh["quantity"] == 20.0 and fresh["version"] == 1
    assert store.update_position(fresh, {"quantity": 40.0}, "sig_2:E1") is False  # seen fill
    assert store.position_with_fill(KEY, "sig_2:E1")["_id"] == "pos_1"
    assert store.position_with_fill(KEY, "sig_9:E1") is None


def test_given_a_fill_when_entered_in_the_ledger_twice_then_once_and_applied_once_marked(
        store, second_store):
    entry = {"_id": "sig_1:E1", **KEY, "signal_id": "sig_1", "exec_id": "E1", "side": "BUY",
             "quantity": 10.0, "price": 100.0, "at": T0}
    assert store.claim_fill(entry) is None  # new
    earlier = second_store.claim_fill(entry)  # another process, the same fill
    assert earlier["applied"] is False and earlier["quantity"] == 10.0
    assert store.fill_applied("sig_1:E1") is False
    second_store.mark_fills_applied(["sig_1:E1"], "pos_1", KEY)
    assert store.claim_fill(entry)["applied"] is True
    assert store.fill_applied("sig_1:E1") is True
    assert store.claim_fill({**entry, "_id": "sig_2:E1"}) is None
    assert [e["position_id"] for e in store.fill_entries(["sig_1:E1", "sig_2:E1"])
            if e.get("position_id")] == ["pos_1"]


def test_given_keys_from_before_the_ledger_when_marked_then_entered_applied(store):
    """Given a position's keys, one with a ledger entry and two without (fills from before
    the ledger), when they are marked applied, then all three are entered applied and name
    the position, and a later claim of one of them finds it done."""
    store.claim_fill({"_id": "sig_1:E1", **KEY, "signal_id": "sig_1", "exec_id": "E1"})
    store.mark_fills_applied(["sig_0:E1", "sig_1:E1", "sig_9:E1"], "pos_1", KEY)
    entries = store.fill_entries(["sig_0:E1", "sig_1:E1", "sig_9:E1", "sig_8:E1"])
    assert sorted((e["_id"], e["applied"], e["position_id"]) for e in entries) == [
        ("sig_0:E1", True, "pos_1"), ("sig_1:E1", True, "pos_1"), ("sig_9:E1", True, "pos_1")]
    assert store.claim_fill({"_id": "sig_9:E1", **KEY})["applied"] is True


def test_given_no_batch_when_a_callback_waits_for_the_writes_then_it_runs_at_once(store):
    """Outside the embedded store's batches every write is committed when the call returns:
    `when_written` runs its callback at once (inside a batch: tests/service, after commit)."""
    ran = []
    store.when_written(lambda: ran.append(True))
    assert ran == [True]


def test_given_a_position_when_updated_with_kept_keys_and_orders_then_lists_follow(store):
    """Given a position holding two fill keys and one order, when a fill keeps one key and
    names a new order, then the document holds the kept key and the new one, and both orders;
    when the same order moves it again, then the order is not listed twice."""
    store.insert_position(position(1, fill_key="sig_1:E1"))
    current = store.get_position("pos_1")
    assert store.update_position(current, {"quantity": 11.0}, "sig_2:E1", None, "O-2")
    current = store.get_position("pos_1")
    assert current["fill_keys"] == ["sig_1:E1", "sig_2:E1"]
    assert store.update_position(current, {"quantity": 12.0}, "sig_2:E2", ["sig_2:E1"], "O-2")
    current = store.get_position("pos_1")
    assert (current["fill_keys"], current["order_ids"], current["version"]) == \
        (["sig_2:E1", "sig_2:E2"], ["O-1", "O-2"], 2)


def test_given_closed_and_flipped_positions_then_lookups_find_each(store):
    store.insert_position(position(1, status="CLOSED", closed_at=T0))
    store.insert_position(position(2, opened_from="pos_1", fill_key="sig_2:E1"))
    store.insert_position(position(3, account_id="acc_2", fill_key="sig_3:E1"))
    assert store.count_positions(KEY) == 2
    assert store.open_position(KEY)["_id"] == "pos_2"
    assert store.position_opened_from("pos_1")["_id"] == "pos_2"
    assert store.position_opened_from("pos_2") is None
    assert [p["_id"] for p in store.list_positions()] == ["pos_3", "pos_2"]  # newest first
    assert [p["_id"] for p in store.list_positions(None)] == ["pos_3", "pos_2", "pos_1"]
    assert [p["_id"] for p in store.open_positions_for("acc_1", "SPY")] == ["pos_2"]
    assert store.open_positions_for("acc_1", "QQQ") == []
    assert [p["_id"] for p in store.positions_touched(["sig_2:E1", "sig_1:E1"], None)] == \
        ["pos_1", "pos_2"]
    assert [p["_id"] for p in store.positions_touched([], "O-3")] == ["pos_3"]
    assert store.positions_touched([], None) == []


def test_given_heartbeats_of_two_daemons_then_read_freshest_first(store):
    for n, seconds in ((1, 5), (2, 9), (1, 7)):
        store.write_status({"_id": f"daemon-{n}", "last_heartbeat": T0 + timedelta(seconds=seconds),
                            "pid": n})
    beats = store.read_statuses()
    assert [(b["_id"], b["last_heartbeat"]) for b in beats] == [
        ("daemon-2", T0 + timedelta(seconds=9)), ("daemon-1", T0 + timedelta(seconds=7))]


def test_given_halts_when_saved_replaced_and_deleted_then_listed_by_id(store):
    store.save_halt({"_id": "global", "account_id": None, "reason": "a", "halted_at": T0})
    store.save_halt({"_id": "account:acc_1", "account_id": "acc_1", "reason": "b",
                     "halted_at": T0})
    store.save_halt({"_id": "global", "account_id": None, "reason": "c", "halted_at": T0})
    assert [(h["_id"], h["reason"]) for h in store.list_halts()] == [
        ("account:acc_1", "b"), ("global", "c")]
    assert store.delete_halt("global")["reason"] == "c"
    assert store.delete_halt("global") is None
    assert [h["_id"] for h in store.list_halts()] == ["account:acc_1"]


def test_given_the_mock_ledger_then_one_order_per_id_and_guarded_updates(store, second_store):
    ledger = store.mock_ledger
    order = {"_id": "MOCK-1", "signal_id": "sig_1", "symbol": "SPY", "reference_price": 10.0,
             "submitted_at": T0, "status": "WORKING", "triggered_at": None}
    assert ledger.add(order) is True
    assert second_store.mock_ledger.add({**order, "status": "REJECTED"}) is False
    ledger.add({**order, "_id": "MOCK-2", "signal_id": "sig_2", "reference_price": 12.0,
                "submitted_at": T0 + timedelta(seconds=1)})
    ledger.add({**order, "_id": "MOCK-3", "signal_id": "sig_3", "reference_price": None,
                "submitted_at": T0 + timedelta(seconds=2)})
    assert ledger.latest_priced("SPY")["_id"] == "MOCK-2"
    assert ledger.latest_priced("QQQ") is None
    assert ledger.update_if("MOCK-1", {"status": "WORKING"}, {"status": "CANCELLED"}) is True
    assert ledger.update_if("MOCK-1", {"status": "WORKING"}, {"status": "FILLED"}) is False
    assert ledger.get("MOCK-1")["status"] == "CANCELLED"
    assert ledger.get("MOCK-1")["submitted_at"] == T0
    assert ledger.get("MOCK-9") is None
    assert sorted(o["_id"] for o in ledger.all()) == ["MOCK-1", "MOCK-2", "MOCK-3"]
    assert ledger.count() == 3 and ledger.count("sig_2") == 1 and ledger.count("sig_9") == 0


def test_given_indexes_when_ensured_twice_then_idempotent_and_the_claim_index_is_unique(
        store):
    store.ensure_indexes()
    unique = [spec for spec in store.records.index_information().values()
              if spec.get("unique")]
    assert [spec["key"] for spec in unique] == [[("signal_id", 1)]]


def _public_methods(cls) -> set[str]:
    return {name for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_given_the_contract_files_then_every_public_store_method_has_a_case():
    """A method added to the store without a contract case fails here."""
    from execution_service.adapters.mock_ledger_store import MockLedgerStore

    sources = "".join(path.read_text() for path in Path(__file__).parent.glob("test_store*.py"))
    missing = sorted(name for name in _public_methods(Store) | _public_methods(MockLedgerStore)
                     if f".{name}(" not in sources)
    assert missing == [], f"store methods without a contract case: {missing}"


def test_given_broker_sessions_when_saved_twice_then_the_latest_is_read_per_broker(store):
    assert store.get_broker_session("ZERODHA") is None
    store.save_broker_session("ZERODHA", {"access_token": "t1", "saved_at": T0, "by": "cli:a"})
    store.save_broker_session("ZERODHA", {"access_token": "t2", "user_id": "AB1234",
                                          "saved_at": T0 + timedelta(seconds=1), "by": "cli:b"})
    saved = store.get_broker_session("ZERODHA")
    assert (saved["_id"], saved["access_token"], saved["user_id"], saved["by"]) == (
        "ZERODHA", "t2", "AB1234", "cli:b")
    assert saved["saved_at"] == T0 + timedelta(seconds=1) and "saved_at" in saved
    assert store.get_broker_session("IBKR") is None
