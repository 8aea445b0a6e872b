"""Position arithmetic (SPEC §5): one (account, strategy, symbol) position moved by fills."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution_service.domain.positions import Position, PositionChange, apply_fill, side_for

SIGN = {"BUY": 1.0, "SELL": -1.0}


def net(position: Position | None) -> float:
    return 0.0 if position is None else position.signed_quantity


# -- worked examples ------------------------------------------------------------------------


def test_given_no_position_when_buying_100_at_235_15_then_a_long_opens_at_that_price():
    change = apply_fill(None, "BUY", 100, 235.15)
    assert change == PositionChange(Position("LONG", 100, 235.15, 0.0), None)


def test_given_long_100_at_235_15_when_selling_40_at_236_then_long_60_with_pnl_34():
    long_100 = apply_fill(None, "BUY", 100, 235.15).current
    change = apply_fill(long_100, "SELL", 40, 236.0)
    assert change.closed is None
    assert change.current.side == "LONG"
    assert change.current.quantity == 60
    assert change.current.avg_entry_price == 235.15  # a reduction keeps the entry price
    assert change.current.realized_pnl == pytest.approx(34.00, abs=1e-9)


def test_given_long_60_when_selling_100_more_then_it_closes_and_a_short_40_opens_at_the_price():
    long_60 = Position("LONG", 60, 235.15, realized_pnl=34.0)
    change = apply_fill(long_60, "SELL", 100, 237.0)
    assert change.closed is not None
    assert change.closed.side == "LONG"
    assert change.closed.quantity == 0
    assert change.closed.avg_entry_price == 235.15
    # 34.00 earlier + 60 × (237.00 − 235.15)
    assert change.closed.realized_pnl == pytest.approx(34.0 + 111.0, abs=1e-9)
    assert change.current == Position("SHORT", 40, 237.0, 0.0)


def test_given_long_60_when_selling_exactly_60_then_it_closes_and_nothing_is_open():
    change = apply_fill(Position("LONG", 60, 235.15, 34.0), "SELL", 60, 236.0)
    assert change.current is None
    assert change.closed.quantity == 0
    assert change.closed.realized_pnl == pytest.approx(34.0 + 60 * 0.85, abs=1e-9)


def test_given_a_short_when_buying_back_lower_then_the_pnl_is_a_gain():
    short_50 = apply_fill(None, "SELL", 50, 10.0).current
    assert short_50 == Position("SHORT", 50, 10.0, 0.0)
    change = apply_fill(short_50, "BUY", 20, 8.0)
    assert change.current == Position("SHORT", 30, 10.0, pytest.approx(40.0))


def test_given_a_short_when_buying_past_zero_then_a_long_opens_with_the_remainder():
    change = apply_fill(Position("SHORT", 30, 10.0, 40.0), "BUY", 50, 12.0)
    assert change.closed.realized_pnl == pytest.approx(40.0 - 60.0)
    assert change.current == Position("LONG", 20, 12.0, 0.0)


def test_given_a_long_when_buying_more_at_another_price_then_the_entry_is_the_weighted_mean():
    change = apply_fill(Position("LONG", 100, 10.0, 5.0), "BUY", 300, 20.0)
    assert change.closed is None
    assert change.current.quantity == 400
    assert change.current.avg_entry_price == pytest.approx(17.5)
    assert change.current.realized_pnl == 5.0  # adding never realizes anything


@pytest.mark.parametrize(
    ("order_side", "position_side"),
    [("BUY", "LONG"), ("buy", "LONG"), ("SELL", "SHORT"), ("sell", "SHORT")],
)
def test_given_an_order_side_in_any_case_then_it_maps_to_the_position_side(
    order_side, position_side
):
    assert side_for(order_side) == position_side
    assert apply_fill(None, order_side, 1, 1.0).current.side == position_side


@pytest.mark.parametrize("quantity", [0, -1, -0.5])
def test_given_a_fill_of_no_positive_quantity_then_it_is_refused_naming_the_quantity(quantity):
    with pytest.raises(ValueError, match="quantity must be > 0"):
        apply_fill(Position("LONG", 10, 1.0), "SELL", quantity, 1.0)


def test_given_fractional_crypto_fills_then_they_net_to_exactly_zero():
    position = apply_fill(None, "BUY", 0.1, 60_000.0).current
    position = apply_fill(position, "BUY", 0.2, 61_000.0).current
    change = apply_fill(position, "SELL", 0.3, 62_000.0)
    assert change.current is None
    assert change.closed.realized_pnl == pytest.approx(0.1 * 2_000 + 0.2 * 1_000)


# -- properties -----------------------------------------------------------------------------

quantities = st.one_of(
    st.integers(1, 1_000).map(float), st.integers(1, 100_000).map(lambda c: c / 1_000)
)
prices = st.integers(1, 100_000).map(lambda c: c / 100)
fills = st.lists(
    st.tuples(st.sampled_from(["BUY", "SELL"]), quantities, prices), min_size=1, max_size=30
)


def _check_step(
    before: Position | None, side: str, qty: float, price: float, change: PositionChange
) -> None:
    """The rules of SPEC §5 for one fill, given the position before it."""
    after = change.current
    if before is None or side_for(side) == before.side:
        assert change.closed is None
        expected_qty = qty + (before.quantity if before else 0.0)
        assert after.side == side_for(side)
        assert after.quantity == pytest.approx(expected_qty, abs=1e-9)
        old_value = before.quantity * before.avg_entry_price if before else 0.0
        assert after.avg_entry_price == pytest.approx(
            (old_value + qty * price) / expected_qty, rel=1e-9, abs=1e-8
        )
        assert after.realized_pnl == (before.realized_pnl if before else 0.0)
        return
    direction = 1.0 if before.side == "LONG" else -1.0
    closing = min(before.quantity, qty)
    realized = before.realized_pnl + closing * (price - before.avg_entry_price) * direction
    if qty < before.quantity - 1e-9:  # reduced, still open on the same side
        assert change.closed is None
        assert after.side == before.side
        assert after.quantity == pytest.approx(before.quantity - qty, abs=1e-9)
        assert after.avg_entry_price == before.avg_entry_price
        assert after.realized_pnl == pytest.approx(realized, rel=1e-9, abs=1e-6)
        return
    assert change.closed is not None
    assert change.closed.side == before.side
    assert change.closed.realized_pnl == pytest.approx(realized, rel=1e-9, abs=1e-6)
    if qty <= before.quantity + 1e-9:  # exactly flat
        assert after is None
    else:  # crossed zero: the remainder opens the other side at the fill price
        assert after.side != before.side
        assert after.quantity == pytest.approx(qty - before.quantity, abs=1e-9)
        assert after.avg_entry_price == price
        assert after.realized_pnl == 0.0


@settings(max_examples=300, deadline=None)
@given(fills)
def test_given_any_fills_then_every_step_follows_the_position_rules(sequence):
    position = None
    for side, qty, price in sequence:
        change = apply_fill(position, side, qty, price)
        _check_step(position, side, qty, price, change)
        if change.current is not None:
            assert change.current.quantity > 0
        position = change.current


@settings(max_examples=300, deadline=None)
@given(fills)
def test_given_any_fills_then_the_net_quantity_is_the_sum_of_signed_fills(sequence):
    position = None
    expected = 0.0
    for side, qty, price in sequence:
        position = apply_fill(position, side, qty, price).current
        expected += SIGN[side] * qty
        assert net(position) == pytest.approx(expected, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(fills)
def test_given_any_fills_then_realized_pnl_plus_open_cost_equals_the_cash_flow(sequence):
    """Average-cost accounting loses nothing: all PnL realized so far equals the cash the fills
    moved plus the cost basis still held (net quantity × average entry)."""
    position = None
    realized_closed = 0.0
    cash = 0.0
    for side, qty, price in sequence:
        change = apply_fill(position, side, qty, price)
        if change.closed is not None:
            realized_closed += change.closed.realized_pnl
        position = change.current
        cash -= SIGN[side] * qty * price
    realized = realized_closed + (position.realized_pnl if position else 0.0)
    basis = net(position) * position.avg_entry_price if position else 0.0
    assert realized == pytest.approx(cash + basis, rel=1e-9, abs=1e-2)
