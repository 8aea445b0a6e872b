"""Protective exits (SPEC §12), pure: planning, sizing, one-cancels-other, the exit record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from execution_service.domain.brackets import (
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
