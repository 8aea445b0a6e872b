"""The plain-text Telegram message for each notice and alert (SPEC §7). Pure: no I/O."""

from __future__ import annotations

from execution_service.domain.notices import (
    AlertKind,
    CancelCause,
    NoticeKind,
    OrderNotice,
    ServiceAlert,
)
from execution_service.domain.text import single_line

MAX_MESSAGE_LENGTH = 4096  # Telegram's limit, in UTF-16 code units
TRUNCATION_MARK = "\n… (truncated)"

_ALERT_TITLES = {
    AlertKind.SERVICE_STARTED: "🟢 Execution Service Started",
    AlertKind.SERVICE_STOPPING: "🔴 Execution Service Stopping",
    AlertKind.BROKER_CONNECTION_LOST: "🔌 Broker Connection Lost",
    AlertKind.BROKER_CONNECTION_RESTORED: "🔗 Broker Connection Restored",
    AlertKind.OPERATOR: "🛑 Operator Action Needed",
}

_CANCEL_CAUSES = {
    CancelCause.TIMEOUT: "Timeout",
    CancelCause.BROKER: "Cancelled by broker",
    CancelCause.OPERATOR: "Cancelled by operator",
    CancelCause.UPSTREAM: "Cancelled by the strategy",
}


def compose_message(event: OrderNotice | ServiceAlert) -> str:
    """The message text for one event, at most Telegram's length, meant to be sent as plain
    text (no parse_mode), so `*`, `_` and `[` need no escaping."""
    if isinstance(event, ServiceAlert):
        return truncate(_alert(event))
    return truncate(_NOTICE_COMPOSERS[event.kind](event))


