"""The order lifecycle as data: statuses, the transition table, and pure state changes.

`OrderState` is what the store keeps about one signal's order. Every function here takes a
state and returns a new one plus the events that explain the change; nothing does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from execution_service.domain.notices import CancelCause
from execution_service.domain.reasons import RejectClass, reason_class

QUANTITY_EPSILON = 1e-9


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"  # a cancel sent, not yet confirmed: fills still land
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


S = OrderStatus
TERMINAL = frozenset({S.FILLED, S.REJECTED, S.CANCELLED})
# the same sets as plain strings, for queries, metrics labels and reports
STATUSES = tuple(str(status) for status in OrderStatus)
TERMINAL_STATUSES = tuple(status for status in STATUSES if S(status) in TERMINAL)
OPEN_STATUSES = tuple(status for status in STATUSES if S(status) not in TERMINAL)


class EventKind(StrEnum):
    """What happened, in a record's `events` list."""

    CLAIMED = "CLAIMED"
    SUBMITTED = "SUBMITTED"
    FILL = "FILL"
    LATE_FILL = "LATE_FILL"
    COMPLETED = "COMPLETED"
    COMMISSION = "COMMISSION"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCEL_PENDING = "CANCEL_PENDING"
    CANCEL_REJECTED = "CANCEL_REJECTED"
    MODIFIED = "MODIFIED"
    MODIFY_REJECTED = "MODIFY_REJECTED"
    TAKEN_OVER = "TAKEN_OVER"
    RESIZED = "RESIZED"  # a protective exit follows its position's size (§12)
    OVERFILL = "OVERFILL"  # a fill past the order's quantity, recorded as the venue reports it


K = EventKind

WORKING = frozenset({S.SUBMITTED, S.PARTIALLY_FILLED})

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.SUBMITTED, S.REJECTED}),
    S.SUBMITTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.REJECTED, S.CANCELLED,
                            S.PENDING_CANCEL}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.PENDING_CANCEL}),
    # a fill may land before the cancel is confirmed; a refused cancel returns to working
    S.PENDING_CANCEL: frozenset({S.PENDING_CANCEL, S.FILLED, S.CANCELLED, S.REJECTED,
                                 S.SUBMITTED, S.PARTIALLY_FILLED}),
    S.FILLED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),  # only ever takes a late fill, which keeps it CANCELLED
}


class IllegalTransition(ValueError):
    def __init__(self, current: OrderStatus, target: OrderStatus):
        super().__init__(f"illegal transition {current} -> {target}")
        self.current = current
        self.target = target


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[current]


class FillLike(Protocol):
    exec_id: str
    quantity: float
    price: float
    at: datetime
    commission: float


@dataclass(frozen=True)
class Event:
    """One entry of a record's `events` list."""

    status: OrderStatus
    at: datetime
    event: EventKind
    detail: dict = field(default_factory=dict)

    def to_doc(self) -> dict:
        return {"status": str(self.status), "event": str(self.event), "at": self.at,
                **self.detail}


@dataclass(frozen=True)
class RecordedFill:
    exec_id: str
    quantity: float
    price: float
    at: datetime
    commission: float = 0.0

    def to_doc(self) -> dict:
        return {"exec_id": self.exec_id, "quantity": self.quantity, "price": self.price,
                "at": self.at, "commission": self.commission}


@dataclass(frozen=True)
class OrderState:
    signal_id: str
    quantity: float
    status: OrderStatus = S.PENDING
    order_id: str | None = None
    fills: tuple[RecordedFill, ...] = ()
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    closed_at: datetime | None = None
    reject_reason: str | None = None
    reject_class: RejectClass | None = None  # said by the code that rejected it
    cancel_reason: str | None = None
    cancel_cause: CancelCause | None = None  # who asked for the cancel, kept until it is final
    broker_commission: float | None = None  # the broker's total when it reports one later
    limit_price: float | None = None
    stop_price: float | None = None
    cancel_requested_reason: str | None = None  # why a cancel was asked for (and by whom)
    cancel_request_id: str | None = None  # the upstream or operator request, if one asked
    cancel_request_source: str | None = None  # "upstream" or "operator"
    command_ids: tuple[str, ...] = ()  # every cancel/modify request already applied

    def evolve(self, **changes) -> OrderState:
        """`dataclasses.replace`, without its __init__ setting every field one by one (a
        lifecycle step makes several of these per fill)."""
        unknown = changes.keys() - _STATE_FIELDS
        if unknown:
            raise TypeError(f"OrderState has no field {', '.join(sorted(unknown))}")
        evolved = object.__new__(OrderState)
        evolved.__dict__.update(self.__dict__, **changes)
        return evolved

    @property
    def filled_quantity(self) -> float:
        return _round_qty(sum(fill.quantity for fill in self.fills))

    @property
    def remaining_quantity(self) -> float:
        return _round_qty(self.quantity - self.filled_quantity)

    @property
    def avg_fill_price(self) -> float | None:
        filled = self.filled_quantity
        if filled <= 0:
            return None
        return round(sum(f.quantity * f.price for f in self.fills) / filled, 8)

    @property
    def commission(self) -> float:
        if self.broker_commission is not None:
            return round(self.broker_commission, 8)
        return round(sum(fill.commission for fill in self.fills), 8)

    @property
    def exec_ids(self) -> frozenset[str]:
        return frozenset(fill.exec_id for fill in self.fills)


