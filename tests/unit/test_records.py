"""The audit record (SPEC §5), the confirmation payload (SPEC §6) and the back-off function."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from enum import Enum

import bson
import pytest
from bson.codec_options import CodecOptions
from hypothesis import given
from hypothesis import strategies as st

from brokers.base import Fill
from execution_service.domain.backoff import Backoff, compute_backoff
from execution_service.domain.orders import (
    OrderState,
    OrderStatus,
    apply_fills,
    cancel,
    reject,
    submit,
)
from execution_service.domain.records import (
    confirmation,
    confirmation_message,
    new_claim,
    new_rejection,
    record_id,
    state_fields,
    state_of,
)
from execution_service.domain.signals import Invalid, Signal, parse_signal

S = OrderStatus
T0 = datetime(2024, 11, 24, 10, 30, 10, tzinfo=UTC)
SPEC_EXAMPLE = {
    "signal_id": "sig_1732450800_5678",
    "order_type": "MARKET",
    "symbol": "SPY",
    "side": "buy",
    "quantity": 100,
    "account_id": "acc_abc123",
    "strategy_name": "SPX 1-Day Options",
    "stop_loss": 230.00,
    "take_profit": 240.00,
    "asset_class": "equity",
    "created_at": "2024-11-24T10:30:00Z",
    "confidence": 0.87,
    "meta": {"model": "spx-1d"},
}
# SPEC §6: the example payload's fields, plus the ones listed under it
CONFIRMATION_FIELDS = {
    "signal_id",
    "order_id",
    "status",
    "filled_quantity",
    "avg_fill_price",
    "filled_at",
    "commission",
    "account_id",
    "symbol",
    "side",
    "quantity",
    "reason",
    "sequence",
}
BSON_SCALARS = (str, int, float, bool, type(None), datetime)
AS_STORED_TZ_AWARE = CodecOptions(tz_aware=True, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def signal(**changes) -> Signal:
    parsed = parse_signal(json.dumps({**SPEC_EXAMPLE, **changes}).encode())
    assert isinstance(parsed, Signal), parsed
    return parsed


def claim(**changes) -> dict:
    return new_claim(
        signal(**changes),
        broker="MOCK",
        broker_tag="sig_1732450800_5678",
        at=at(0),
        owner={"host": "h1", "pid": 42},
    )


def plain_values(value, path="doc"):
    """Every value in a document, with where it is, walking dicts and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, f"{path}: key {key!r} is not a plain str"
            yield from plain_values(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from plain_values(item, f"{path}[{index}]")
    else:
        yield path, value


def assert_bson_friendly(doc: dict) -> None:
    for path, value in plain_values(doc):
        assert not isinstance(value, Enum), f"{path} is an enum: {value!r}"
        assert type(value) in BSON_SCALARS, f"{path} is a {type(value).__name__}"
    assert bson.decode(bson.encode(doc), AS_STORED_TZ_AWARE) == doc


def order_in(status: OrderStatus) -> OrderState:
    """A 100-unit order brought to `status`; PARTIALLY_FILLED and CANCELLED hold 40 @ 235.10."""
    state = OrderState("sig_1732450800_5678", 100.0)
    if status is S.PENDING:
        return state
    state = submit(state, "ord_broker_12345", at(1)).state
    if status is S.SUBMITTED:
        return state
    if status is S.REJECTED:
        return reject(state, "Insufficient margin", at(2)).state
    first = Fill("exec_1", 40.0, 235.10, at(2), 0.4)
    state = apply_fills(state, [first], at(2)).state
    if status is S.PARTIALLY_FILLED:
        return state
    if status is S.CANCELLED:
        return cancel(state, "timeout", at(61)).state
    return apply_fills(state, [Fill("exec_2", 60.0, 235.1833333, at(3), 0.6)], at(3)).state


# -- new_claim ------------------------------------------------------------------------------


def test_given_a_valid_signal_when_claimed_then_the_record_is_pending_with_one_claimed_event():
    doc = claim()
    assert doc["_id"] == record_id("sig_1732450800_5678") == "exec_sig_1732450800_5678"
    assert doc["signal_id"] == "sig_1732450800_5678"
    assert doc["status"] == "PENDING"
    assert doc["order_id"] is None
    assert doc["filled_quantity"] == 0
    assert doc["received_at"] == at(0)
    assert doc["events"] == [{"status": "PENDING", "event": "CLAIMED", "at": at(0)}]


def test_given_a_claim_then_it_keeps_the_order_as_validated():
    doc = claim()
    assert (doc["strategy_name"], doc["account_id"]) == ("SPX 1-Day Options", "acc_abc123")
    assert (doc["symbol"], doc["side"], doc["quantity"], doc["order_type"]) == (
        "SPY",
        "BUY",
        100,
        "MARKET",
    )
    assert (doc["stop_loss"], doc["take_profit"]) == (230.0, 240.0)
    assert (doc["time_in_force"], doc["asset_class"]) == ("DAY", "EQUITY")
    assert doc["signal_created_at"] == datetime(2024, 11, 24, 10, 30, tzinfo=UTC)
    assert doc["extra_fields"] == {"confidence": 0.87, "meta": {"model": "spx-1d"}}
    assert (doc["broker"], doc["broker_tag"]) == ("MOCK", "sig_1732450800_5678")
    assert doc["owner"] == {"host": "h1", "pid": 42}


def test_given_a_claim_then_every_value_is_bson_friendly_with_statuses_as_plain_strings():
    doc = claim()
    assert type(doc["status"]) is str
    assert type(doc["asset_class"]) is str
    assert type(doc["events"][0]["status"]) is str
    assert_bson_friendly(doc)


def test_given_an_unknown_field_with_a_huge_integer_then_the_claim_is_still_bson_friendly():
    assert_bson_friendly(claim(big=10**20))


# -- new_rejection --------------------------------------------------------------------------


def test_given_an_invalid_message_when_rejected_then_the_record_keeps_reason_and_raw_message():
    raw = json.dumps({**SPEC_EXAMPLE, "quantity": 0}).encode()
    parsed = parse_signal(raw)
    assert isinstance(parsed, Invalid)
    doc = new_rejection(parsed.signal_id, parsed.fields, parsed.reason, at(0), raw_body=raw)
    assert doc["status"] == "REJECTED"
    assert doc["reject_reason"] == "quantity must be > 0, got 0"
    assert doc["raw_message"] == raw.decode()
    assert doc["closed_at"] == at(0)
    assert doc["events"] == [
        {
            "status": "REJECTED",
            "event": "REJECTED",
            "at": at(0),
            "reason": "quantity must be > 0, got 0",
        }
    ]
    assert doc["signal_id"] == "sig_1732450800_5678"
    assert (doc["symbol"], doc["side"], doc["quantity"]) == ("SPY", "BUY", 0)
    assert doc["strategy_name"] == "SPX 1-Day Options"
    assert_bson_friendly(doc)


def test_given_a_rejection_with_a_signal_id_in_its_fields_then_the_record_id_is_not_overridden():
    doc = new_rejection("sig_1", {"signal_id": "sig_other", "symbol": "SPY"}, "bad", at(0))
    assert (doc["_id"], doc["signal_id"]) == ("exec_sig_1", "sig_1")


def test_given_a_raw_body_that_is_not_utf8_then_it_is_kept_readable():
    doc = new_rejection(
        "sig_1",
        {},
        "account_id is required",
        at(0),
        raw_body=b'{"signal_id":"sig_1","symbol":"\xff"}',
    )
    assert doc["raw_message"] == '{"signal_id":"sig_1","symbol":"\ufffd"}'


def test_given_a_huge_raw_body_then_the_kept_copy_is_bounded():
    doc = new_rejection("sig_1", {}, "too big", at(0), raw_body=b"x" * 50_000)
    assert len(doc["raw_message"]) == 10_000


def test_given_no_raw_body_then_the_rejection_has_no_raw_message():
    assert "raw_message" not in new_rejection("sig_1", {}, "bad", at(0))


def test_given_a_rejected_message_with_a_huge_integer_quantity_then_the_record_is_bson_friendly():
    raw = json.dumps({**SPEC_EXAMPLE, "quantity": 10**30, "symbol": "$BAD"}).encode()
    parsed = parse_signal(raw)
    assert isinstance(parsed, Invalid)
    assert_bson_friendly(
        new_rejection(parsed.signal_id, parsed.fields, parsed.reason, at(0), raw_body=raw)
    )


# -- state_of / state_fields ----------------------------------------------------------------


@pytest.mark.parametrize("status", list(OrderStatus), ids=str)
def test_given_an_order_in_any_status_then_state_fields_and_state_of_round_trip(status):
    state = order_in(status)
    doc = {**claim(), **state_fields(state)}
    assert state_of(doc) == state
    assert_bson_friendly(doc)


@pytest.mark.parametrize("status", list(OrderStatus), ids=str)
def test_given_naive_utc_datetimes_from_the_store_then_state_of_reads_them_as_utc(status):
    state = order_in(status)
    stored = bson.decode(bson.encode({**claim(), **state_fields(state)}))  # naive UTC, as pymongo
    assert state_of(stored) == state


@given(
    st.lists(
        st.tuples(st.integers(1, 60), st.integers(1, 100_000), st.integers(0, 500)), max_size=8
    )
)
def test_given_any_fills_then_the_stored_record_reads_back_as_the_same_state(raw_fills):
    """(Fill times are whole seconds: BSON dates keep milliseconds.)"""
    state = submit(OrderState("sig_1732450800_5678", 100.0), "ord_rt", at(1)).state
    fills = [
        Fill(f"x{i}", float(q), p / 100, at(2 + s), 0.01) for i, (q, p, s) in enumerate(raw_fills)
    ]
    state = apply_fills(state, fills, at(600)).state
    stored = bson.decode(bson.encode({**claim(), **state_fields(state)}))
    assert state_of(stored) == state


def test_given_a_filled_order_then_the_record_fields_follow_from_its_fills():
    fields = state_fields(order_in(S.FILLED))
    assert fields["status"] == "FILLED"
    assert fields["filled_quantity"] == 100
    assert fields["avg_fill_price"] == pytest.approx(235.15)
    assert fields["commission"] == pytest.approx(1.0)
    assert fields["total_value"] == pytest.approx(23515.00)
    assert fields["filled_at"] == at(3)
    assert fields["notes"] == "Filled in 2 seconds"
    assert [f["exec_id"] for f in fields["fills"]] == ["exec_1", "exec_2"]


def test_given_a_cancelled_partial_fill_then_the_note_says_how_much_was_filled():
    fields = state_fields(order_in(S.CANCELLED))
    assert (fields["status"], fields["cancel_reason"]) == ("CANCELLED", "timeout")
    assert fields["notes"] == "Cancelled with 40/100 filled"


# -- confirmation (SPEC §6) -----------------------------------------------------------------


def test_given_a_fill_completing_the_order_then_the_confirmation_has_every_spec_field():
    before = order_in(S.PARTIALLY_FILLED)
    change = apply_fills(before, [Fill("exec_2", 60.0, 235.1833333, at(3), 0.6)], at(3))
    doc = {**claim(), **state_fields(change.state)}
    payload = confirmation(doc, change.events[-1], 3)
    assert set(payload) >= CONFIRMATION_FIELDS
    assert payload["signal_id"] == "sig_1732450800_5678"
    assert payload["order_id"] == "ord_broker_12345"
    assert payload["status"] == "FILLED"
    assert payload["filled_quantity"] == 100
    assert payload["avg_fill_price"] == pytest.approx(235.15)
    assert payload["filled_at"] == "2024-11-24T10:30:13Z"
    assert payload["commission"] == pytest.approx(1.0)
    assert (payload["account_id"], payload["symbol"], payload["side"], payload["quantity"]) == (
        "acc_abc123",
        "SPY",
        "BUY",
        100,
    )
    assert payload["reason"] is None
    assert payload["sequence"] == 3


def test_given_a_submission_then_the_confirmation_carries_the_order_id_and_no_fill():
    change = submit(OrderState("sig_1732450800_5678", 100.0), "ord_broker_12345", at(1))
    payload = confirmation({**claim(), **state_fields(change.state)}, change.events[0], 1)
    assert set(payload) >= CONFIRMATION_FIELDS
    assert (payload["status"], payload["order_id"], payload["sequence"]) == (
        "SUBMITTED",
        "ord_broker_12345",
        1,
    )
    assert (payload["filled_quantity"], payload["filled_at"], payload["reason"]) == (0, None, None)


def test_given_a_cancellation_after_a_partial_fill_then_the_confirmation_has_reason_and_fill():
    change = cancel(order_in(S.PARTIALLY_FILLED), "timeout after 60s", at(61))
    payload = confirmation({**claim(), **state_fields(change.state)}, change.events[0], 3)
    assert set(payload) >= CONFIRMATION_FIELDS
    assert (payload["status"], payload["reason"], payload["filled_quantity"]) == (
        "CANCELLED",
        "timeout after 60s",
        40,
    )
    assert payload["avg_fill_price"] == pytest.approx(235.10)


def test_given_a_rejection_then_the_confirmation_has_the_reason_and_attributes_to_filter_on():
    doc = new_rejection(
        "sig_1",
        {"account_id": "acc_abc123", "symbol": "SPY", "side": "buy", "quantity": 0},
        "quantity must be > 0, got 0",
        at(0),
    )
    change = reject(OrderState("sig_1", 0.0), "quantity must be > 0, got 0", at(0))
    payload = confirmation(doc, change.events[0], 1)
    assert set(payload) >= CONFIRMATION_FIELDS
    assert (payload["status"], payload["reason"], payload["side"]) == (
        "REJECTED",
        "quantity must be > 0, got 0",
        "BUY",
    )
    data, attributes = confirmation_message(payload)
    assert json.loads(data) == payload
    assert attributes == {
        "signal_id": "sig_1",
        "status": "REJECTED",
        "account_id": "acc_abc123",
        "sequence": "1",
    }
    assert all(type(v) is str for v in attributes.values())


def test_given_a_late_fill_then_the_confirmation_says_so_and_stays_cancelled():
    late = apply_fills(order_in(S.CANCELLED), [Fill("exec_9", 10.0, 236.0, at(62))], at(63))
    payload = confirmation({**claim(), **state_fields(late.state)}, late.events[0], 4)
    assert (payload["status"], payload["event"], payload["filled_quantity"]) == (
        "CANCELLED",
        "LATE_FILL",
        50,
    )
    assert payload["filled_at"] == "2024-11-24T10:31:12Z"


# -- compute_backoff ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 30.0), (8, 30.0)],
)
def test_given_failed_attempts_then_the_wait_doubles_from_the_base_up_to_the_cap(attempt, expected):
    assert compute_backoff(attempt, 0.5, cap=30.0) == expected


