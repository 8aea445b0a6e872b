"""What traders are told about: order notices and service alerts (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class NoticeKind(StrEnum):
    FILLED = "FILLED"
    PARTIAL_FILL = "PARTIAL_FILL"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    LATE_FILL = "LATE_FILL"
    MODIFIED = "MODIFIED"
    COMMAND_REFUSED = "COMMAND_REFUSED"  # a cancel or modify that could not be done


class AlertKind(StrEnum):
    SERVICE_STARTED = "SERVICE_STARTED"
    SERVICE_STOPPING = "SERVICE_STOPPING"
    BROKER_CONNECTION_LOST = "BROKER_CONNECTION_LOST"
    BROKER_CONNECTION_RESTORED = "BROKER_CONNECTION_RESTORED"
    OPERATOR = "OPERATOR"  # anything else an operator must act on (session expired, halt…)


class CancelCause(StrEnum):
    TIMEOUT = "TIMEOUT"
    BROKER = "BROKER"
    OPERATOR = "OPERATOR"
    UPSTREAM = "UPSTREAM"  # the strategy engine's CANCEL


@dataclass(frozen=True)
class OrderNotice:
    """One event in an order's life that a trader should hear about."""

    kind: NoticeKind
    signal_id: str
    strategy_name: str
    account_id: str
    symbol: str
    side: str
    quantity: float
    filled_quantity: float = 0.0
    avg_fill_price: float | None = None
    commission: float | None = None
    seconds_to_fill: float | None = None
    reason: str | None = None
    cancel_cause: CancelCause | None = None
    account_name: str | None = None  # the account's display name, when it has one
    last_fill_quantity: float | None = None
    last_fill_price: float | None = None
    order_id: str | None = None
    request_id: str | None = None  # the cancel/modify request this notice answers
    command: str | None = None  # CANCEL or MODIFY, for a refused request
    changes: tuple[tuple[str, float | None, float], ...] = ()  # (field, old, new) of a modify
    role: str | None = None  # STOP_LOSS or TAKE_PROFIT for a protective exit (§12)


@dataclass(frozen=True)
class ServiceAlert:
    """A service-level event. Alerts with the same `key` inside a window collapse into one."""

    kind: AlertKind
    text: str
    key: str = ""
