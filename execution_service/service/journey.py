"""One signal's journey, read back from the audit store (SPEC §4, §5, §6): every event of
its record, each confirmation (published or not), the positions it moved, its signal_store
document. `show SIGNAL_ID` prints it."""

from __future__ import annotations

from datetime import datetime

from execution_service.domain.records import iso, published_confirmations

_MOVED_TO_TOP = ("events", "confirmations")
_EVENT_KEYS = ("status", "event", "at")


def signal_journey(store, signal_id: str) -> dict | None:
    """Everything the store knows about this signal, or None when it knows nothing."""
    record = store.get_record(signal_id)
    signal = store.get_signal(signal_id)
    if record is None and signal is None:
        return None
    record = record or {}
    return {
        "signal_id": signal_id,
        "record": {k: v for k, v in record.items() if k not in _MOVED_TO_TOP} or None,
        "events": list(record.get("events", [])),
        "confirmations": published_confirmations(record),
        "positions": _positions(store, signal_id, record),
        "signal": signal,
    }


def _positions(store, signal_id: str, record: dict) -> list[dict]:
    """Positions naming the record's order, or moved by one of its fills: the fill's key is
    on the position until the fill ledger names the position (service/positions.py)."""
    fill_keys = [f"{signal_id}:{fill['exec_id']}" for fill in record.get("fills", [])]
    ledger = store.fill_entries(fill_keys) if fill_keys else []
    moved: dict[str, set[str]] = {}
    for entry in ledger:
        if entry.get("position_id"):
            moved.setdefault(entry["position_id"], set()).add(entry["_id"])
    prefix = f"{signal_id}:"
    return [{**{k: v for k, v in doc.items() if k != "fill_keys"},
             "signal_fill_keys": sorted(moved.get(doc["_id"], set()).union(
                 k for k in doc.get("fill_keys", []) if k.startswith(prefix)))}
            for doc in store.positions_touched(fill_keys, record.get("order_id"), list(moved))]


def render_journey(journey: dict) -> str:
    """For humans: a summary, then one line per event, confirmation and position."""
    record = journey["record"] or {}
    lines = [_headline(journey["signal_id"], record)]
    if not record:
        lines.append("No execution record: the service has not received this signal.")
    lines += [f"Reason: {why}" for why in (record.get("reject_reason"),
                                           record.get("cancel_reason")) if why]
    lines.append("Events:")
    lines += [f"  {_event_line(event)}" for event in journey["events"]] or ["  -"]
    lines.append(f"Confirmations (published through #{record.get('published_sequence', 0)}):")
    lines += [f"  #{c['sequence']} {c['status']:<16} {c.get('event') or '':<9} "
              f"{c.get('at') or '':<27} "
              f"{'published' if c['published'] else 'NOT PUBLISHED'}"
              for c in journey["confirmations"]] or ["  -"]
    lines.append("Positions:")
    lines += [f"  {p['_id']} {p['status']} {p['side']} {_num(p['quantity'])} {p['symbol']} "
              f"@ {_num(p['avg_entry_price'])} pnl {_num(p.get('realized_pnl'))} "
              f"(opened {iso(p.get('opened_at'))})" for p in journey["positions"]] or ["  -"]
    signal = journey["signal"]
    lines.append("Signal store: " + (
        f"execution_status {signal.get('execution_status') or '-'}, order "
        f"{signal.get('order_id') or '-'}, filled_at {iso(signal.get('filled_at')) or '-'}"
        if signal else "-"))
    return "\n".join(lines)


def _headline(signal_id: str, record: dict) -> str:
    if not record:
        return f"Signal {signal_id}"
    order = " ".join(str(part) for part in (record.get("side"), _num(record.get("quantity")),
                                            record.get("symbol"), record.get("order_type"))
                     if part)
    return (f"Signal {signal_id}: {record.get('status')}  {order}  "
            f"filled {_num(record.get('filled_quantity'))} @ {_num(record.get('avg_fill_price'))}"
            f"  order {record.get('order_id') or '-'}  broker {record.get('broker') or '-'}  "
            f"account {record.get('account_id') or '-'}  strategy "
            f"{record.get('strategy_name') or '-'}")


def _event_line(event: dict) -> str:
    detail = ", ".join(f"{key}={_value(value)}" for key, value in event.items()
                       if key not in _EVENT_KEYS and value is not None)
    return f"{iso(event.get('at'))}  {event.get('status', ''):<16} {event.get('event', ''):<9} " \
        f"{detail}".rstrip()


def _value(value) -> str:
    if isinstance(value, datetime):
        return iso(value) or ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else str(value)