def truncate(text: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """`text` cut so that it fits `limit` UTF-16 code units, marked as truncated when cut."""
    if _utf16_units(text) <= limit:
        return text
    budget = limit - _utf16_units(TRUNCATION_MARK)
    kept, used = [], 0
    for char in text:
        used += _utf16_units(char)
        if used > budget:
            break
        kept.append(char)
    return "".join(kept) + TRUNCATION_MARK


def format_money(amount: float) -> str:
    """`1234.5` -> `$1,234.50`; `-1` -> `-$1.00`."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.2f}"


def format_quantity(quantity: float) -> str:
    """`100.0` -> `100`; `0.25` -> `0.25` (no float noise such as `0.30000000000000004`)."""
    text = f"{quantity:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def format_duration(seconds: float) -> str:
    """`2.0` -> `2 seconds`; `1` -> `1 second`; `0.43` -> `0.4 seconds`; `200` -> `3 minutes
    20 seconds`."""
    if seconds < 0.05:
        return "under 0.1 seconds"
    if seconds < 10:
        return _count(round(seconds, 1), "second")
    total = round(seconds)
    if total < 120:
        return _count(total, "second")
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    units = [(hours, "hour"), (minutes, "minute"), (secs, "second")]
    shown = [_count(value, name) for value, name in units if value][:2]
    return " ".join(shown)


def _count(value: float, unit: str) -> str:
    return f"{format_quantity(value)} {unit}{'' if value == 1 else 's'}"


def _filled(notice: OrderNotice) -> str:
    return _lines(
        _FILLED_TITLES.get(notice.role, "✅ Order Filled"),
        ("Signal", notice.signal_id),
        ("Strategy", notice.strategy_name),
        ("Order", _order(notice, _done_quantity(notice), notice.avg_fill_price)),
        ("Total", _total(notice)),
        ("Commission", _money_or_none(notice.commission)),
        ("Time", _duration_or_none(notice.seconds_to_fill)),
    )


def _partial_fill(notice: OrderNotice) -> str:
    return _lines(
        "⚠️ Partial Fill",
        ("Signal", notice.signal_id),
        ("Order", _order(notice)),
        ("Filled", _progress(notice)),
        ("Remaining", format_quantity(max(notice.quantity - notice.filled_quantity, 0.0))),
    )


def _rejected(notice: OrderNotice) -> str:
    return _lines(
        "❌ Order Rejected",
        ("Signal", notice.signal_id),
        ("Strategy", notice.strategy_name),
        ("Order", _order(notice)),
        ("Reason", notice.reason or "not given"),
        ("Account", _account(notice)),
    )


def _cancelled(notice: OrderNotice) -> str:
    emoji = "⏱️" if notice.cancel_cause == CancelCause.TIMEOUT else "🚫"
    return _lines(
        f"{emoji} Order Cancelled",
        ("Signal", notice.signal_id),
        ("Strategy", notice.strategy_name),
        ("Order", _order(notice)),
        ("Cause", _CANCEL_CAUSES.get(notice.cancel_cause)),
        ("Filled", _progress(notice)),
        ("Reason", notice.reason),
        ("Account", _account(notice)),
    )


def _modified(notice: OrderNotice) -> str:
    changes = ", ".join(f"{name} {_value(old)} → {_value(new)}"
                        for name, old, new in notice.changes)
    return _lines(
        "✏️ Order Modified",
        ("Signal", notice.signal_id),
        ("Strategy", notice.strategy_name),
        ("Order", _order(notice)),
        ("Changed", changes),
        ("Request", notice.request_id),
    )


def _refused(notice: OrderNotice) -> str:
    title = "Cancel" if notice.command == "CANCEL" else "Modify"
    return _lines(
        f"⛔ {title} Refused",
        ("Signal", notice.signal_id),
        ("Order", _order(notice)),
        ("Reason", notice.reason),
        ("Request", notice.request_id),
    )


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _late_fill(notice: OrderNotice) -> str:
    late = None
    if notice.last_fill_quantity is not None:
        late = _at(format_quantity(notice.last_fill_quantity), notice.last_fill_price)
    return _lines(
        "🚨 Fill After Cancel",
        ("Signal", notice.signal_id),
        ("Strategy", notice.strategy_name),
        ("Order", _order(notice)),
        ("Late fill", late),
        ("Filled", _progress(notice)),
        ("Account", _account(notice)),
        ("Action", "the order was cancelled but still filled; check the position"),
    )


def _alert(alert: ServiceAlert) -> str:
    title = _ALERT_TITLES.get(alert.kind, f"⚠️ {alert.kind}")
    # alert lines are the service's own; what each line quotes from a message is cleaned
    text = "\n".join(single_line(line) for line in alert.text.strip().split("\n"))
    return f"{title}\n\n{text}" if text else title


_FILLED_TITLES = {"STOP_LOSS": "🛑 Stop Loss Filled", "TAKE_PROFIT": "🎯 Take Profit Filled"}
_NOTICE_COMPOSERS = {
    NoticeKind.FILLED: _filled,
    NoticeKind.PARTIAL_FILL: _partial_fill,
    NoticeKind.REJECTED: _rejected,
    NoticeKind.CANCELLED: _cancelled,
    NoticeKind.LATE_FILL: _late_fill,
    NoticeKind.MODIFIED: _modified,
    NoticeKind.COMMAND_REFUSED: _refused,
}


def _lines(title: str, *fields: tuple[str, str | None]) -> str:
    # every value may quote a message: one line each, whatever it contains
    body = [f"{name}: {single_line(str(value))}" for name, value in fields
            if value not in (None, "")]
    return "\n".join([title, "", *body])


def _order(notice: OrderNotice, quantity: float | None = None, price: float | None = None) -> str:
    shown = format_quantity(notice.quantity if quantity is None else quantity)
    return _at(f"{notice.side.upper()} {shown} {notice.symbol}", price)


def _progress(notice: OrderNotice) -> str:
    done = f"{format_quantity(notice.filled_quantity)}/{format_quantity(notice.quantity)}"
    price = notice.avg_fill_price if notice.avg_fill_price is not None else notice.last_fill_price
    return _at(done, price if notice.filled_quantity > 0 else None)


def _at(text: str, price: float | None) -> str:
    return text if price is None else f"{text} @ {format_money(price)}"


def _done_quantity(notice: OrderNotice) -> float:
    return notice.filled_quantity if notice.filled_quantity > 0 else notice.quantity


def _total(notice: OrderNotice) -> str | None:
    if notice.avg_fill_price is None:
        return None
    return format_money(_done_quantity(notice) * notice.avg_fill_price)


def _account(notice: OrderNotice) -> str:
    return notice.account_name or notice.account_id


def _money_or_none(amount: float | None) -> str | None:
    return None if amount is None else format_money(amount)


def _duration_or_none(seconds: float | None) -> str | None:
    return None if seconds is None else format_duration(seconds)


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
