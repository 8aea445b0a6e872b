"""The audit record of one signal (SPEC §5) and the confirmations it produces (SPEC §6).

Pure mapping between domain values and the documents the store keeps.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from execution_service.domain.notices import CancelCause
from execution_service.domain.orders import (
    Event,
    EventKind,
    OrderState,
    OrderStatus,
    RecordedFill,
)
from execution_service.domain.reasons import RejectClass
from execution_service.domain.signals import Signal

K = EventKind
CONFIRMED_EVENTS = frozenset({K.SUBMITTED, K.FILL, K.COMPLETED, K.LATE_FILL, K.OVERFILL,
                              K.REJECTED, K.CANCELLED, K.MODIFIED, K.CANCEL_REJECTED,
                              K.MODIFY_REJECTED, K.RESIZED})
FILL_EVENTS = frozenset({K.FILL, K.LATE_FILL, K.OVERFILL})  # each moves the position
#: Events that change the order's own values (quantity, prices): written with the state.
ORDER_VALUE_EVENTS = frozenset({K.MODIFIED, K.RESIZED})
#: Confirmed only when a request asked for it (a timeout's cancel request is internal).
REQUEST_EVENTS = frozenset({K.CANCEL_REQUESTED})
ORDER_FIELDS = ("symbol", "side", "quantity", "order_type", "limit_price", "stop_price",
                "time_in_force", "stop_loss", "take_profit", "asset_class", "exchange",
                "currency", "product", "reference_price")


def record_id(signal_id: str) -> str:
    return f"exec_{signal_id}"


def skeleton_record(signal_id: str, at: datetime) -> dict[str, Any]:
    return {
        "_id": record_id(signal_id), "signal_id": signal_id, "order_id": None,
        "status": str(OrderStatus.PENDING), "filled_quantity": 0.0, "avg_fill_price": None,
        "received_at": at, "submitted_at": None, "filled_at": None, "closed_at": None,
        "commission": 0.0, "total_value": 0.0, "notes": None, "reject_reason": None,
        "cancel_reason": None, "fills": [], "events": [], "confirmations": [],
        "confirmation_sequence": 0, "published_sequence": 0, "outbox_pending": False,
        "version": 0,
    }


def new_claim(signal: Signal, *, broker: str, broker_tag: str, at: datetime,
              owner: dict | None = None) -> dict[str, Any]:
    """The PENDING record written before any broker is called."""
    doc = skeleton_record(signal.signal_id, at)
    doc.update({
        "strategy_name": signal.strategy_name, "account_id": signal.account_id,
        **{name: _plain(getattr(signal, name)) for name in ORDER_FIELDS},
        "signal_created_at": signal.created_at, "extra_fields": signal.extra_fields,
        "broker": broker, "broker_tag": broker_tag, "owner": owner,
        "events": [Event(OrderStatus.PENDING, at, K.CLAIMED).to_doc()],
    })
    if signal.stop_loss is not None or signal.take_profit is not None:
        doc["exits_settled"] = False  # protective exits to follow its fills (§12)
    return doc


def new_rejection(signal_id: str, fields: dict[str, Any], reason: str, at: datetime,
                  *, raw_body: bytes | None = None, broker: str | None = None,
                  kind: RejectClass = RejectClass.VALIDATION) -> dict[str, Any]:
    """A REJECTED record for a message that failed validation, an account check or a risk
    control (`kind` says which), with its one confirmation queued."""
    doc = skeleton_record(signal_id, at)
    kept = {key: value for key, value in fields.items() if key != "signal_id"}
    doc.update({"strategy_name": None, "account_id": None, "broker": broker, **kept})
    if isinstance(doc.get("side"), str):
        doc["side"] = doc["side"].upper()
    if raw_body is not None:
        doc["raw_message"] = raw_body.decode("utf-8", "replace")[:10_000]
    event = rejection_event(reason, at)
    doc.update({"status": str(OrderStatus.REJECTED), "reject_reason": reason,
                "reject_class": str(kind), "closed_at": at, "events": [event.to_doc()]})
    queue_confirmation(doc, event)
    return doc


def rejection_event(reason: str, at: datetime) -> Event:
    return Event(OrderStatus.REJECTED, at, K.REJECTED, {"reason": reason})


def queue_confirmation(doc: dict[str, Any], event: Event) -> None:
    """A new record's first confirmation, for the outbox to publish."""
    doc.update(confirmations=[confirmation(doc, event, 1)], confirmation_sequence=1,
               outbox_pending=True)


