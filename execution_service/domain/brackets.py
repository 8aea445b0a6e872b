"""Protective exits (SPEC §12), pure: which exits an entry needs, for what quantity, and how
one exit's fill reduces or cancels the other (one-cancels-other).

An entry's exits together protect what is still open of it: the entry's filled quantity less
what its exits have filled, never more than the position it opened still holds. Each working
exit is sized to its own fills plus that open quantity, so a partial entry fill is protected
at once, later fills grow the exits, and one exit's fill shrinks the other by the same amount.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from execution_service.domain.orders import (
    QUANTITY_EPSILON,
    Change,
    Event,
    EventKind,
    OrderState,
    OrderStatus,
)
from execution_service.domain.records import skeleton_record

#: The order fields an exit copies from its entry (routing and the instrument).
INHERITED_FIELDS = ("strategy_name", "account_id", "symbol", "asset_class", "exchange", "currency",
                    "product", "broker", "account_name", "broker_account")
EXIT_TIME_IN_FORCE = "GTC"
OCO_REASON = "one-cancels-other: the position is closed by the other exit"
POSITION_CLOSED_REASON = "position closed by other orders"
ENTRY_UNFILLED_REASON = "the entry ended without a fill: nothing to protect"


class ExitRole(StrEnum):
    STOP_LOSS = "STOP_LOSS"
    TAKE_PROFIT = "TAKE_PROFIT"

    @property
    def suffix(self) -> str:
        return "SL" if self is ExitRole.STOP_LOSS else "TP"

    @property
    def order_type(self) -> str:
        return "STOP" if self is ExitRole.STOP_LOSS else "LIMIT"

    @property
    def level_field(self) -> str:
        """The entry's field that holds this exit's price."""
        return "stop_loss" if self is ExitRole.STOP_LOSS else "take_profit"

    @property
    def price_field(self) -> str:
        """The exit order's field that carries that price."""
        return "stop_price" if self is ExitRole.STOP_LOSS else "limit_price"


#: A native bracket's children in sending order, as ib_async's IB.bracketOrder sends them.
CHILDREN_ORDER = (ExitRole.TAKE_PROFIT, ExitRole.STOP_LOSS)


class ExitAction(StrEnum):
    PLACE = "PLACE"  # claim the exit record and hand it to the tracker
    RESIZE = "RESIZE"  # a working exit takes a new quantity (modify at the broker)
    CANCEL = "CANCEL"  # nothing left to protect


@dataclass(frozen=True)
class ExitStep:
    role: ExitRole
    action: ExitAction
    quantity: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ExitView:
    """What the planner needs of one exit record."""

    status: OrderStatus
    quantity: float
    filled_quantity: float
    cancel_requested: bool = False

    @classmethod
    def of(cls, doc: dict) -> ExitView:
        return cls(OrderStatus(doc["status"]), float(doc["quantity"]),
                   float(doc.get("filled_quantity") or 0.0),
                   doc.get("cancel_requested_reason") is not None)


@dataclass(frozen=True)
class BracketView:
    """An entry, its exits as recorded, and what its position still holds in its direction."""

    levels: dict[ExitRole, float]  # the roles the entry asked for, with their prices
    entry_filled: float
    exits: dict[ExitRole, ExitView]
    position_open: float
    #: The exits are the entry's children at the venue (a native bracket), placed with it:
    #: never placed here, and sized by the venue with the entry's fills while it works.
    at_venue: bool = False
    entry_quantity: float = 0.0
    entry_working: bool = False

    @property
    def exits_filled(self) -> float:
        return round(sum(view.filled_quantity for view in self.exits.values()), 9)

    @property
    def open_quantity(self) -> float:
        """What the exits must still protect."""
        unexited = round(self.entry_filled - self.exits_filled, 9)
        return max(0.0, min(unexited, round(self.position_open, 9)))


def exit_signal_id(parent_signal_id: str, role: ExitRole) -> str:
    return f"{parent_signal_id}:{role.suffix}"


def exit_levels(entry: dict) -> dict[ExitRole, float]:
    return {role: float(entry[role.level_field]) for role in ExitRole
            if isinstance(entry.get(role.level_field), (int, float))}


def exit_side(entry_side: str) -> str:
    return "SELL" if str(entry_side).upper() == "BUY" else "BUY"


def is_exit(doc: dict) -> bool:
    return doc.get("role") is not None


def oca_levels(doc: dict) -> tuple[float | None, float | None] | None:
    """An exit's bracket as (stop_loss, take_profit); None for an entry (or an older exit)."""
    levels = doc.get("bracket_levels") if is_exit(doc) else None
    return (levels[0], levels[1]) if levels else None


def oca_group(doc: dict) -> str | None:
    """The one-cancels-other group an exit's order carries at the venue (one per entry)."""
    return f"{doc['parent_signal_id']}:OCO" if is_exit(doc) else None


def plan_exits(view: BracketView) -> list[ExitStep]:
    """What to do now so that the exits protect exactly `view.open_quantity`."""
    if view.at_venue and view.entry_working:
        return _plan_children_of_working_entry(view)
    steps = _plan_to_open_quantity(view)
    if view.at_venue:  # placed with the entry or never: a missing child is not placed now
        return [step for step in steps if step.action is not ExitAction.PLACE]
    return steps


