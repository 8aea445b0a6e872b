"""Protective exits (SPEC §12), pure: planning, sizing, one-cancels-other, the exit record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from execution_service.domain.brackets import (
    ENTRY_UNFILLED_REASON,
    OCO_REASON,
    POSITION_CLOSED_REASON,
    BracketView,
    ExitAction,
    ExitRole,
    ExitStep,
    ExitView,
    exit_claim,
    exit_levels,
    is_settled,
    plan_exits,
    resize,
)
from execution_service.domain.notices import NoticeKind, OrderNotice
from execution_service.domain.orders import OrderState, OrderStatus
from execution_service.domain.risk import working_orders
from execution_service.domain.telegram_text import compose_message

AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SL, TP = ExitRole.STOP_LOSS, ExitRole.TAKE_PROFIT
BOTH = {SL: 95.0, TP: 110.0}
S = OrderStatus


def working(quantity: float, filled: float = 0.0, status: OrderStatus = S.SUBMITTED,
            cancel_requested: bool = False) -> ExitView:
    return ExitView(status, quantity, filled, cancel_requested)


def view(entry_filled: float, exits: dict | None = None, position_open: float | None = None,
         levels: dict | None = None) -> BracketView:
    exits = exits or {}
    if position_open is None:
        position_open = entry_filled - sum(e.filled_quantity for e in exits.values())
    return BracketView(levels or BOTH, entry_filled, exits, position_open)


def test_given_unfilled_entry_then_no_exit():
    assert plan_exits(view(0)) == []


def test_given_partly_filled_entry_without_exits_then_both_placed_for_the_filled_part():
    assert plan_exits(view(4)) == [ExitStep(SL, ExitAction.PLACE, 4),
                                   ExitStep(TP, ExitAction.PLACE, 4)]


def test_given_only_a_stop_loss_level_then_only_a_stop_is_placed():
    assert plan_exits(view(4, levels={SL: 95.0})) == [ExitStep(SL, ExitAction.PLACE, 4)]


def test_given_more_of_the_entry_filled_then_working_exits_grow():
    assert plan_exits(view(10, {SL: working(4), TP: working(4)})) == [
        ExitStep(SL, ExitAction.RESIZE, 10), ExitStep(TP, ExitAction.RESIZE, 10)]


def test_given_exits_still_pending_at_the_broker_then_not_resized_yet():
    assert plan_exits(view(10, {SL: working(4, status=S.PENDING),
                                TP: working(4, status=S.PENDING)})) == []


def test_given_take_profit_partly_filled_then_stop_reduced_by_the_same_quantity():
    steps = plan_exits(view(10, {SL: working(10), TP: working(10, 3, S.PARTIALLY_FILLED)}))
    assert steps == [ExitStep(SL, ExitAction.RESIZE, 7)]


def test_given_stop_partly_filled_then_take_profit_keeps_its_fills_plus_the_open_part():
    steps = plan_exits(view(10, {SL: working(10, 4, S.PARTIALLY_FILLED), TP: working(10, 2)}))
    assert steps == [ExitStep(SL, ExitAction.RESIZE, 8), ExitStep(TP, ExitAction.RESIZE, 6)]


def test_given_take_profit_filled_then_stop_cancelled_one_cancels_other():
    assert plan_exits(view(10, {SL: working(10), TP: working(10, 10, S.FILLED)})) == [
        ExitStep(SL, ExitAction.CANCEL, reason=OCO_REASON)]


def test_given_position_closed_by_other_orders_then_both_exits_cancelled_saying_so():
    steps = plan_exits(view(10, {SL: working(10), TP: working(10)}, position_open=0))
    assert steps == [ExitStep(SL, ExitAction.CANCEL, reason=POSITION_CLOSED_REASON),
                     ExitStep(TP, ExitAction.CANCEL, reason=POSITION_CLOSED_REASON)]


def test_given_position_reduced_by_other_orders_then_exits_shrink_to_it():
    steps = plan_exits(view(10, {SL: working(10), TP: working(10)}, position_open=6))
    assert steps == [ExitStep(SL, ExitAction.RESIZE, 6), ExitStep(TP, ExitAction.RESIZE, 6)]


@pytest.mark.parametrize("status", [S.CANCELLED, S.REJECTED])
def test_given_an_exit_cancelled_or_rejected_then_never_placed_again(status):
    assert plan_exits(view(10, {SL: working(10, status=status), TP: working(10)})) == []


def test_given_an_exit_being_cancelled_then_left_alone():
    assert plan_exits(view(10, {SL: working(10, cancel_requested=True), TP: working(10)})) == []


def test_given_any_sequence_of_exit_fills_then_exits_never_cover_more_than_the_position():
    for tp_filled in range(0, 11):
        for sl_filled in range(0, 11 - tp_filled):
            exits = {SL: working(10, sl_filled), TP: working(10, tp_filled)}
            bracket = view(10, exits)
            for step in plan_exits(bracket):
                if step.action is ExitAction.RESIZE:
                    own = exits[step.role].filled_quantity
                    assert step.quantity - own == bracket.open_quantity == 10 - tp_filled \
                        - sl_filled


ENTRY = {"signal_id": "sig_1", "side": "BUY", "symbol": "SPY", "account_id": "acc_1",
         "strategy_name": "Strat", "broker": "MOCK", "stop_loss": 95.0, "take_profit": 110.0,
         "status": "FILLED", "filled_quantity": 10, "product": "CNC"}


def test_given_entry_then_exit_records_are_opposite_side_gtc_with_role_and_parent():
    stop = exit_claim(ENTRY, SL, 10, broker_tag="sig_1:SL", at=AT, owner=None,
                      lease_until=None)
    take = exit_claim(ENTRY, TP, 10, broker_tag="sig_1:TP", at=AT, owner=None,
                      lease_until=None)
    assert (stop["_id"], stop["signal_id"], stop["side"], stop["order_type"],
            stop["stop_price"], stop["time_in_force"], stop["role"], stop["parent_signal_id"]) \
        == ("exec_sig_1:SL", "sig_1:SL", "SELL", "STOP", 95.0, "GTC", "STOP_LOSS", "sig_1")
    assert (take["order_type"], take["limit_price"], take["stop_price"], take["product"]) == \
        ("LIMIT", 110.0, None, "CNC")
    assert stop["reference_price"] is None and stop["status"] == "PENDING"


def test_given_levels_absent_or_null_then_no_exit_for_them():
    assert exit_levels({**ENTRY, "take_profit": None}) == {SL: 95.0}
    assert exit_levels({"stop_loss": None}) == {}


def test_given_resize_then_quantity_changes_with_a_resized_event_never_below_fills():
    state = OrderState("sig_1:SL", 4, S.SUBMITTED)
    change = resize(state, 10, "grows", AT)
    assert change.state.quantity == 10
    [event] = change.events
    assert event.event == "RESIZED" and event.detail["new"] == {"quantity": 10}
    assert resize(state, 4, "same", AT).events == ()
    assert resize(OrderState("x", 4, S.FILLED), 10, "done", AT).events == ()


def test_given_settled_checks_then_done_only_when_entry_and_every_exit_are_done():
    done = {"status": "CANCELLED", "quantity": 10, "filled_quantity": 0}
    filled = {"status": "FILLED", "quantity": 10, "filled_quantity": 10}
    assert is_settled(ENTRY, {SL: done, TP: filled})
    assert not is_settled(ENTRY, {SL: {**done, "status": "SUBMITTED"}, TP: filled})
    assert not is_settled({**ENTRY, "status": "PARTIALLY_FILLED"}, {SL: done, TP: filled})
    assert not is_settled(ENTRY, {})
    assert is_settled({**ENTRY, "filled_quantity": 0, "status": "CANCELLED"}, {})


def test_given_working_exits_then_risk_does_not_count_them_as_exposure():
    exits = [{"side": "SELL", "quantity": 10, "filled_quantity": 0, "stop_price": 95.0,
              "role": "STOP_LOSS"}]
    entry = [{"side": "SELL", "quantity": 2, "filled_quantity": 0, "limit_price": 99.0}]
    assert working_orders(exits + entry, 100.0).sell_quantity == 2


@pytest.mark.parametrize(("role", "title"), [("TAKE_PROFIT", "🎯 Take Profit Filled"),
                                             ("STOP_LOSS", "🛑 Stop Loss Filled"),
                                             (None, "✅ Order Filled")])
def test_given_an_exit_fill_notice_then_titled_by_its_role(role, title):
    notice = OrderNotice(NoticeKind.FILLED, "sig_1:TP", "Strat", "acc_1", "SPY", "SELL", 10,
                         10, 110.0, 1.0, role=role)
    assert compose_message(notice).splitlines()[0] == title


# a native bracket (IB): the exits are the entry's children at the venue ----------------------


def native(entry_filled: float, exits: dict, *, entry_quantity: float = 10,
           working_entry: bool = True, position_open: float | None = None) -> BracketView:
    if position_open is None:
        position_open = entry_filled - sum(e.filled_quantity for e in exits.values())
    return BracketView(BOTH, entry_filled, exits, position_open, at_venue=True,
                       entry_quantity=entry_quantity, entry_working=working_entry)


def children(quantity: float = 10, sl_filled: float = 0.0, tp_filled: float = 0.0) -> dict:
    return {SL: working(quantity - tp_filled, sl_filled), TP: working(quantity - sl_filled,
                                                                      tp_filled)}


def test_given_native_children_of_an_unfilled_working_entry_then_nothing_to_do():
    """Given children placed with the entry, when nothing has filled, then they are left as
    IB holds them (no cancel for 'nothing to protect', no resize to zero)."""
    assert plan_exits(native(0, children())) == []


@pytest.mark.parametrize("filled", [0, 4, 10])
def test_given_native_bracket_without_a_child_record_then_never_placed_here(filled):
    """Given a native bracket with no record for a child, when planned, then no PLACE: its
    children go to the venue with the entry or not at all."""
    assert plan_exits(native(filled, {}, working_entry=filled < 10)) == []


def test_given_native_entry_partly_filled_then_children_keep_the_entry_quantity():
    """Given a partly filled working entry, then the children are not shrunk to the filled part
    (IB sizes them with the parent's fills)."""
    assert plan_exits(native(4, children())) == []


def test_given_native_entry_quantity_modified_then_children_resized_to_it():
    assert plan_exits(native(4, children(10), entry_quantity=14)) == [
        ExitStep(SL, ExitAction.RESIZE, 14), ExitStep(TP, ExitAction.RESIZE, 14)]


def test_given_native_take_profit_partly_filled_then_the_stop_follows_ibs_reduction():
    """Given TP filled 4 of a working entry's 10 (IB reduced the stop to 6), then nothing to
    do; a stop record still at 10 is resized to 6."""
    assert plan_exits(native(6, children(10, tp_filled=4))) == []
    exits = {SL: working(10), TP: working(10, 4)}
    assert plan_exits(native(6, exits)) == [ExitStep(SL, ExitAction.RESIZE, 6)]


def test_given_native_take_profit_filled_the_whole_entry_then_stop_cancelled_oco():
    exits = {SL: working(10), TP: working(10, 10, status=S.FILLED)}
    assert plan_exits(native(10, exits)) == [ExitStep(SL, ExitAction.CANCEL, reason=OCO_REASON)]


def test_given_native_position_closed_by_other_orders_then_both_children_cancelled():
    assert plan_exits(native(4, children(), position_open=0)) == [
        ExitStep(SL, ExitAction.CANCEL, reason=POSITION_CLOSED_REASON),
        ExitStep(TP, ExitAction.CANCEL, reason=POSITION_CLOSED_REASON)]


def test_given_native_entry_cancelled_partly_filled_then_children_shrink_to_the_filled_part():
    """Given the entry cancelled after 4 of 10 filled (§11: the exits stay for the filled
    part), then both children are resized to 4."""
    assert plan_exits(native(4, children(), working_entry=False)) == [
        ExitStep(SL, ExitAction.RESIZE, 4), ExitStep(TP, ExitAction.RESIZE, 4)]


def test_given_native_entry_ended_unfilled_then_children_cancelled_with_the_reason():
    assert plan_exits(native(0, children(), working_entry=False)) == [
        ExitStep(SL, ExitAction.CANCEL, reason=ENTRY_UNFILLED_REASON),
        ExitStep(TP, ExitAction.CANCEL, reason=ENTRY_UNFILLED_REASON)]


def test_given_unfilled_entry_done_but_a_child_still_working_then_not_settled():
    entry = {"status": "CANCELLED", "filled_quantity": 0, "stop_loss": 95.0,
             "take_profit": 110.0}
    child = {"status": "SUBMITTED", "quantity": 10, "filled_quantity": 0}
    assert not is_settled(entry, {SL: child})
    assert is_settled(entry, {SL: {**child, "status": "CANCELLED"}})


def test_given_native_child_claim_then_marked_placed_with_parent_for_the_entry_quantity():
    entry = {"signal_id": "sig_n", "side": "BUY", "quantity": 10, "stop_loss": 95.0,
             "take_profit": 110.0}
    doc = exit_claim(entry, SL, 10, broker_tag="sig_n:SL", at=AT, owner=None,
                     lease_until=None, with_parent=True)
    assert (doc["placed_with_parent"], doc["quantity"], doc["side"], doc["stop_price"],
            doc["time_in_force"]) == (True, 10, "SELL", 95.0, "GTC")
    assert exit_claim(entry, TP, 4, broker_tag="t", at=AT, owner=None,
                      lease_until=None)["placed_with_parent"] is False
