"""The order lifecycle (SPEC §4): the transition table, the pure state changes, the fill rules."""

from __future__ import annotations

import itertools
from dataclasses import FrozenInstanceError
from dataclasses import replace as dataclass_replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.base import BrokerStatus, Fill
from execution_service.domain.orders import (
    TERMINAL,
    TRANSITIONS,
    Change,
    IllegalTransition,
    OrderState,
    OrderStatus,
    RecordedFill,
    apply_fills,
    can_transition,
    cancel,
    follow_broker,
    reject,
    request_cancel,
    submit,
)

S = OrderStatus
T0 = datetime(2024, 11, 24, 10, 30, 10, tzinfo=UTC)
ALL_STATUSES = list(OrderStatus)

# SPEC §4, read off the diagram. PARTIALLY_FILLED -> PARTIALLY_FILLED is each further partial
# fill ("each new fill while PARTIALLY_FILLED" is a status change in §6). CANCELLED has no exit:
# a late fill is recorded without leaving it. PENDING_CANCEL (§11): a cancel sent and not yet
# confirmed; fills still land (to FILLED, or staying PENDING_CANCEL), a refused cancel returns
# the order to working.
SPEC_EXITS: dict[OrderStatus, set[OrderStatus]] = {
    S.PENDING: {S.SUBMITTED, S.REJECTED},
    S.SUBMITTED: {S.PARTIALLY_FILLED, S.FILLED, S.REJECTED, S.CANCELLED, S.PENDING_CANCEL},
    S.PARTIALLY_FILLED: {S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.PENDING_CANCEL},
    S.PENDING_CANCEL: {S.PENDING_CANCEL, S.FILLED, S.CANCELLED, S.REJECTED, S.SUBMITTED,
                       S.PARTIALLY_FILLED},
    S.FILLED: set(),
    S.REJECTED: set(),
    S.CANCELLED: set(),
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fill(
    exec_id: str,
    quantity: float,
    price: float = 10.0,
    seconds: float = 1.0,
    commission: float = 0.0,
) -> Fill:
    return Fill(
        exec_id=exec_id, quantity=quantity, price=price, at=at(seconds), commission=commission
    )


def state_in(status: OrderStatus, quantity: float = 100.0) -> OrderState:
    """An order of `quantity` brought to `status` through the real state changes.
    PARTIALLY_FILLED and CANCELLED carry a 40-unit fill (exec id e1)."""
    state = OrderState("sig_1", quantity)
    if status is S.PENDING:
        return state
    state = submit(state, "ord_1", at(0)).state
    if status is S.SUBMITTED:
        return state
    if status is S.REJECTED:
        return reject(state, "Insufficient margin", at(1)).state
    if status is S.FILLED:
        return apply_fills(state, [fill("e1", quantity)], at(1)).state
    state = apply_fills(state, [fill("e1", 40)], at(1)).state
    if status is S.PARTIALLY_FILLED:
        return state
    if status is S.PENDING_CANCEL:
        return request_cancel(state, "cancelled by upstream request req_1", at(2), "req_1").state
    return cancel(state, "timeout", at(2)).state


def event_names(change: Change) -> list[str]:
    return [event.event for event in change.events]


# -- the table ------------------------------------------------------------------------------


def test_given_the_table_then_every_status_has_an_entry():
    assert set(TRANSITIONS) == set(OrderStatus)
    assert {S.FILLED, S.REJECTED, S.CANCELLED} == TERMINAL


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(ALL_STATUSES, ALL_STATUSES)), ids=lambda s: str(s)
)
def test_given_any_pair_of_statuses_then_the_move_is_allowed_exactly_per_the_spec_diagram(
    current, target
):
    assert can_transition(current, target) is (target in SPEC_EXITS[current])


@pytest.mark.parametrize("status", ALL_STATUSES, ids=str)
def test_given_a_status_then_it_is_terminal_exactly_when_the_spec_says_so(status):
    assert status.is_terminal is (status in (S.FILLED, S.REJECTED, S.CANCELLED))


