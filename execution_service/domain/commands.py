"""Cancel and modify commands about an order already sent (SPEC §11): validation, and the pure
decisions and state changes they lead to. No I/O.

A body on `trading-orders` with `action` `CANCEL` or `MODIFY` is a command; none, or `NEW`, is
an order (§3). `request_id` makes each command idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from execution_service.domain.orders import (
    WORKING,
    Change,
    Event,
    EventKind,
    OrderState,
    OrderStatus,
    request_cancel,
)
from execution_service.domain.reasons import RejectClass
from execution_service.domain.records import queue_confirmation, skeleton_record
from execution_service.domain.signals import (
    SIGNAL_ID_PATTERN,
    PositiveNumber,
    describe_validation_error,
)

S = OrderStatus
REQUEST_ID_RULE = "need 1-128 characters of A-Z a-z 0-9 _ . : -"


class CommandAction(StrEnum):
    CANCEL = "CANCEL"
    MODIFY = "MODIFY"


CommandEvent = EventKind  # what a command leaves in the events and on execution-confirmations


REFUSED = {CommandAction.CANCEL: CommandEvent.CANCEL_REJECTED,
           CommandAction.MODIFY: CommandEvent.MODIFY_REJECTED}
Identifier = Annotated[str, Field(strict=True, pattern=SIGNAL_ID_PATTERN.pattern)]


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: Identifier
    signal_id: Identifier
    by: Annotated[str, Field(strict=True, max_length=200)] | None = None  # who asked

    @field_validator("action", mode="before", check_fields=False)
    @classmethod
    def _upper(cls, value):
        return value.strip().upper() if isinstance(value, str) else value


class CancelOrder(_Command):
    action: Literal[CommandAction.CANCEL] = CommandAction.CANCEL
    reason: Annotated[str, Field(strict=True, max_length=500)] | None = None

    @property
    def source(self) -> str:
        """`upstream` for the strategy engine; `operator` for the CLI, Telegram or the API."""
        return "upstream" if self.by is None else "operator"

    def cancel_reason(self) -> str:
        by = f" ({self.by})" if self.by else ""
        why = f": {self.reason}" if self.reason else ""
        return f"cancelled by {self.source} request {self.request_id}{by}{why}"

    def placement_reason(self) -> str:
        return placement_reason(self.source, self.request_id)


class ModifyOrder(_Command):
    action: Literal[CommandAction.MODIFY] = CommandAction.MODIFY
    limit_price: PositiveNumber | None = None
    stop_price: PositiveNumber | None = None
    quantity: PositiveNumber | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> ModifyOrder:
        if self.limit_price is None and self.stop_price is None and self.quantity is None:
            raise ValueError("MODIFY needs at least one of limit_price, stop_price, quantity")
        return self

    def changes(self) -> dict[str, float]:
        return {name: value for name in ("limit_price", "stop_price", "quantity")
                if (value := getattr(self, name)) is not None}


Command = CancelOrder | ModifyOrder


@dataclass(frozen=True)
class UnusableCommand:
    """No usable request_id or signal_id, or an unknown action: dead letter with the reason."""

    reason: str


@dataclass(frozen=True)
class InvalidCommand:
    """A command that can be answered (its ids are usable) but fails validation."""

    action: CommandAction
    request_id: str
    signal_id: str
    reason: str


def is_command(data: dict[str, Any]) -> bool:
    """A body with an `action` other than NEW is a command, not an order."""
    action = data.get("action")
    return action is not None and not (isinstance(action, str)
                                       and action.strip().upper() == "NEW")


def parse_command(data: dict[str, Any]) -> Command | InvalidCommand | UnusableCommand:
    action = data.get("action")
    name = action.strip().upper() if isinstance(action, str) else None
    if name not in CommandAction.__members__:
        return UnusableCommand(f"action {action!r:.40} is not NEW, CANCEL or MODIFY")
    for field in ("request_id", "signal_id"):
        value = data.get(field)
        if not isinstance(value, str) or not SIGNAL_ID_PATTERN.match(value):
            shown = "missing" if value is None else f"invalid: {value!r:.80}"
            return UnusableCommand(f"{name} command: {field} {shown} ({REQUEST_ID_RULE})")
    model = CancelOrder if name == CommandAction.CANCEL else ModifyOrder
    try:
        return model.model_validate(data)
    except ValidationError as e:
        return InvalidCommand(CommandAction(name), data["request_id"], data["signal_id"],
                              f"failed validation: {describe_validation_error(e)}")


def refused_command(data: dict[str, Any], problem: str) -> InvalidCommand | UnusableCommand:
    """A command whose body the intake refused (a `$` key, a NUL…): answered with the reason
    when its ids are usable."""
    parsed = parse_command(data)
    if isinstance(parsed, UnusableCommand):
        return parsed
    return InvalidCommand(CommandAction(parsed.action), parsed.request_id, parsed.signal_id,
                          f"failed validation: {problem}")


# decisions ----------------------------------------------------------------------------------

def _terminal_refusal(state: OrderState) -> str | None:
    if state.status is S.FILLED:
        return "already filled"
    if state.status.is_terminal:
        return f"already terminal ({state.status})"
    return None


def cancel_refusal(state: OrderState) -> str | None:
    """Why this order cannot be cancelled now, or None."""
    refusal = _terminal_refusal(state)
    if refusal is None and state.cancel_requested_reason is not None:
        by = state.cancel_request_id or "the service"
        refusal = f"a cancel is already pending (asked by {by})"
    return refusal


def modify_refusal(state: OrderState, order_type: str, command: ModifyOrder) -> str | None:
    """Why this order cannot take this modification, or None (§11: a working order, quantity
    not below what is filled, prices its order type has)."""
    refusal = _terminal_refusal(state)
    if refusal is not None:
        return refusal
    if state.status is S.PENDING_CANCEL or state.cancel_requested_reason is not None:
        return "a cancel is pending"
    if state.status not in WORKING:
        return f"not yet working at the broker ({state.status})"
    if command.limit_price is not None and order_type not in ("LIMIT", "STOP_LIMIT"):
        return f"limit_price does not apply to a {order_type} order"
    if command.stop_price is not None and order_type not in ("STOP", "STOP_LIMIT"):
        return f"stop_price does not apply to a {order_type} order"
    filled = state.filled_quantity
    if command.quantity is not None and command.quantity < filled:
        return f"quantity {command.quantity:g} is below the filled quantity {filled:g}"
    if command.quantity is not None and command.quantity == filled:
        return (f"quantity {command.quantity:g} equals the filled quantity: cancel the rest "
                f"instead")
    return None


def already_applied(state: OrderState, request_id: str) -> bool:
    return request_id in state.command_ids


# state changes ------------------------------------------------------------------------------

def refuse(state: OrderState, action: CommandAction, request_id: str, reason: str,
           at: datetime) -> Change:
    """The command is answered with a refusal: an event (and its confirmation), no other
    change."""
    if already_applied(state, request_id):
        return Change(state)
    event = Event(state.status, at, REFUSED[action],
                  {"request_id": request_id, "reason": reason})
    return Change(replace(state, command_ids=(*state.command_ids, request_id)), (event,))


def modify(state: OrderState, command: ModifyOrder, at: datetime) -> Change:
    """The broker took the modification: new values, with the old ones in the event."""
    if already_applied(state, command.request_id):
        return Change(state)
    changes = command.changes()
    old = {name: getattr(state, name) for name in changes}
    modified = replace(state, command_ids=(*state.command_ids, command.request_id), **changes)
    detail = {"request_id": command.request_id, "old": old, "new": changes}
    return Change(modified, (Event(state.status, at, CommandEvent.MODIFIED, detail),))


def placement_refusal(state: OrderState) -> str | None:
    """A PENDING order whose cancel was asked for before it reached a broker: never send it."""
    if state.status is not S.PENDING or state.cancel_requested_reason is None:
        return None
    return placement_reason(state.cancel_request_source or "upstream",
                            state.cancel_request_id or "of the service")


def placement_reason(source: str, request_id: str) -> str:
    return f"cancelled by {source} request {request_id} before placement"


def apply_cancel(state: OrderState, command: CancelOrder, at: datetime) -> Change:
    """Decide on the record as it is now: the cancel is asked for, or refused with a reason."""
    if already_applied(state, command.request_id):
        return Change(state)
    refusal = cancel_refusal(state)
    if refusal is not None:
        return refuse(state, CommandAction.CANCEL, command.request_id, refusal, at)
    return request_cancel(state, command.cancel_reason(), at, command.request_id,
                          command.source)


def apply_modify(state: OrderState, command: ModifyOrder, at: datetime) -> Change:
    """Record the modification the broker took: its values are the order's at the broker now,
    whatever the record became meanwhile. A marketable modify can fill at once, and that fill
    (of the modified order: 80 filled of the new 80) may be recorded FILLED first; refusing the
    modify then ("already filled") would leave the record at the old quantity and limit while
    the broker's order has the new ones. The checks were made before the broker was asked."""
    if already_applied(state, command.request_id):
        return Change(state)
    return modify(state, command, at)


