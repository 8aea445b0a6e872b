"""Position arithmetic (SPEC §5): pure functions over one (account, strategy, symbol) position."""

from __future__ import annotations

from dataclasses import dataclass, replace

EPSILON = 1e-9
# A position document holds the keys of the fills that moved it whose ledger entries are not
# yet marked applied; past this many they are marked together and dropped (service/positions.py).
UNMARKED_FILL_KEYS = 16
ORDER_IDS_KEPT = 50  # the latest orders that moved a position (SPEC §5 `order_ids`)


@dataclass(frozen=True)
class Position:
    side: str  # LONG or SHORT
    quantity: float  # always > 0 while open
    avg_entry_price: float
    realized_pnl: float = 0.0

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side == "LONG" else -self.quantity


@dataclass(frozen=True)
class PositionChange:
    """`current` is the open position after the fill (None when flat). `closed` is the position
    the fill closed, with its final realized PnL, when it closed one."""

    current: Position | None
    closed: Position | None = None


def side_for(order_side: str) -> str:
    return "LONG" if order_side.upper() == "BUY" else "SHORT"


def apply_fill(position: Position | None, order_side: str, quantity: float,
               price: float) -> PositionChange:
    """Move a position by one fill of `quantity` at `price`."""
    if quantity <= 0:
        raise ValueError(f"fill quantity must be > 0, got {quantity}")
    fill_side = side_for(order_side)
    if position is None:
        return PositionChange(Position(fill_side, _q(quantity), price))
    if fill_side == position.side:
        return PositionChange(_add(position, quantity, price))
    return _reduce(position, quantity, price)


def _add(position: Position, quantity: float, price: float) -> Position:
    total = position.quantity + quantity
    average = (position.quantity * position.avg_entry_price + quantity * price) / total
    return replace(position, quantity=_q(total), avg_entry_price=round(average, 8))


def _reduce(position: Position, quantity: float, price: float) -> PositionChange:
    closing = min(position.quantity, quantity)
    direction = 1.0 if position.side == "LONG" else -1.0
    pnl = round(position.realized_pnl + closing * (price - position.avg_entry_price) * direction,
                8)
    left = _q(position.quantity - closing)
    if left > EPSILON:
        return PositionChange(replace(position, quantity=left, realized_pnl=pnl))
    closed = replace(position, quantity=0.0, realized_pnl=pnl)
    remainder = _q(quantity - closing)
    if remainder <= EPSILON:
        return PositionChange(None, closed)
    opposite = "SHORT" if position.side == "LONG" else "LONG"
    return PositionChange(Position(opposite, remainder, price), closed)


def _q(value: float) -> float:
    return round(value, 9)
