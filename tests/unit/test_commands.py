"""Cancel and modify as data (SPEC §11): parsing, the cancel-pending state, refusals, the modify
event, early cancels, confirmations and the Telegram text. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from brokers.base import Fill
from execution_service.domain.commands import (
    CancelOrder,
    CommandAction,
    InvalidCommand,
    ModifyOrder,
    UnusableCommand,
    apply_cancel,
    apply_modify,
    cancel_refusal,
    early_cancel_record,
    is_command,
    modify_refusal,
    parse_command,
    placement_refusal,
    refuse,
    refuse_awaited_order,
)
from execution_service.domain.notices import NoticeKind, OrderNotice
from execution_service.domain.orders import (
    OrderState,
    OrderStatus,
    apply_fills,
    complete,
    follow_broker,
    refuse_cancel,
    request_cancel,
    submit,
)
from execution_service.domain.records import (
    confirmation,
    confirmation_message,
    is_confirmed,
    state_fields,
    state_of,
)
from execution_service.domain.telegram_text import compose_message

S = OrderStatus
T0 = datetime(2026, 11, 29, 14, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def working(quantity: float = 100, filled: float = 0, **fields) -> OrderState:
    state = submit(OrderState("sig_1", quantity, **fields), "ord_1", at(0)).state
    if filled:
        state = apply_fills(state, [Fill("e1", filled, 10.0, at(1))], at(1)).state
    return state


def cancel_cmd(request_id: str = "req_1", **fields) -> CancelOrder:
    return CancelOrder(request_id=request_id, signal_id="sig_1", **fields)


def modify_cmd(request_id: str = "req_2", **fields) -> ModifyOrder:
    return ModifyOrder(request_id=request_id, signal_id="sig_1", **fields)


# parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "expected"), [
    ({}, False), ({"action": "NEW"}, False), ({"action": " new "}, False),
    ({"action": "CANCEL"}, True), ({"action": "modify"}, True), ({"action": 3}, True),
])
def test_given_a_body_then_action_tells_an_order_from_a_command(body, expected):
    assert is_command(body) is expected


def test_given_cancel_body_then_parsed_with_reason_and_upstream_source():
    parsed = parse_command({"action": "cancel", "request_id": "req_1", "signal_id": "sig_1",
                            "reason": "signal withdrawn", "note": "kept out"})
    assert isinstance(parsed, CancelOrder) and parsed.source == "upstream"
    assert parsed.cancel_reason() == "cancelled by upstream request req_1: signal withdrawn"
    assert parsed.placement_reason() == "cancelled by upstream request req_1 before placement"


def test_given_cancel_from_an_operator_then_reason_names_who_asked():
    parsed = cancel_cmd(by="cli:alice")
    assert parsed.source == "operator"
    assert parsed.cancel_reason() == "cancelled by operator request req_1 (cli:alice)"


@pytest.mark.parametrize(("body", "reason"), [
    ({"action": "CANCEL", "signal_id": "sig_1"},
     "CANCEL command: request_id missing (need 1-128 characters of A-Z a-z 0-9 _ . : -)"),
    ({"action": "MODIFY", "request_id": "r 1", "signal_id": "sig_1", "quantity": 1},
     "MODIFY command: request_id invalid: 'r 1' (need 1-128 characters of A-Z a-z 0-9 _ . : -)"),
    ({"action": "CANCEL", "request_id": "req_1"},
     "CANCEL command: signal_id missing (need 1-128 characters of A-Z a-z 0-9 _ . : -)"),
    ({"action": "REPLACE", "request_id": "req_1", "signal_id": "sig_1"},
     "action 'REPLACE' is not NEW, CANCEL or MODIFY"),
])
def test_given_command_without_usable_ids_then_unusable_with_reason(body, reason):
    assert parse_command(body) == UnusableCommand(reason)


@pytest.mark.parametrize(("fields", "reason"), [
    ({}, "failed validation: MODIFY needs at least one of limit_price, stop_price, quantity"),
    ({"quantity": 0}, "failed validation: quantity must be > 0, got 0"),
    ({"limit_price": "abc"}, "failed validation: limit_price"),
])
def test_given_invalid_modify_then_invalid_naming_the_field(fields, reason):
    parsed = parse_command({"action": "MODIFY", "request_id": "req_2", "signal_id": "sig_1",
                            **fields})
    assert isinstance(parsed, InvalidCommand) and parsed.action is CommandAction.MODIFY
    assert parsed.reason.startswith(reason)


# the cancel-pending state --------------------------------------------------------------------

def test_given_working_order_when_cancel_requested_then_pending_cancel_with_request():
    change = apply_cancel(working(), cancel_cmd(), at(2))
    assert change.state.status is S.PENDING_CANCEL
    assert change.state.cancel_request_id == "req_1"
    [event] = change.events
    assert event.event == "CANCEL_REQUESTED" and event.detail["request_id"] == "req_1"
    assert is_confirmed(event)


def test_given_timeout_cancel_then_pending_cancel_without_a_confirmation():
    change = request_cancel(working(), "timeout: not filled within 60s", at(2))
    assert change.state.status is S.PENDING_CANCEL
    assert not is_confirmed(change.events[0])


def test_given_pending_cancel_when_partial_fill_lands_then_kept_and_still_pending():
    pending = apply_cancel(working(), cancel_cmd(), at(2)).state
    change = apply_fills(pending, [Fill("e1", 40, 10.0, at(3))], at(3))
    assert change.state.status is S.PENDING_CANCEL and change.state.filled_quantity == 40
    cancelled = follow_broker(change.state, order_id="ord_1", broker_status="CANCELLED",
                              fills=[Fill("e1", 40, 10.0, at(3))], reason="cancelled",
                              at=at(4))
    assert cancelled.state.status is S.CANCELLED and cancelled.state.filled_quantity == 40
    [event] = cancelled.events
    assert event.detail["reason"] == "cancelled by upstream request req_1"
    assert event.detail["request_id"] == "req_1"


def test_given_pending_cancel_when_order_fills_completely_then_filled_and_cancel_rejected():
    pending = apply_cancel(working(), cancel_cmd(), at(2)).state
    change = apply_fills(pending, [Fill("e1", 100, 10.0, at(3))], at(3))
    assert change.state.status is S.FILLED
    assert [e.event for e in change.events] == ["FILL", "CANCEL_REJECTED"]
    assert change.events[1].detail == {"request_id": "req_1", "reason": "already filled"}


def test_given_pending_cancel_when_broker_refuses_then_back_to_working():
    pending = apply_cancel(working(filled=40), cancel_cmd(), at(2)).state
    change = refuse_cancel(pending, "broker refused: too late", at(3))
    assert change.state.status is S.PARTIALLY_FILLED
    assert change.state.cancel_requested_reason is None
    assert change.events[0].event == "CANCEL_REJECTED"


def test_given_pending_order_when_cancel_requested_then_refused_before_placement():
    pending = OrderState("sig_1", 100)
    change = apply_cancel(pending, cancel_cmd(), at(1))
    assert change.state.status is S.PENDING
    assert placement_refusal(change.state) == \
        "cancelled by upstream request req_1 before placement"
    submitted = submit(change.state, "ord_1", at(2))  # it was being placed meanwhile
    assert submitted.state.status is S.PENDING_CANCEL
    assert [e.event for e in submitted.events] == ["SUBMITTED", "CANCEL_PENDING"]


@pytest.mark.parametrize(("state", "reason"), [
    (working(filled=100), "already filled"),
    (request_cancel(working(), "x", at(1)).state, "a cancel is already pending (asked by "
                                                 "the service)"),
])
def test_given_order_that_cannot_be_cancelled_then_refusal_says_why(state, reason):
    assert cancel_refusal(state) == reason


def test_given_same_request_twice_then_applied_once():
    once = apply_cancel(working(), cancel_cmd(), at(2)).state
    assert apply_cancel(once, cancel_cmd(), at(3)).events == ()
    refused = refuse(once, CommandAction.CANCEL, "req_9", "no", at(3)).state
    assert refuse(refused, CommandAction.CANCEL, "req_9", "no", at(4)).events == ()


# modify --------------------------------------------------------------------------------------

def test_given_working_limit_when_modified_then_new_values_and_old_in_event():
    state = working(limit_price=230.0)
    change = apply_modify(state, modify_cmd(limit_price=236.1, quantity=80), at(2))
    assert change.state.quantity == 80 and change.state.limit_price == 236.1
    [event] = change.events
    assert event.event == "MODIFIED" and event.status is S.SUBMITTED
    assert event.detail == {"request_id": "req_2", "old": {"limit_price": 230.0,
                                                           "quantity": 100},
                            "new": {"limit_price": 236.1, "quantity": 80}}


@pytest.mark.parametrize(("state", "order_type", "fields", "reason"), [
    (working(filled=100), "LIMIT", {"quantity": 120}, "already filled"),
    (OrderState("sig_1", 100, status=S.CANCELLED), "LIMIT", {"quantity": 1},
     "already terminal (CANCELLED)"),
    (OrderState("sig_1", 100), "LIMIT", {"quantity": 1}, "not yet working at the broker "
                                                         "(PENDING)"),
    (working(filled=40), "LIMIT", {"quantity": 30}, "quantity 30 is below the filled "
                                                    "quantity 40"),
    (working(), "MARKET", {"limit_price": 5.0}, "limit_price does not apply to a MARKET order"),
    (request_cancel(working(), "x", at(1)).state, "LIMIT", {"quantity": 9},
     "a cancel is pending"),
])
def test_given_modify_that_breaks_a_rule_then_refused_with_reason(state, order_type, fields,
                                                                   reason):
    assert modify_refusal(state, order_type, modify_cmd(**fields)) == reason


def test_given_modify_the_broker_took_when_its_fill_was_recorded_first_then_still_recorded():
    """A marketable modify fills at once; that fill (80 of the new 80) can be recorded FILLED
    before the MODIFIED write lands. The broker's order has the new values: so must the
    record (refusing it "already filled" left quantity 100 beside the broker's 80)."""
    filled_first = complete(working(limit_price=230.0, filled=80), at(2)).state
    assert filled_first.status is S.FILLED and filled_first.quantity == 100
    command = modify_cmd(limit_price=236.1, quantity=80)
    change = apply_modify(filled_first, command, at(3))
    assert change.state.status is S.FILLED and change.state.filled_quantity == 80
    assert change.state.quantity == 80 and change.state.limit_price == 236.1
    [event] = change.events
    assert event.event == "MODIFIED" and event.detail["old"] == {"limit_price": 230.0,
                                                                 "quantity": 100}
    assert apply_modify(change.state, command, at(4)).events == ()


# records and confirmations -------------------------------------------------------------------

def test_given_command_state_then_it_round_trips_through_the_record():
    state = apply_cancel(working(limit_price=230.0), cancel_cmd(by="cli:bob"), at(2)).state
    doc = {"signal_id": "sig_1", "quantity": 100, "limit_price": 230.0,
           **state_fields(state)}
    assert state_of(doc) == state


def test_given_modified_event_then_confirmation_carries_request_and_new_values():
    change = apply_modify(working(limit_price=230.0), modify_cmd(limit_price=231.0), at(2))
    doc = {"signal_id": "sig_1", "account_id": "acc_1", "quantity": 100}
    payload = confirmation(doc, change.events[0], 2)
    assert payload["event"] == "MODIFIED" and payload["limit_price"] == 231.0
    assert payload["request_id"] == "req_2" and payload["quantity"] == 100
    _body, attributes = confirmation_message(payload)
    assert attributes["request_id"] == "req_2"


def test_given_early_cancel_then_record_rejected_awaiting_order_and_refused_once():
    doc = early_cancel_record(cancel_cmd(), at(1))
    assert doc["status"] == "REJECTED" and doc["awaiting_order"] is True
    assert doc["reject_reason"] == "cancelled by upstream request req_1 before placement"
    [requested] = doc["confirmations"]
    assert requested["event"] == "CANCEL_REQUESTED" and requested["request_id"] == "req_1"
    state = state_of(doc)
    change = refuse_awaited_order(state, at(2))
    [event] = change.events
    assert event.event == "REJECTED" and event.detail["request_id"] == "req_1"
    assert refuse_awaited_order(change.state, at(3)).events == ()


# Telegram ------------------------------------------------------------------------------------

def test_given_modified_notice_then_text_shows_old_and_new_values():
    notice = OrderNotice(kind=NoticeKind.MODIFIED, signal_id="sig_1", strategy_name="S",
                         account_id="acc_1", symbol="SPY", side="BUY", quantity=80,
                         request_id="req_2", changes=(("limit_price", 230.0, 236.1),
                                                      ("quantity", 100.0, 80)))
    assert compose_message(notice) == (
        "✏️ Order Modified\n\nSignal: sig_1\nStrategy: S\nOrder: BUY 80 SPY\n"
        "Changed: limit_price 230 → 236.1, quantity 100 → 80\nRequest: req_2")


def test_given_refused_cancel_notice_then_text_gives_the_reason():
    notice = OrderNotice(kind=NoticeKind.COMMAND_REFUSED, signal_id="sig_1", strategy_name="S",
                         account_id="acc_1", symbol="SPY", side="BUY", quantity=100,
                         reason="already filled", request_id="req_1", command="CANCEL")
    assert compose_message(notice) == ("⛔ Cancel Refused\n\nSignal: sig_1\nOrder: BUY 100 SPY\n"
                                       "Reason: already filled\nRequest: req_1")