@pytest.mark.parametrize("status", [S.FILLED, S.REJECTED, S.CANCELLED], ids=str)
def test_given_a_terminal_status_then_no_transition_leaves_it(status):
    assert not any(can_transition(status, target) for target in ALL_STATUSES)


# -- every operation from every status --------------------------------------------------------

# (status, operation) -> the status after it, "same" for a no-op, or IllegalTransition
OPERATION_OUTCOMES = {
    (S.PENDING, "submit"): S.SUBMITTED,
    (S.SUBMITTED, "submit"): "same",
    (S.PARTIALLY_FILLED, "submit"): "same",
    (S.FILLED, "submit"): "same",
    (S.REJECTED, "submit"): "same",
    (S.CANCELLED, "submit"): "same",
    (S.PENDING, "reject"): S.REJECTED,
    (S.SUBMITTED, "reject"): S.REJECTED,
    (S.PARTIALLY_FILLED, "reject"): IllegalTransition,
    (S.FILLED, "reject"): IllegalTransition,
    (S.REJECTED, "reject"): "same",
    (S.CANCELLED, "reject"): IllegalTransition,
    (S.PENDING, "cancel"): IllegalTransition,
    (S.SUBMITTED, "cancel"): S.CANCELLED,
    (S.PARTIALLY_FILLED, "cancel"): S.CANCELLED,
    (S.FILLED, "cancel"): IllegalTransition,
    (S.REJECTED, "cancel"): IllegalTransition,
    (S.CANCELLED, "cancel"): "same",
    (S.PENDING, "partial_fill"): IllegalTransition,  # fills come only after SUBMITTED
    (S.SUBMITTED, "partial_fill"): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, "partial_fill"): S.PARTIALLY_FILLED,
    (S.FILLED, "partial_fill"): S.FILLED,  # an OVERFILL: recorded as the venue reports it
    (S.REJECTED, "partial_fill"): "same",
    (S.CANCELLED, "partial_fill"): S.CANCELLED,  # a LATE_FILL
}

OPERATIONS = {
    "submit": lambda s: submit(s, "ord_2", at(5)),
    "reject": lambda s: reject(s, "broker said no", at(5)),
    "cancel": lambda s: cancel(s, "timeout", at(5)),
    "partial_fill": lambda s: apply_fills(s, [fill("e9", 10, seconds=5)], at(5)),
}


@pytest.mark.parametrize(("status", "operation"), list(OPERATION_OUTCOMES), ids=str)
def test_given_an_order_in_any_status_when_any_operation_is_applied_then_it_follows_the_table(
    status, operation
):
    state = state_in(status)
    expected = OPERATION_OUTCOMES[(status, operation)]
    if expected is IllegalTransition:
        with pytest.raises(IllegalTransition) as raised:
            OPERATIONS[operation](state)
        assert raised.value.current is status
        return
    change = OPERATIONS[operation](state)
    if expected == "same":
        assert change.state == state
        assert change.events == ()
        return
    assert change.state.status is expected
    if status not in (S.CANCELLED, S.FILLED):  # a late fill, an overfill: no transition
        assert can_transition(status, expected)
    assert [event.status for event in change.events] == [expected]


def test_given_an_illegal_move_then_the_error_names_both_statuses():
    with pytest.raises(IllegalTransition, match="FILLED -> CANCELLED"):
        cancel(state_in(S.FILLED), "timeout", at(5))


# -- submit / reject / cancel ---------------------------------------------------------------


def test_given_a_pending_order_when_submitted_then_order_id_time_and_one_event_are_recorded():
    change = submit(OrderState("sig_1", 100), "ord_1", at(0))
    assert change.state.status is S.SUBMITTED
    assert change.state.order_id == "ord_1"
    assert change.state.submitted_at == at(0)
    assert len(change.events) == 1
    event = change.events[0]
    assert (event.status, event.event, event.at, event.detail) == (
        S.SUBMITTED,
        "SUBMITTED",
        at(0),
        {"order_id": "ord_1"},
    )