def _plain(value: Any) -> Any:
    return str(value) if hasattr(value, "value") else value


def state_of(doc: dict[str, Any]) -> OrderState:
    return OrderState(
        signal_id=doc["signal_id"], quantity=_number(doc.get("quantity")) or 0.0,
        status=OrderStatus(doc["status"]), order_id=doc.get("order_id"),
        fills=tuple(RecordedFill(f["exec_id"], f["quantity"], f["price"], as_utc(f["at"]),
                                 f.get("commission", 0.0)) for f in doc.get("fills", [])),
        submitted_at=as_utc(doc.get("submitted_at")), filled_at=as_utc(doc.get("filled_at")),
        closed_at=as_utc(doc.get("closed_at")), reject_reason=doc.get("reject_reason"),
        reject_class=reject_class_of(doc), cancel_cause=cancel_cause_of(doc),
        cancel_reason=doc.get("cancel_reason"), broker_commission=doc.get("broker_commission"),
        limit_price=_number(doc.get("limit_price")), stop_price=_number(doc.get("stop_price")),
        cancel_requested_reason=doc.get("cancel_requested_reason"),
        cancel_request_id=doc.get("cancel_request_id"),
        cancel_request_source=doc.get("cancel_request_source"),
        command_ids=tuple(doc.get("command_ids") or ()),
    )


def reject_class_of(doc: dict[str, Any]) -> RejectClass | None:
    """The class its rejecter gave; None for a record written before the class was kept."""
    return _kind(RejectClass, doc.get("reject_class"))


def cancel_cause_of(doc: dict[str, Any]) -> CancelCause | None:
    return _kind(CancelCause, doc.get("cancel_cause"))


def _kind(enum, value: Any):
    return enum(value) if value in enum.__members__.values() else None


