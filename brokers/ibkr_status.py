"""IB's order statuses, executions and trades as our BrokerStatus, Fill and facts: pure
translation of ib_async's objects, nothing here talks to IB."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ib_async import Fill as IbFill
from ib_async import Trade

from brokers.base import BrokerStatus, Fill
from brokers.ibkr_contracts import is_set

#: IB messages about an order that do not change it (held until the open, short-sale locate,
#: a cancel that came too late, tif set by preset, market data notes). 2100-2199 are warnings.
INFORMATIONAL_CODES = frozenset({161, 165, 399, 404, 10090, 10147, 10148, 10167, 10197, 10349})
CANCELLED_CODE = 202  # "Order Canceled - reason:": the cancel confirmation, not a rejection

PENDING_STATES = frozenset({"PendingSubmit", "ApiPending", ""})
WORKING_STATES = frozenset({"PreSubmitted", "Submitted", "PendingCancel", "ApiUpdate",
                            "ValidationError"})
CANCELLED_STATES = frozenset({"Cancelled", "ApiCancelled", "Inactive"})


@dataclass
class Placed:
    """What this process asked for; ib_async forgets its trades on a disconnect."""

    signal_id: str
    quantity: float


def is_informational(code: int) -> bool:
    return code in INFORMATIONAL_CODES or 2100 <= code <= 2199



def map_status(ib_status: str, *, fills_complete: bool, error: tuple[int, str] | None,
               cancel_requested: bool, has_fills: bool) -> tuple[BrokerStatus, str | None]:
    """IB's order status (plus the order's last error) as a BrokerStatus and reason."""
    reason = f"IB error {error[0]}: {error[1]}" if error else None
    if ib_status in PENDING_STATES:
        return BrokerStatus.PENDING, None
    if ib_status in WORKING_STATES:
        return BrokerStatus.WORKING, None
    if ib_status == "Filled":  # IB may say Filled before the last execDetails arrives
        return (BrokerStatus.FILLED if fills_complete else BrokerStatus.WORKING), None
    if ib_status in CANCELLED_STATES:
        refused = ib_status == "Inactive" or (error is not None and error[0] != CANCELLED_CODE)
        if refused and not cancel_requested and not has_fills:
            return BrokerStatus.REJECTED, reason or f"IB status {ib_status}"
        return BrokerStatus.CANCELLED, reason or (
            "cancelled on request" if cancel_requested else f"IB status {ib_status}")
    return BrokerStatus.WORKING, None  # a status IB added later: still live as far as we know


def effective_status(trade: Trade) -> str:
    """The trade's status, ignoring what ib_async wrote on warnings (ValidationError, the order
    is still live) and on informational messages (ib_async marks an order Cancelled on any
    error it does not know as a warning)."""
    for entry in reversed(trade.log):
        if entry.status == "ValidationError" or (entry.errorCode
                                                 and is_informational(entry.errorCode)):
            continue
        return entry.status
    return trade.orderStatus.status


def latest_corrections(fills) -> list[IbFill]:
    """One fill per execution: IB corrects an execution by re-sending it with an execId that
    differs only after the last period; the highest one stands."""
    latest: dict[str, IbFill] = {}
    for fill in fills:
        exec_id = fill.execution.execId
        base = exec_id.rsplit(".", 1)[0]
        if base not in latest or exec_id > latest[base].execution.execId:
            latest[base] = fill
    return sorted(latest.values(), key=lambda fill: (fill_time(fill), fill.execution.execId))


def to_fill(fill: IbFill) -> Fill:
    report = fill.commissionReport
    commission = report.commission if report.execId and is_set(report.commission) else 0.0
    # A correction re-sends an execution under a new last segment ("….01" -> "….02"): keep
    # the base as our exec id so a correction can never count as a second fill.
    return Fill(exec_id=base_exec_id(fill.execution.execId),
                quantity=float(fill.execution.shares),
                price=float(fill.execution.price), at=fill_time(fill), commission=commission)


def base_exec_id(exec_id: str) -> str:
    head, dot, tail = exec_id.rpartition(".")
    return head if dot and tail.isdigit() and head.count(".") >= 1 else exec_id


def fill_time(fill: IbFill) -> datetime:
    at = fill.execution.time if fill.execution.time.year > 1970 else fill.time
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def fills_complete(trade: Trade, fills: tuple[Fill, ...]) -> bool:
    filled = sum(fill.quantity for fill in fills)
    expected = float(trade.orderStatus.filled)
    if expected <= 0 and is_set(trade.order.filledQuantity):
        expected = float(trade.order.filledQuantity)
    if expected <= 0:
        expected = float(trade.order.totalQuantity)
    return filled > 0 and filled >= expected - 1e-9 * max(1.0, expected)


def order_quantity(trade: Trade, placed: Placed | None, fills: tuple[Fill, ...]) -> float:
    if placed is not None:
        return placed.quantity
    total = float(trade.order.totalQuantity or 0)
    return total if total > 0 else sum(fill.quantity for fill in fills)


def extra_facts(trade: Trade, fills: tuple[Fill, ...]) -> dict:
    extra = {"ib_status": trade.orderStatus.status, "perm_id": perm_id(trade),
             "con_id": trade.contract.conId,
             "commission": round(sum((fill.commission for fill in fills), 0.0), 6)}
    if is_set(trade.order.cashQty):
        extra["cash_qty"] = float(trade.order.cashQty)
    return extra


def perm_id(trade: Trade) -> int:
    return trade.order.permId or trade.orderStatus.permId


def as_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
