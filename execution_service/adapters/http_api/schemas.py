"""What the HTTP API takes and answers, as pydantic models: request bodies are validated by
them, answers are described by them in /openapi.json (the tests check answers against them).

The order body is not repeated here: its schema is the `Signal` model's own (SPEC §3), so the
description cannot drift from the validation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from execution_service.domain.commands import CancelOrder, ModifyOrder
from execution_service.domain.signals import SIGNAL_ID_PATTERN, Signal

OPEN = ConfigDict(extra="allow")


class FieldError(BaseModel):
    field: str | None = Field(description="the order field the reason is about; null when it "
                                          "is about the whole order or a risk control")
    message: str


class ErrorBody(BaseModel):
    detail: str = Field(description="every reason in one line")
    errors: list[FieldError] = []


class Event(BaseModel):
    model_config = OPEN
    status: str
    event: str | None = None
    at: datetime
    by: str | None = None


class Confirmation(BaseModel):
    """One message as published on execution-confirmations (SPEC §6)."""

    model_config = OPEN
    signal_id: str
    order_id: str | None
    status: str
    event: str | None = None
    sequence: int
    account_id: str | None
    symbol: Any = None
    side: Any = None
    quantity: Any = None
    filled_quantity: float | None = None
    avg_fill_price: float | None = None
    commission: float | None = None
    filled_at: datetime | None = None
    reason: str | None = None
    at: datetime
    published: bool = Field(description="Pub/Sub has accepted it")


class OrderRecord(BaseModel):
    """The audit record of one signal (SPEC §5), with its events and confirmations. Fields of
    a rejected order are kept as they came, whatever their type."""

    model_config = OPEN
    signal_id: str
    status: str = Field(description="PENDING, SUBMITTED, PARTIALLY_FILLED, FILLED, REJECTED, "
                                    "CANCELLED")
    order_id: str | None = None
    account_id: Any = None
    strategy_name: Any = None
    symbol: Any = None
    side: Any = None
    quantity: Any = None
    order_type: Any = None
    filled_quantity: float
    avg_fill_price: float | None = None
    received_at: datetime
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    closed_at: datetime | None = None
    reject_reason: str | None = None
    cancel_reason: str | None = None
    by: str | None = Field(None, description="who sent it, for orders sent through this API "
                                             "(api:<key name>)")
    events: list[Event]
    confirmations: list[Confirmation]


class StoredOrder(OrderRecord):
    """A record just written: confirmations not yet marked published."""

    confirmations: list[dict[str, Any]]


class RejectedOrder(ErrorBody):
    signal_id: str | None = None
    control: str | None = Field(None, description="the risk control that refused the order")
    record: StoredOrder | None = Field(None, description="the REJECTED record, when the order "
                                                         "had a usable signal_id")


class DuplicateOrder(ErrorBody):
    signal_id: str
    record: OrderRecord | None = Field(None, description="the record already there")


class Position(BaseModel):
    model_config = OPEN
    account_id: str
    strategy_name: str
    symbol: str
    side: str
    quantity: float
    avg_entry_price: float
    status: str
    realized_pnl: float
    opened_at: datetime
    closed_at: datetime | None = None
    order_ids: list[str] = []


class Broker(BaseModel):
    name: str
    connected: bool = Field(description="connected now (a broker connects at its first "
                                        "order)")


class Capabilities(BaseModel):
    version: str
    brokers: list[Broker]
    use_mock_broker: bool
    features: list[str]
    degraded_reason: str | None = Field(description="null when healthy; else why not (the "
                                                    "/healthz reason, or a broker connection "
                                                    "lost and not yet restored)")


class Status(BaseModel):
    """What `execution-service status --json` prints."""

    model_config = OPEN
    running: bool
    healthy: bool
    heartbeat_age_seconds: float | None
    uptime_seconds: float | None
    orders_received: int
    orders_filled: int
    orders_rejected: int
    orders_cancelled: int
    orders_open: int
    store: dict[str, Any]
    halts: list[dict[str, Any]]
    service: dict[str, Any] | None


class HaltRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")
    account_id: str | None = Field(None, description="halt only this account (default: all)")
    cancel_open: bool = Field(False, description="also cancel working orders")


class Halt(BaseModel):
    model_config = OPEN
    account_id: str | None
    reason: str
    cancel_open: bool
    halted_at: datetime
    by: str | None = None


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account_id: str | None = Field(None, description="lift this account's halt (default: the "
                                                     "global one)")


class CommandAnswer(BaseModel):
    request_id: str
    signal_id: str
    outcome: str = Field(description="CANCEL_REQUESTED, KEPT (a cancel for an order not seen "
                                     "yet), MODIFIED, DUPLICATE (this request_id was answered "
                                     "before), IN_PROGRESS")
    reason: str | None
    record: OrderRecord | None


class RefusedCommand(ErrorBody):
    request_id: str
    signal_id: str
    outcome: str = Field(description="CANCEL_REJECTED or MODIFY_REJECTED")
    reason: str | None
    record: OrderRecord | None


class Resumed(BaseModel):
    lifted: Halt | None = Field(description="the halt lifted; null when none was active")
    still_halted: list[Halt]


def request_schemas() -> dict[str, dict]:
    """The bodies read raw, as OpenAPI components: the §3 `Order` (and the enums it refers
    to), `HaltRequest`, `ResumeRequest`."""
    ref = "#/components/schemas/{model}"
    return {**_order_schema(), **{model.__name__: model.model_json_schema(ref_template=ref)
                                  for model in (HaltRequest, ResumeRequest)},
            "CancelRequest": _command_body(CancelOrder),
            "ModifyRequest": _command_body(ModifyOrder)}


def _command_body(model) -> dict:
    """A §11 command's model as a route's body: signal_id is in the path, by is the key."""
    schema = model.model_json_schema()
    for name in ("signal_id", "by", "action"):
        schema["properties"].pop(name, None)
    schema["required"] = [name for name in schema.get("required", ())
                          if name in schema["properties"]]
    schema["title"] = f"{model.__name__.removesuffix('Order')}Request"
    return schema


def _order_schema() -> dict[str, dict]:
    schema = Signal.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    schema["properties"].pop("extra_fields", None)
    schema["properties"]["signal_id"]["pattern"] = SIGNAL_ID_PATTERN.pattern
    schema.update(title="Order", additionalProperties=True, description=(
        "A §3 order, exactly as on trading-orders. Unknown fields are kept in the audit record "
        "and otherwise ignored."))
    return {**components, "Order": schema}