def test_given_a_submitted_order_when_submitted_again_then_nothing_changes():
    state = state_in(S.SUBMITTED)
    again = submit(state, "ord_other", at(9))
    assert again.state == state
    assert again.state.order_id == "ord_1"
    assert again.state.submitted_at == at(0)
    assert again.events == ()


def test_given_a_rejected_order_when_rejected_again_then_the_first_reason_stays():
    state = state_in(S.REJECTED)
    again = reject(state, "another reason", at(9))
    assert again.state == state
    assert again.state.reject_reason == "Insufficient margin"
    assert again.events == ()


def test_given_a_pending_order_when_rejected_then_reason_closed_at_and_event_are_recorded():
    change = reject(OrderState("sig_1", 100), "Insufficient margin", at(3))
    assert change.state.status is S.REJECTED
    assert change.state.reject_reason == "Insufficient margin"
    assert change.state.closed_at == at(3)
    assert [(e.event, e.detail) for e in change.events] == [
        ("REJECTED", {"reason": "Insufficient margin"})
    ]


def test_given_a_partial_fill_when_cancelled_then_the_filled_part_is_kept():
    state = state_in(S.PARTIALLY_FILLED)
    change = cancel(state, "timeout", at(60))
    assert change.state.status is S.CANCELLED
    assert change.state.filled_quantity == 40
    assert change.state.fills == state.fills
    assert change.state.cancel_reason == "timeout"
    assert change.state.closed_at == at(60)
    assert [(e.event, e.detail) for e in change.events] == [
        ("CANCELLED", {"reason": "timeout", "filled_quantity": 40})
    ]


def test_given_a_cancelled_order_when_cancelled_again_then_nothing_changes():
    state = state_in(S.CANCELLED)
    again = cancel(state, "another reason", at(9))
    assert again.state == state
    assert again.state.cancel_reason == "timeout"
    assert again.events == ()


# -- fills ----------------------------------------------------------------------------------


def test_given_a_submitted_order_when_a_partial_fill_arrives_then_it_is_partially_filled():
    change = apply_fills(state_in(S.SUBMITTED), [fill("e1", 40, 235.15, commission=0.4)], at(2))
    state = change.state
    assert state.status is S.PARTIALLY_FILLED
    assert (state.filled_quantity, state.remaining_quantity) == (40, 60)
    assert state.avg_fill_price == 235.15
    assert state.filled_at is None and state.closed_at is None
    [event] = change.events
    assert (event.status, event.event) == (S.PARTIALLY_FILLED, "FILL")
    assert event.detail["exec_id"] == "e1"
    assert event.detail["quantity"] == 40
    assert event.detail["price"] == 235.15
    assert event.detail["filled_quantity"] == 40
    assert event.detail["avg_fill_price"] == 235.15
    assert event.detail["commission"] == 0.4
    assert event.detail["fill_at"] == at(1)
    assert "overfill" not in event.detail


def test_given_fills_completing_the_order_then_it_is_filled_at_the_last_fill_time():
    change = apply_fills(
        state_in(S.SUBMITTED), [fill("e1", 40, seconds=1), fill("e2", 60, seconds=2)], at(3)
    )
    assert change.state.status is S.FILLED
    assert change.state.filled_quantity == 100
    assert change.state.remaining_quantity == 0
    assert change.state.filled_at == at(2)
    assert change.state.closed_at == at(3)
    assert [e.status for e in change.events] == [S.PARTIALLY_FILLED, S.FILLED]


def test_given_fills_listed_out_of_time_order_then_they_are_applied_in_time_order():
    change = apply_fills(
        state_in(S.SUBMITTED), [fill("late", 60, seconds=9), fill("early", 40, seconds=1)], at(10)
    )
    assert [e.detail["exec_id"] for e in change.events] == ["early", "late"]
    assert change.state.filled_at == at(9)


def test_given_a_fill_already_recorded_when_it_is_reported_again_then_it_is_ignored():
    state = state_in(S.PARTIALLY_FILLED)
    again = apply_fills(state, [fill("e1", 40)], at(5))
    assert again.state == state
    assert again.events == ()