def test_given_the_default_cap_then_waits_stop_at_30_seconds():
    assert compute_backoff(20, 1.0) == 30.0


@pytest.mark.parametrize(("attempt", "base"), [(0, 1.0), (-1, 1.0), (1, 0.0), (3, -1.0)])
def test_given_no_attempt_yet_or_no_base_then_there_is_no_wait(attempt, base):
    assert compute_backoff(attempt, base) == 0.0


@given(st.integers(1, 1000), st.floats(0.001, 10.0), st.floats(0.01, 600.0))
def test_given_any_attempt_then_the_wait_is_capped_and_never_shrinks(attempt, base, cap):
    wait = compute_backoff(attempt, base, cap)
    assert 0 < wait <= cap
    assert compute_backoff(attempt + 1, base, cap) >= wait
    if base * 2**attempt <= cap:
        assert compute_backoff(attempt + 1, base, cap) == pytest.approx(2 * wait)


def test_given_a_very_long_outage_then_the_wait_is_still_the_cap():
    assert compute_backoff(1025, 0.5, cap=30.0) == 30.0


def test_given_a_backoff_policy_then_it_waits_as_compute_backoff_does():
    """Given one Backoff policy, when asked after each attempt, then it doubles from its base
    and stops at its cap (the store, broker and publishing loops all use it)."""
    policy = Backoff(0.5, cap=3.0)
    assert [policy.after(n) for n in range(0, 6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert all(policy.after(n) == compute_backoff(n, 0.5, 3.0) for n in range(0, 40))