def early_cancel_record(command: CancelOrder, at: datetime) -> dict[str, Any]:
    """A cancel for an order not seen yet, kept as the signal's record: REJECTED and
    `awaiting_order`, so the order's claim (same unique signal_id) can never be written and
    the order never reaches a broker, whichever replica receives it, before or after a
    restart."""
    reason = command.placement_reason()
    doc = skeleton_record(command.signal_id, at)
    requested = Event(OrderStatus.PENDING, at, CommandEvent.CANCEL_REQUESTED,
                      {"request_id": command.request_id, "reason": command.cancel_reason()})
    doc.update({"strategy_name": None, "account_id": None, "broker": None,
                "status": str(OrderStatus.REJECTED), "reject_reason": reason, "closed_at": at,
                "awaiting_order": True, "cancel_request_id": command.request_id,
                "cancel_request_source": command.source, "command_ids": [command.request_id],
                "reject_class": str(RejectClass.REQUEST), "events": [requested.to_doc()]})
    queue_confirmation(doc, requested)
    return doc


def refuse_awaited_order(state: OrderState, at: datetime) -> Change:
    """The order a kept cancel was waiting for has come: it is recorded REJECTED, unplaced."""
    arrived = f"{state.cancel_request_id}:order"  # once, however often the order comes
    if arrived in state.command_ids:
        return Change(state)
    detail = {"reason": state.reject_reason}
    if state.cancel_request_id is not None:
        detail["request_id"] = state.cancel_request_id
    return Change(replace(state, command_ids=(*state.command_ids, arrived)),
                  (Event(OrderStatus.REJECTED, at, EventKind.REJECTED, detail),))


@dataclass(frozen=True)
class CommandOutcome:
    """What became of one request: `event` is a CommandEvent, KEPT or DUPLICATE."""

    request_id: str
    signal_id: str
    event: str
    reason: str | None = None

    @property
    def refused(self) -> bool:
        return self.event in (CommandEvent.CANCEL_REJECTED, CommandEvent.MODIFY_REJECTED)

    def as_doc(self) -> dict:
        return {"outcome": str(self.event), "reason": self.reason}