def test_given_an_exec_id_reported_again_with_another_quantity_then_the_first_report_stands():
    state = state_in(S.PARTIALLY_FILLED)
    again = apply_fills(state, [fill("e1", 55, price=99.0)], at(5))
    assert again.state == state
    assert again.events == ()


def test_given_the_same_fill_twice_in_one_batch_then_it_is_counted_once():
    change = apply_fills(state_in(S.SUBMITTED), [fill("e1", 30), fill("e1", 30)], at(2))
    assert change.state.filled_quantity == 30
    assert event_names(change) == ["FILL"]


@pytest.mark.parametrize("quantity", [0, -5], ids=["zero", "negative"])
def test_given_a_fill_of_no_positive_quantity_then_it_is_ignored(quantity):
    state = state_in(S.SUBMITTED)
    change = apply_fills(state, [fill("e1", quantity)], at(2))
    assert change.state == state
    assert change.events == ()


def test_given_fills_beyond_the_order_quantity_then_recorded_as_reported_with_the_overfill():
    change = apply_fills(
        state_in(S.SUBMITTED),
        [fill("e1", 60, 10.0, seconds=1), fill("e2", 60, 11.0, seconds=2)],
        at(3),
    )
    assert change.state.status is S.FILLED
    assert change.state.filled_quantity == 120
    assert [f.quantity for f in change.state.fills] == [60, 60]
    last = change.events[-1].detail
    assert last["quantity"] == 60
    assert last["overfill"] == 20
    assert change.state.avg_fill_price == pytest.approx(10.5)


def test_given_a_filled_order_when_another_fill_arrives_then_it_is_an_overfill_event():
    state = state_in(S.FILLED)
    change = apply_fills(state, [fill("e2", 10)], at(5))
    assert change.state.status is S.FILLED
    assert change.state.filled_quantity == 110
    [event] = change.events
    assert (event.event, event.status, event.detail["overfill"]) == ("OVERFILL", S.FILLED, 10)
    assert apply_fills(change.state, [fill("e2", 10)], at(6)).events == ()  # once per exec id


def test_given_a_rejected_order_when_a_fill_arrives_then_it_is_ignored():
    state = state_in(S.REJECTED)
    change = apply_fills(state, [fill("e2", 10)], at(5))
    assert change.state == state
    assert change.events == ()


def test_given_a_cancelled_order_when_a_late_fill_arrives_then_it_is_recorded_and_stays_cancelled():
    state = state_in(S.CANCELLED)
    change = apply_fills(state, [fill("e2", 25, price=12.0, seconds=61)], at(62))
    assert change.state.status is S.CANCELLED
    assert change.state.filled_quantity == 65
    assert change.state.cancel_reason == "timeout"
    [event] = change.events
    assert (event.status, event.event) == (S.CANCELLED, "LATE_FILL")
    assert event.detail["exec_id"] == "e2"
    assert event.detail["filled_quantity"] == 65


def test_given_a_cancelled_order_when_late_fills_pass_its_quantity_then_cancelled_overfilled():
    change = apply_fills(state_in(S.CANCELLED), [fill("e2", 100, seconds=61)], at(62))
    assert change.state.status is S.CANCELLED
    assert change.state.filled_quantity == 140
    assert change.events[0].event == "LATE_FILL"
    assert change.events[0].detail["overfill"] == 40
    assert apply_fills(change.state, [fill("e2", 100, seconds=61)], at(64)).events == ()


def test_given_fills_at_different_prices_then_the_average_is_weighted_by_quantity():
    change = apply_fills(
        state_in(S.SUBMITTED),
        [fill("e1", 30, 10.0, seconds=1), fill("e2", 70, 20.0, seconds=2)],
        at(3),
    )
    assert change.state.avg_fill_price == pytest.approx(17.0)
    assert change.events[0].detail["avg_fill_price"] == 10.0
    assert change.events[1].detail["avg_fill_price"] == pytest.approx(17.0)


def test_given_no_fills_then_there_is_no_average_price():
    assert state_in(S.SUBMITTED).avg_fill_price is None


