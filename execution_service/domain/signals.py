"""Inbound order validation (SPEC §3): bytes in, a `Signal` or a reason out."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from execution_service.domain.intake import (
    DEFAULT_LIMITS,
    SIGNAL_ID_PATTERN,
    SIGNAL_ID_RULE,
    IntakeLimits,
    Invalid,
    Problem,
    Unusable,
    decode_body,
    storable,
    storable_fields,
)
from execution_service.domain.numbers import number_problems
from execution_service.domain.text import check_free_text, normalise_identifier

__all__ = ["AssetClass", "Invalid", "Problem", "Signal", "Unusable", "parse_signal", "storable"]
ORDER_RULE = "order_rule"  # a rule across fields; its context names the field it is about
KNOWN_FIELDS_ORDER = ("signal_id", "account_id", "strategy_name", "symbol", "side", "quantity",
                      "order_type", "limit_price", "stop_price", "time_in_force", "stop_loss",
                      "take_profit", "asset_class", "exchange", "currency", "product",
                      "reference_price", "created_at")


class AssetClass(StrEnum):
    EQUITY = "EQUITY"
    OPTION = "OPTION"
    FUTURE = "FUTURE"
    CRYPTO = "CRYPTO"
    FOREX = "FOREX"


FRACTIONAL_ASSETS = frozenset({AssetClass.CRYPTO, AssetClass.FOREX})
PositiveNumber = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Text = Annotated[str, Field(strict=True)]


class Signal(BaseModel):
    """A validated order from the strategy engine. Unknown fields land in `extra_fields`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal_id: Text
    account_id: Annotated[str, Field(strict=True, min_length=1, max_length=128)]
    strategy_name: Annotated[str, Field(strict=True, min_length=1, max_length=200)]
    symbol: Annotated[str, Field(strict=True, min_length=1, max_length=64)]
    side: Literal["BUY", "SELL"]
    quantity: PositiveNumber
    order_type: Literal["MARKET", "LIMIT", "STOP", "STOP_LIMIT"]
    limit_price: PositiveNumber | None = None
    stop_price: PositiveNumber | None = None
    time_in_force: Literal["DAY", "GTC", "IOC"] = "DAY"
    stop_loss: PositiveNumber | None = None
    take_profit: PositiveNumber | None = None
    asset_class: AssetClass = AssetClass.EQUITY
    exchange: Annotated[str, Field(strict=True, min_length=1, max_length=32)] | None = None
    currency: Annotated[str, Field(strict=True, min_length=1, max_length=16)] | None = None
    product: Literal["MIS", "NRML", "CNC"] | None = None
    reference_price: PositiveNumber | None = None
    created_at: datetime | None = None
    extra_fields: dict[str, Any] = Field(default_factory=dict)

    @field_validator("side", "order_type", "time_in_force", "asset_class", "product",
                     mode="before")
    @classmethod
    def _upper(cls, value):
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("signal_id")
    @classmethod
    def _signal_id_charset(cls, value: str) -> str:
        if not SIGNAL_ID_PATTERN.match(value):
            raise ValueError(f"must be {SIGNAL_ID_RULE}, got {value!r}")
        return value

    @field_validator("symbol", "account_id", "exchange", "currency")
    @classmethod
    def _identifier(cls, value: str | None, info) -> str | None:
        return None if value is None else normalise_identifier(info.field_name, value)

    @field_validator("strategy_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return check_free_text("strategy_name", value)

    @model_validator(mode="after")
    def _order_rules(self) -> Signal:
        for problem in _order_problems(self):
            raise PydanticCustomError(ORDER_RULE, "{message}",
                                      {"field": problem.field, "message": problem.message})
        return self

    @property
    def entry_price(self) -> float | None:
        return self.limit_price or self.stop_price or self.reference_price


def _order_problems(signal: Signal):
    whole = round(signal.quantity)
    if signal.asset_class not in FRACTIONAL_ASSETS and (
            whole < 1 or not math.isclose(signal.quantity, whole, abs_tol=1e-9)):
        yield Problem("quantity", f"quantity must be a whole number for {signal.asset_class} "
                      f"(fractions only for CRYPTO or FOREX), got {signal.quantity:g}")
    yield from number_problems(signal)
    if signal.order_type in ("LIMIT", "STOP_LIMIT") and signal.limit_price is None:
        yield Problem("limit_price", f"limit_price is required for {signal.order_type} orders")
    if signal.order_type in ("STOP", "STOP_LIMIT") and signal.stop_price is None:
        yield Problem("stop_price", f"stop_price is required for {signal.order_type} orders")
    entry = signal.entry_price
    if entry is None:
        return
    below, above = ("stop_loss", "take_profit") if signal.side == "BUY" else \
        ("take_profit", "stop_loss")
    for name in (below, above):
        level = getattr(signal, name)
        if level is None:
            continue
        wrong = level >= entry if name == below else level <= entry
        if wrong:
            where = "below" if name == below else "above"
            yield Problem(name, f"{name} must be {where} the entry price {entry:g} for a "
                                f"{signal.side}, got {level:g}")


def parse_signal(body: bytes, limits: IntakeLimits = DEFAULT_LIMITS
                 ) -> Signal | Invalid | Unusable:
    """Decode and validate one message body; never raises for any input."""
    data = decode_body(body, KNOWN_FIELDS_ORDER, limits)
    return signal_from_data(data) if isinstance(data, dict) else data


def signal_from_data(data: dict[str, Any]) -> Signal | Invalid:
    """Validate one decoded order (`"action": "NEW"` is the same as no action)."""
    data = {key: value for key, value in data.items() if key != "action"}
    known = {key: value for key, value in data.items() if key in KNOWN_FIELDS_ORDER}
    extra = {key: storable(value) for key, value in data.items()
             if key not in KNOWN_FIELDS_ORDER}
    try:
        return Signal(**known, extra_fields=extra)
    except ValidationError as e:
        problems = validation_problems(e)
        return Invalid(data["signal_id"], "; ".join(p.message for p in problems),
                       storable_fields(data, KNOWN_FIELDS_ORDER), problems)


_MESSAGES = {
    "missing": "{field} is required",
    "string_type": "{field} must be a string, got {input}",
    "float_type": "{field} must be a number, got {input}",
    "greater_than": "{field} must be > {gt}, got {input}",
    "finite_number": "{field} must be a finite number, got {input}",
    "string_too_short": "{field} must not be empty",
    "string_too_long": "{field} must be at most {max_length} characters, got {length}",
    "literal_error": "{field} must be one of {expected}, got {input}",
    "enum": "{field} must be one of {expected}, got {input}",
    "datetime_from_date_parsing": "{field} must be an ISO-8601 timestamp, got {input}",
    "datetime_parsing": "{field} must be an ISO-8601 timestamp, got {input}",
    "datetime_type": "{field} must be an ISO-8601 timestamp, got {input}",
    "extra_forbidden": "{field} is not a known field",
}


def describe_validation_error(error: ValidationError) -> str:
    """One clear sentence per problem, naming the field and the rule."""
    return "; ".join(problem.message for problem in validation_problems(error))


def validation_problems(error: ValidationError) -> tuple[Problem, ...]:
    """Each problem with the field it names (None for a rule about the whole order)."""
    problems = []
    for item in error.errors(include_url=False):
        if item["type"] == ORDER_RULE:
            problems.append(Problem(item["ctx"]["field"], item["ctx"]["message"]))
            continue
        field = _field_of(item)
        problems.append(Problem(None if field == "order" else field, _describe(item, field)))
    return tuple(problems)


def _field_of(item: dict) -> str:
    field = ".".join(str(part) for part in item["loc"] if not isinstance(part, int)) or "order"
    return field.split(".")[0]


def _describe(item: dict, field: str) -> str:
    context = {key: _show(value) if isinstance(value, float) else value
               for key, value in (item.get("ctx") or {}).items()}
    value = item.get("input")
    if item["type"] == "value_error":
        message = str(context.get("error", item["msg"]))
        if field == "order" or message.startswith(f"{field} "):
            return message
        return f"{field} {message}"
    if item["type"] == "float_type" and _non_finite_text(value):
        return f"{field} must be a finite number, got {value}"
    template = _MESSAGES.get(item["type"])
    if template is None:
        return f"{field}: {item['msg']}, got {_show(value)}"
    context.setdefault("length", len(value) if isinstance(value, str) else "?")
    return template.format(field=field, input=_show(value), **context)


def _non_finite_text(value: Any) -> bool:
    """A number JSON decoding kept as text because it is not finite (NaN, 1e400)."""
    try:
        return isinstance(value, str) and not math.isfinite(float(value))
    except ValueError:
        return False


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:80])
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)