_STATE_FIELDS = frozenset(f.name for f in fields(OrderState))


@dataclass(frozen=True)
class Change:
    """A new state and the events that led to it (empty when nothing changed)."""

    state: OrderState
    events: tuple[Event, ...] = ()

    def then(self, step) -> Change:
        nxt = step(self.state)
        return Change(nxt.state, self.events + nxt.events)


def _round_qty(value: float) -> float:
    return round(value, 9)


def _move(state: OrderState, target: OrderStatus, at: datetime, event: EventKind,
          **detail) -> Change:
    if not can_transition(state.status, target):
        raise IllegalTransition(state.status, target)
    return Change(state.evolve(status=target), (Event(target, at, event, detail),))


def submit(state: OrderState, order_id: str, at: datetime) -> Change:
    """The broker accepted the order and gave it an id. A cancel asked for while it was being
    placed makes it PENDING_CANCEL at once (the tracker sends that cancel)."""
    if state.status is not S.PENDING:
        return Change(state)
    change = _move(state, S.SUBMITTED, at, K.SUBMITTED, order_id=order_id)
    change = Change(change.state.evolve(order_id=order_id, submitted_at=at), change.events)
    if state.cancel_requested_reason is None:
        return change
    return change.then(lambda s: _move(s, S.PENDING_CANCEL, at, K.CANCEL_PENDING,
                                       reason=s.cancel_requested_reason))


SOURCE_CAUSES = {"upstream": CancelCause.UPSTREAM, "operator": CancelCause.OPERATOR}


def request_cancel(state: OrderState, reason: str, at: datetime,
                   request_id: str | None = None, source: str | None = None,
                   cause: CancelCause | None = None) -> Change:
    """A cancel is asked for. A working order becomes PENDING_CANCEL until the broker confirms
    (fills meanwhile are kept); a PENDING one keeps the request, so it is refused before it
    reaches a broker, or cancelled as soon as it is accepted."""
    if state.status.is_terminal or state.cancel_requested_reason is not None:
        return Change(state)
    detail = {"reason": reason, "filled_quantity": state.filled_quantity}
    ids = state.command_ids
    if request_id is not None:
        detail["request_id"] = request_id
        ids = (*ids, request_id)
    asked = state.evolve(cancel_requested_reason=reason, cancel_request_id=request_id,
                    cancel_request_source=source, command_ids=ids,
                    cancel_cause=cause or SOURCE_CAUSES.get(source or ""))
    if state.status is S.PENDING:
        return Change(asked, (Event(S.PENDING, at, K.CANCEL_REQUESTED, detail),))
    return _move(asked, S.PENDING_CANCEL, at, K.CANCEL_REQUESTED, **detail)


def refuse_cancel(state: OrderState, reason: str, at: datetime) -> Change:
    """The broker will not cancel and the order still works: back to working, request kept
    in the events."""
    if state.status is not S.PENDING_CANCEL:
        return Change(state)
    target = S.PARTIALLY_FILLED if state.fills else S.SUBMITTED
    detail = {"reason": reason}
    if state.cancel_request_id is not None:
        detail["request_id"] = state.cancel_request_id
    moved = _move(state, target, at, K.CANCEL_REJECTED, **detail)
    return Change(moved.state.evolve(cancel_requested_reason=None, cancel_request_id=None,
                          cancel_request_source=None, cancel_cause=None), moved.events)


def reject(state: OrderState, reason: str, at: datetime,
           kind: RejectClass = RejectClass.BROKER) -> Change:
    if state.status is S.REJECTED:
        return Change(state)
    extra = {} if state.cancel_request_id is None else {"request_id": state.cancel_request_id}
    change = _move(state, S.REJECTED, at, K.REJECTED, reason=reason, **extra)
    return Change(change.state.evolve(reject_reason=reason, reject_class=kind, closed_at=at),
                  change.events)


def cancel(state: OrderState, reason: str, at: datetime) -> Change:
    if state.status is S.CANCELLED:
        return Change(state)
    extra = {} if state.cancel_request_id is None else {"request_id": state.cancel_request_id}
    change = _move(state, S.CANCELLED, at, K.CANCELLED, reason=reason,
                   filled_quantity=state.filled_quantity, **extra)
    return Change(change.state.evolve(cancel_reason=reason, closed_at=at,
                          cancel_cause=state.cancel_cause or CancelCause.BROKER), change.events)