def test_given_fills_with_commissions_then_the_commission_is_their_sum():
    change = apply_fills(
        state_in(S.SUBMITTED),
        [fill("e1", 30, commission=0.25, seconds=1), fill("e2", 70, commission=0.75, seconds=2)],
        at(3),
    )
    assert change.state.commission == pytest.approx(1.0)


def test_given_a_fractional_order_when_filled_in_fractions_then_it_completes():
    state = submit(OrderState("sig_btc", 0.3), "ord_1", at(0)).state
    change = apply_fills(state, [fill("e1", 0.1, seconds=1), fill("e2", 0.2, seconds=2)], at(3))
    assert change.state.status is S.FILLED
    assert change.state.filled_quantity == pytest.approx(0.3)


# -- follow_broker --------------------------------------------------------------------------


def follow(
    state: OrderState,
    status: BrokerStatus,
    fills=(),
    reason=None,
    cancel_reason=None,
    seconds: float = 10,
) -> Change:
    return follow_broker(
        state,
        order_id="ord_1",
        broker_status=status,
        fills=list(fills),
        reason=reason,
        at=at(seconds),
        cancel_reason=cancel_reason,
    )


# broker status with no fills, from SUBMITTED -> our status
@pytest.mark.parametrize(
    ("broker_status", "expected"),
    [
        (BrokerStatus.PENDING, S.SUBMITTED),
        (BrokerStatus.WORKING, S.SUBMITTED),
        (BrokerStatus.FILLED, S.SUBMITTED),  # no fills reported yet: nothing to record
        (BrokerStatus.CANCELLED, S.CANCELLED),
        (BrokerStatus.REJECTED, S.REJECTED),
    ],
    ids=str,
)
def test_given_a_submitted_order_when_the_broker_reports_a_status_without_fills_then_it_follows(
    broker_status, expected
):
    change = follow(state_in(S.SUBMITTED), broker_status)
    assert change.state.status is expected
    assert change.state.filled_quantity == 0


# broker status with a 40-unit fill (a full 100-unit one for FILLED), from SUBMITTED
@pytest.mark.parametrize(
    ("broker_status", "fill_qty", "expected"),
    [
        (BrokerStatus.PENDING, 40, S.PARTIALLY_FILLED),
        (BrokerStatus.WORKING, 40, S.PARTIALLY_FILLED),
        (BrokerStatus.FILLED, 100, S.FILLED),
        (BrokerStatus.CANCELLED, 40, S.CANCELLED),
        (BrokerStatus.REJECTED, 40, S.CANCELLED),  # a rejection after a fill keeps the fill
    ],
    ids=str,
)
def test_given_a_submitted_order_when_the_broker_reports_a_status_with_fills_then_fills_are_kept(
    broker_status, fill_qty, expected
):
    change = follow(state_in(S.SUBMITTED), broker_status, [fill("e1", fill_qty)])
    assert change.state.status is expected
    assert change.state.filled_quantity == fill_qty


@pytest.mark.parametrize("broker_status", [BrokerStatus.PENDING, BrokerStatus.WORKING], ids=str)
def test_given_a_pending_order_when_the_broker_knows_it_then_it_becomes_submitted(broker_status):
    change = follow(OrderState("sig_1", 100), broker_status)
    assert change.state.status is S.SUBMITTED
    assert change.state.order_id == "ord_1"
    assert change.state.submitted_at == at(10)
    assert event_names(change) == ["SUBMITTED"]


def test_given_a_pending_order_placed_before_a_crash_when_the_broker_filled_it_then_all_recorded():
    change = follow(
        OrderState("sig_1", 100),
        BrokerStatus.FILLED,
        [fill("e1", 40, seconds=1), fill("e2", 60, seconds=2)],
    )
    assert change.state.status is S.FILLED
    assert change.state.order_id == "ord_1"
    assert event_names(change) == ["SUBMITTED", "FILL", "FILL"]