def _number(value: Any) -> float | None:
    """A stored number; None for what a rejected message carried instead of one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def state_fields(state: OrderState) -> dict[str, Any]:
    """The record fields that follow from the order state."""
    avg = state.avg_fill_price
    return {
        "status": str(state.status), "order_id": state.order_id,
        "filled_quantity": state.filled_quantity, "avg_fill_price": avg,
        "commission": state.commission,
        "total_value": round(state.filled_quantity * avg, 2) if avg is not None else 0.0,
        "submitted_at": state.submitted_at, "filled_at": state.filled_at,
        "closed_at": state.closed_at, "reject_reason": state.reject_reason,
        "reject_class": _text(state.reject_class), "cancel_cause": _text(state.cancel_cause),
        "cancel_reason": state.cancel_reason, "fills": [f.to_doc() for f in state.fills],
        "broker_commission": state.broker_commission,
        "notes": _notes(state), "cancel_requested_reason": state.cancel_requested_reason,
        "cancel_request_id": state.cancel_request_id,
        "cancel_request_source": state.cancel_request_source,
        "command_ids": list(state.command_ids),
    }


def _text(kind) -> str | None:
    return None if kind is None else str(kind)


def modified_fields(state: OrderState) -> dict[str, Any]:
    """The order values a MODIFIED event changes (written only then: a rejected record keeps
    whatever it was sent)."""
    return {"quantity": state.quantity, "limit_price": state.limit_price,
            "stop_price": state.stop_price}


def is_confirmed(event: Event) -> bool:
    """Whether this event is published on execution-confirmations (SPEC §6, §11)."""
    return event.event in CONFIRMED_EVENTS or (
        event.event in REQUEST_EVENTS and "request_id" in event.detail)


def _notes(state: OrderState) -> str | None:
    if state.status is OrderStatus.FILLED and state.filled_at and state.submitted_at:
        seconds = max(0.0, (state.filled_at - state.submitted_at).total_seconds())
        return f"Filled in {seconds:.0f} second{'' if round(seconds) == 1 else 's'}" \
            if seconds >= 1 else f"Filled in {seconds * 1000:.0f} ms"
    if state.status is OrderStatus.CANCELLED:
        return f"Cancelled with {state.filled_quantity:g}/{state.quantity:g} filled"
    return None


def confirmation(doc: dict[str, Any], event: Event, sequence: int) -> dict[str, Any]:
    """The execution-confirmations payload for one event of this record (SPEC §6)."""
    detail = event.detail
    filled = detail.get("filled_quantity", doc.get("filled_quantity", 0.0))
    is_fill = event.event in FILL_EVENTS or event.event is K.COMPLETED
    payload = {
        "signal_id": doc["signal_id"], "order_id": detail.get("order_id", doc.get("order_id")),
        "status": str(event.status), "event": str(event.event), "sequence": sequence,
        "account_id": doc.get("account_id"), "strategy_name": doc.get("strategy_name"),
        "symbol": doc.get("symbol"), "side": doc.get("side"), "quantity": doc.get("quantity"),
        "filled_quantity": filled,
        "avg_fill_price": detail.get("avg_fill_price", doc.get("avg_fill_price")),
        "commission": detail.get("commission", doc.get("commission")),
        "filled_at": iso(detail.get("fill_at")) if is_fill else None,
        "last_fill_quantity": detail.get("quantity") if is_fill else None,
        "last_fill_price": detail.get("price") if is_fill else None,
        "reason": detail.get("reason"), "at": iso(event.at),
    }
    if "request_id" in detail:
        payload["request_id"] = detail["request_id"]
    if doc.get("role"):
        payload.update(role=doc["role"], parent_signal_id=doc.get("parent_signal_id"))
    if event.event in ORDER_VALUE_EVENTS:
        payload.update(detail["new"])
    return payload


def confirmation_message(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    attributes = {"signal_id": payload["signal_id"], "status": payload["status"],
                  "account_id": payload.get("account_id") or "",
                  "sequence": str(payload["sequence"])}
    if payload.get("request_id"):
        attributes["request_id"] = payload["request_id"]
    return strict_json(payload, separators=(",", ":")).encode(), attributes


def strict_json(value: Any, **options: Any) -> str:
    """JSON any parser accepts: a number that is not finite (none should ever be stored, but a
    record written before the bounds existed may hold one) is written as null, never as
    `Infinity` or `NaN`."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:  # such a number somewhere: only then is the value copied without it
        return json.dumps(finite_only(value), allow_nan=False, **options)


def finite_only(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_only(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_only(item) for item in value]
    return value


def as_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


def json_default(value: Any) -> Any:
    """`json.dumps(..., default=json_default)`: dates as ISO-8601 ending in Z, the rest as
    text (ids, enums)."""
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


def parse_iso(text: str) -> datetime:
    """What `iso` wrote, back to an aware datetime."""
    return as_utc(datetime.fromisoformat(text))


def published_confirmations(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's confirmations, each with `published` (through `published_sequence`)."""
    published = record.get("published_sequence", 0)
    return [{**item, "published": item["sequence"] <= published}
            for item in record.get("confirmations", [])]


def signal_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What signal_store shows of the record's execution."""
    return {"order_id": doc.get("order_id"), "execution_status": doc["status"],
            "filled_at": doc.get("filled_at"), "filled_quantity": doc.get("filled_quantity"),
            "avg_fill_price": doc.get("avg_fill_price"), "reject_reason": doc.get("reject_reason")}