def apply_fills(state: OrderState, fills: Iterable[FillLike], at: datetime) -> Change:
    """Record the fills not seen before (by exec id), as the venue reports them.

    On a CANCELLED order a new fill is a LATE_FILL: recorded, status kept. A fill past the
    order's quantity is recorded all the same (the venue's word is the truth, and positions
    follow it), its excess in `overfill`; one on an order already FILLED is an OVERFILL event.
    """
    change = Change(state)
    for fill in sorted(fills, key=lambda f: (f.at, f.exec_id)):
        change = change.then(lambda s, f=fill: _apply_one_fill(s, f, at))
    return change


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _apply_one_fill(state: OrderState, fill: FillLike, at: datetime) -> Change:
    if fill.exec_id in state.exec_ids or not _finite(fill.quantity) or fill.quantity <= 0 or \
            not _finite(fill.price):
        return Change(state)  # a broker's NaN or infinity never reaches the record
    if state.status is S.REJECTED:
        return Change(state)
    quantity = _round_qty(fill.quantity)
    if quantity <= QUANTITY_EPSILON:
        return Change(state)
    recorded = RecordedFill(fill.exec_id, quantity, float(fill.price), fill.at,
                            float(fill.commission or 0.0))
    filled = state.evolve(fills=state.fills + (recorded,))
    detail = {"exec_id": fill.exec_id, "quantity": quantity, "price": recorded.price,
              "filled_quantity": filled.filled_quantity, "avg_fill_price": filled.avg_fill_price,
              "commission": filled.commission, "fill_at": fill.at}
    excess = _round_qty(quantity - max(state.remaining_quantity, 0.0))
    if excess > QUANTITY_EPSILON:
        detail["overfill"] = excess
    if state.status is S.FILLED:
        return Change(filled, (Event(S.FILLED, at, K.OVERFILL, detail),))
    if state.status is S.CANCELLED:
        return Change(filled, (Event(S.CANCELLED, at, K.LATE_FILL, detail),))
    complete_now = filled.remaining_quantity <= QUANTITY_EPSILON
    target = S.FILLED if complete_now else (
        S.PENDING_CANCEL if state.status is S.PENDING_CANCEL else S.PARTIALLY_FILLED)
    moved = _move(filled, target, at, K.FILL, **detail)
    if target is not S.FILLED:
        return moved
    events = moved.events
    if state.status is S.PENDING_CANCEL and state.cancel_request_id is not None:
        events += (Event(S.FILLED, at, K.CANCEL_REJECTED, {
            "request_id": state.cancel_request_id, "reason": "already filled"}),)
    return Change(moved.state.evolve(filled_at=fill.at, closed_at=at), events)


def complete(state: OrderState, at: datetime) -> Change:
    """The broker says the order is done although fills add up to less than its quantity (a
    cash-sized crypto order, say): FILLED with what was filled."""
    if state.status not in (*WORKING, S.PENDING_CANCEL) or not state.fills:
        return Change(state)
    change = _move(state, S.FILLED, at, K.COMPLETED, filled_quantity=state.filled_quantity,
                   avg_fill_price=state.avg_fill_price, commission=state.commission,
                   fill_at=state.fills[-1].at,
                   reason=f"broker reports the order filled at {state.filled_quantity:g}")
    return Change(change.state.evolve(filled_at=state.fills[-1].at, closed_at=at),
                  change.events)


def set_commission(state: OrderState, total: float | None, at: datetime) -> Change:
    """Commission reports can arrive after their fills: the broker's total wins."""
    if total is None or abs(total - state.commission) <= 1e-9:
        return Change(state)
    return Change(state.evolve(broker_commission=total),
                  (Event(state.status, at, K.COMMISSION, {"commission": total}),))


def follow_broker(state: OrderState, *, order_id: str, broker_status: str,
                  fills: Iterable[FillLike], reason: str | None, at: datetime,
                  cancel_reason: str | None = None,
                  commission_total: float | None = None) -> Change:
    """Bring the record in line with the broker's snapshot of the order: the broker's fills are
    the truth, then its terminal status. `cancel_reason` explains a cancel we asked for."""
    change = Change(state)
    if broker_status == "REJECTED" and state.status in (S.PENDING, S.SUBMITTED) \
            and not _has_fills(fills):
        rejected = change.then(lambda s: reject(s, reason or "rejected by broker", at,
                                                reason_class(reason)))
        return Change(rejected.state.evolve(order_id=order_id), rejected.events)
    change = change.then(lambda s: submit(s, order_id, at))
    change = change.then(lambda s: apply_fills(s, fills, at))
    change = change.then(lambda s: set_commission(s, commission_total, at))
    if broker_status == "FILLED":
        change = change.then(lambda s: complete(s, at))
    if broker_status in ("CANCELLED", "REJECTED") and not change.state.status.is_terminal:
        why = change.state.cancel_requested_reason or cancel_reason or reason \
            or "cancelled by broker"
        change = change.then(lambda s: cancel(s, why, at))
    return change


def _has_fills(fills: Iterable[FillLike]) -> bool:
    return any(fill.quantity > 0 for fill in fills)