def _plan_children_of_working_entry(view: BracketView) -> list[ExitStep]:
    """A native bracket whose entry still works: the venue activates and sizes the children
    with the entry's fills and reduces one by the other's; each child is kept at the entry's
    quantity less what the exits have filled (an entry MODIFY resizes them), and both are
    cancelled when other orders close the position their filled part opened."""
    unexited = round(view.entry_filled - view.exits_filled, 9)
    closed_by_others = unexited > QUANTITY_EPSILON and view.position_open <= QUANTITY_EPSILON
    steps: list[ExitStep] = []
    for role in view.levels:
        current = view.exits.get(role)
        if current is None or current.status.is_terminal or current.cancel_requested \
                or current.status is OrderStatus.PENDING:
            continue
        left = round(view.entry_quantity - view.exits_filled, 9)
        if closed_by_others or left <= QUANTITY_EPSILON:
            steps.append(ExitStep(role, ExitAction.CANCEL, reason=POSITION_CLOSED_REASON
                                  if closed_by_others else OCO_REASON))
            continue
        target = round(current.filled_quantity + left, 9)
        if abs(target - current.quantity) > QUANTITY_EPSILON:
            steps.append(ExitStep(role, ExitAction.RESIZE, target))
    return steps


def _plan_to_open_quantity(view: BracketView) -> list[ExitStep]:
    steps: list[ExitStep] = []
    open_quantity = view.open_quantity
    for role in view.levels:
        current = view.exits.get(role)
        if current is None:
            if open_quantity > QUANTITY_EPSILON:
                steps.append(ExitStep(role, ExitAction.PLACE, open_quantity))
            continue
        if current.status.is_terminal or current.cancel_requested:
            continue  # done with: filled, cancelled (by anyone), or being cancelled
        if open_quantity <= QUANTITY_EPSILON:
            steps.append(ExitStep(role, ExitAction.CANCEL, reason=_cancel_reason(view)))
            continue
        if current.status is OrderStatus.PENDING:
            continue  # resized once the broker has it (its SUBMITTED brings us back)
        target = round(current.filled_quantity + open_quantity, 9)
        if abs(target - current.quantity) > QUANTITY_EPSILON:
            steps.append(ExitStep(role, ExitAction.RESIZE, target))
    return steps


def _cancel_reason(view: BracketView) -> str:
    if view.entry_filled <= QUANTITY_EPSILON:
        return ENTRY_UNFILLED_REASON
    if view.entry_filled - view.exits_filled <= QUANTITY_EPSILON:
        return OCO_REASON
    return POSITION_CLOSED_REASON


def is_settled(entry: dict, exits: dict[ExitRole, dict]) -> bool:
    """Nothing more will ever happen to this bracket: the entry is done and every exit it
    asked for is done (or was never needed)."""
    if not OrderStatus(entry["status"]).is_terminal:
        return False
    levels = exit_levels(entry)
    views = {role: ExitView.of(doc) for role, doc in exits.items()}
    if any(not view.status.is_terminal for view in views.values()):
        return False  # a native bracket's children exist before any fill
    if not levels or not entry.get("filled_quantity"):
        return True
    filled = sum(view.filled_quantity for view in views.values())
    return filled >= float(entry["filled_quantity"]) - QUANTITY_EPSILON or \
        all(role in views for role in levels)


def exit_claim(entry: dict, role: ExitRole, quantity: float, *, broker_tag: str, at: datetime,
               owner: dict | None, lease_until: datetime | None,
               with_parent: bool = False) -> dict[str, Any]:
    """The PENDING record of one exit, written before its order reaches a broker.
    `with_parent`: a native bracket's child, sent with its entry and never on its own."""
    signal_id = exit_signal_id(entry["signal_id"], role)
    doc = skeleton_record(signal_id, at)
    doc.update({name: entry.get(name) for name in INHERITED_FIELDS})
    doc.update({
        "side": exit_side(entry["side"]), "quantity": quantity, "order_type": role.order_type,
        "limit_price": None, "stop_price": None, "time_in_force": EXIT_TIME_IN_FORCE,
        "stop_loss": None, "take_profit": None, "reference_price": None,
        "parent_signal_id": entry["signal_id"], "role": str(role), "broker_tag": broker_tag,
        # both levels, so a venue keeping the pair as one order (a Kite GTT) knows its sibling
        "bracket_levels": [entry.get("stop_loss"), entry.get("take_profit")],
        "owner": owner, "lease_expires_at": lease_until, "extra_fields": {},
        "placed_with_parent": with_parent,
        "events": [Event(OrderStatus.PENDING, at, EventKind.CLAIMED,
                         {"parent_signal_id": entry["signal_id"], "role": str(role)}).to_doc()],
    })
    doc[role.price_field] = float(entry[role.level_field])
    return doc


def resize(state: OrderState, quantity: float, reason: str, at: datetime) -> Change:
    """A working exit follows its entry (or the other exit's fill): a new total quantity,
    never below what it has filled."""
    quantity = round(max(quantity, state.filled_quantity), 9)
    if state.status.is_terminal or abs(quantity - state.quantity) <= QUANTITY_EPSILON:
        return Change(state)
    event = Event(state.status, at, EventKind.RESIZED, {"old": {"quantity": state.quantity},
                                                "new": {"quantity": quantity}, "reason": reason})
    return Change(replace(state, quantity=quantity), (event,))
