"""Store contract for what the HTTP API adds (issue 21), on every backend: API keys, record
listings filtered by status and account, confirmations newest first, lifted halts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execution_service.adapters.api_key_store import KeyNameTaken
from execution_service.domain.api_keys import Scope, key_hash, new_key
from tests.contract.test_store_records import claim

T0 = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


def test_given_keys_when_made_listed_and_revoked_then_found_by_hash_only_while_active(store):
    store.ensure_api_key_indexes()
    store.ensure_api_key_indexes()  # idempotent
    desk = new_key(Scope.TRADE, "desk", T0)
    dash = new_key(Scope.READ, "dash", T0 + timedelta(seconds=1))
    store.insert_api_key(desk.doc)
    store.insert_api_key(dash.doc)
    with pytest.raises(KeyNameTaken):
        store.insert_api_key(new_key(Scope.READ, "desk", T0).doc)
    assert store.active_api_key(key_hash(desk.secret))["name"] == "desk"
    assert store.active_api_key(key_hash("esk_wrong")) is None
    assert [k["name"] for k in store.list_api_keys()] == ["desk", "dash"]
    assert store.revoke_api_key("desk", T0)["revoked_at"] is not None
    assert store.revoke_api_key(dash.doc["_id"], T0)["name"] == "dash"
    assert store.revoke_api_key("nobody", T0) is None
    assert store.active_api_key(key_hash(desk.secret)) is None


def test_given_records_when_listed_by_status_and_account_then_only_those_newest_first(store):
    for n, (status, account) in enumerate([("FILLED", "acc_1"), ("REJECTED", "acc_1"),
                                           ("FILLED", "acc_2"), ("FILLED", "acc_1")]):
        store.insert_record(claim(f"sig_{n}", status=status, account_id=account,
                                  at=T0 + timedelta(seconds=n)))
    assert [r["signal_id"] for r in store.recent_records(0, status="FILLED",
                                                         account_id="acc_1")] == [
        "sig_3", "sig_0"]
    assert [r["signal_id"] for r in store.recent_records(1, status=None,
                                                         account_id="acc_2")] == ["sig_2"]


def test_given_confirmations_of_several_records_then_newest_first_with_published(store):
    def sent(sequence: int, seconds: int) -> dict:
        return {"sequence": sequence, "status": "X", "at": (
            T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")}

    store.insert_record(claim("sig_a", confirmations=[sent(1, 0), sent(2, 3)],
                              confirmation_sequence=2, published_sequence=1))
    store.insert_record(claim("sig_b", confirmations=[sent(1, 1)], confirmation_sequence=1,
                              published_sequence=1))
    store.insert_record(claim("sig_c"))
    found = store.recent_confirmations(0)
    assert [(c["sequence"], c["published"]) for c in found] == [(2, False), (1, True),
                                                                (1, True)]
    assert [c["at"] for c in store.recent_confirmations(2)] == [found[0]["at"], found[1]["at"]]


def test_given_a_lifted_halt_then_kept_with_who_lifted_it(store):
    store.save_lifted_halt({"_id": "global:t1", "reason": "a", "lifted_by": "api:desk",
                            "lifted_at": T0})
    store.save_lifted_halt({"_id": "global:t0", "reason": "b", "lifted_by": "cli:ops",
                            "lifted_at": T0 - timedelta(seconds=1)})
    assert [h["lifted_by"] for h in store.lifted_halts()] == ["cli:ops", "api:desk"]