def test_given_a_pending_order_when_the_broker_rejected_it_without_fills_then_it_is_rejected():
    change = follow(OrderState("sig_1", 100), BrokerStatus.REJECTED, reason="Insufficient margin")
    assert change.state.status is S.REJECTED
    assert change.state.reject_reason == "Insufficient margin"
    assert event_names(change) == ["REJECTED"]


def test_given_a_broker_rejection_without_a_reason_then_a_reason_is_still_recorded():
    change = follow(state_in(S.SUBMITTED), BrokerStatus.REJECTED)
    assert change.state.reject_reason == "rejected by broker"


def test_given_a_partial_fill_when_the_broker_cancels_then_the_fill_is_kept_with_its_reason():
    change = follow(
        state_in(S.PARTIALLY_FILLED),
        BrokerStatus.CANCELLED,
        [fill("e1", 40)],
        reason="Cancelled by venue",
    )
    assert change.state.status is S.CANCELLED
    assert change.state.filled_quantity == 40
    assert change.state.cancel_reason == "Cancelled by venue"
    assert event_names(change) == ["CANCELLED"]


def test_given_a_cancel_we_asked_for_then_our_reason_wins_over_the_brokers():
    change = follow(
        state_in(S.PARTIALLY_FILLED),
        BrokerStatus.CANCELLED,
        [fill("e1", 40)],
        reason="API cancel",
        cancel_reason="timeout after 60s",
    )
    assert change.state.cancel_reason == "timeout after 60s"


def test_given_a_broker_cancel_without_any_reason_then_a_reason_is_still_recorded():
    change = follow(state_in(S.SUBMITTED), BrokerStatus.CANCELLED)
    assert change.state.cancel_reason == "cancelled by broker"


def test_given_a_partial_fill_when_the_broker_reports_rejected_then_it_is_cancelled_not_rejected():
    change = follow(
        state_in(S.PARTIALLY_FILLED), BrokerStatus.REJECTED, [fill("e1", 40)], reason="halted"
    )
    assert change.state.status is S.CANCELLED
    assert change.state.filled_quantity == 40


def test_given_a_cancel_that_raced_a_fill_when_the_broker_reports_it_then_it_is_a_late_fill():
    cancelled = state_in(S.CANCELLED)
    change = follow(cancelled, BrokerStatus.CANCELLED, [fill("e1", 40), fill("e2", 20, seconds=59)])
    assert change.state.status is S.CANCELLED
    assert change.state.filled_quantity == 60
    assert event_names(change) == ["LATE_FILL"]


@pytest.mark.parametrize("status", ALL_STATUSES, ids=str)
def test_given_any_order_when_the_same_broker_snapshot_is_seen_twice_then_the_second_is_a_no_op(
    status,
):
    snapshot = {"status": BrokerStatus.WORKING, "fills": [fill("e1", 40)]}
    if status is S.FILLED:
        snapshot = {"status": BrokerStatus.FILLED, "fills": [fill("e1", 100)]}
    if status is S.REJECTED:
        snapshot = {"status": BrokerStatus.REJECTED, "fills": []}
    if status is S.CANCELLED:
        snapshot = {"status": BrokerStatus.CANCELLED, "fills": [fill("e1", 40)]}
    first = follow(state_in(status), snapshot["status"], snapshot["fills"])
    second = follow(first.state, snapshot["status"], snapshot["fills"], seconds=20)
    assert second.state == first.state
    assert second.events == ()


@pytest.mark.parametrize("broker_status", list(BrokerStatus), ids=str)
def test_given_a_rejected_or_filled_order_then_only_a_venue_overfill_changes_it(broker_status):
    rejected = state_in(S.REJECTED)
    assert follow(rejected, broker_status, [fill("e7", 5)]) == Change(rejected)
    filled = state_in(S.FILLED)
    assert follow(filled, broker_status, [fill("e1", filled.quantity)]) == Change(filled)
    change = follow(filled, broker_status, [fill("e1", filled.quantity), fill("e7", 5)])
    assert change.state.status is S.FILLED and change.state.filled_quantity == filled.quantity + 5
    assert [(e.event, e.detail["overfill"]) for e in change.events] == [("OVERFILL", 5)]


# -- property: any fills, any grouping --------------------------------------------------------


@st.composite
def fill_scenarios(draw):
    """An order quantity, a pool of distinct executions, the order in which the broker reports
    them (with repeats: a redelivered execution is the same execution) and a grouping of those
    reports into batches."""
    fractional = draw(st.booleans())
    amounts = st.integers(1, 5_000).map(lambda c: c / 100) if fractional else st.integers(1, 60)
    quantity = float(draw(amounts.map(lambda a: a * 2)))
    pool = draw(
        st.lists(
            st.tuples(amounts, st.integers(1, 50_000), st.integers(0, 120)), min_size=1, max_size=12
        )
    )
    executions = [
        fill(f"x{i}", float(qty), price / 100, seconds=secs)
        for i, (qty, price, secs) in enumerate(pool)
    ]
    reports = draw(st.lists(st.sampled_from(executions), min_size=1, max_size=25))
    cuts = sorted(
        draw(st.sets(st.integers(1, len(reports) - 1), max_size=len(reports) - 1))
        if len(reports) > 1
        else set()
    )
    edges = [0, *cuts, len(reports)]
    batches = [reports[a:b] for a, b in itertools.pairwise(edges)]
    return quantity, batches


@settings(max_examples=300, deadline=None)
@given(fill_scenarios())
def test_given_any_fills_in_any_grouping_then_filled_quantity_is_the_distinct_sum(scenario):
    quantity, batches = scenario
    state = submit(OrderState("sig_p", quantity), "ord_p", at(0)).state
    seen: dict[str, float] = {}
    previous = 0.0
    for batch in batches:
        state = apply_fills(state, batch, at(200)).state
        for report in batch:
            seen.setdefault(report.exec_id, report.quantity)
        expected = sum(seen.values())  # as the venue reports it, past the quantity too
        filled = state.filled_quantity
        assert filled == pytest.approx(expected, abs=1e-9)
        assert filled >= previous  # never decreases
        fully_filled = filled >= quantity - 1e-9
        assert (state.status is S.FILLED) is fully_filled
        if not fully_filled:
            assert state.status is (S.PARTIALLY_FILLED if filled > 0 else S.SUBMITTED)
        previous = filled
    assert len(state.exec_ids) == len(state.fills)  # no exec id recorded twice


@settings(max_examples=150, deadline=None)
@given(fill_scenarios())
def test_given_any_fills_then_grouping_them_differently_gives_the_same_outcome(scenario):
    quantity, batches = scenario
    start = submit(OrderState("sig_p", quantity), "ord_p", at(0)).state
    one_by_one = start
    for batch in batches:
        for report in batch:
            one_by_one = apply_fills(one_by_one, [report], at(200)).state
    all_at_once = apply_fills(start, [r for batch in batches for r in batch], at(200)).state
    assert all_at_once.filled_quantity == pytest.approx(one_by_one.filled_quantity, abs=1e-9)
    assert all_at_once.status is one_by_one.status


def test_given_a_state_when_evolved_then_it_equals_dataclasses_replace_and_the_original_stays():
    at = datetime(2026, 1, 2, tzinfo=UTC)
    state = OrderState("sig-1", 10.0, command_ids=("r1",))
    fill = RecordedFill("e1", 4.0, 101.5, at)
    changes = {"status": OrderStatus.PARTIALLY_FILLED, "fills": (fill,), "order_id": "o-1",
               "submitted_at": at}
    evolved = state.evolve(**changes)
    assert evolved == dataclass_replace(state, **changes)
    assert hash(evolved) == hash(dataclass_replace(state, **changes))
    assert evolved.filled_quantity == 4.0 and evolved.command_ids == ("r1",)
    assert state.status is OrderStatus.PENDING and state.fills == ()
    with pytest.raises(FrozenInstanceError):
        evolved.status = OrderStatus.FILLED


def test_given_a_misspelt_field_when_evolving_then_it_is_refused_by_name():
    with pytest.raises(TypeError, match="statuss"):
        OrderState("sig-1", 1.0).evolve(statuss="FILLED")
