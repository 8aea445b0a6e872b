"""One-line texts of records and positions, shared by the CLI and the Telegram commands."""

from __future__ import annotations

from execution_service.domain.records import iso
from execution_service.domain.text import single_line


def num(value) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, (int, float)) else single_line(str(value))


def order_line(doc: dict) -> str:
    """A rejected record keeps what the message said: shown on one line, escaped."""
    return single_line(
        f"{iso(doc.get('received_at'))}  {doc['signal_id']:<32} {doc['status']:<16} "
        f"{doc.get('side') or '':<4} {num(doc.get('filled_quantity'))}/"
        f"{num(doc.get('quantity'))} {doc.get('symbol') or ''} "
        f"@ {num(doc.get('avg_fill_price'))}  {doc.get('reject_reason') or ''}").rstrip()


def position_line(row: dict) -> str:
    return (f"{row['account_id']:<16} {row['strategy_name']:<24} {row['symbol']:<10} "
            f"{row['side']:<5} {num(row['quantity'])} @ {num(row['avg_entry_price'])} "
            f"pnl {row['realized_pnl']:.2f} {row['status']}")


def confirmation_line(row: dict) -> str:
    filled = row.get("filled_quantity")
    price = row.get("avg_fill_price")
    text = (f"{row.get('at')}  {row['signal_id']} #{row.get('sequence')} {row.get('status')}"
            f" ({row.get('event')}) {row.get('side') or ''} {num(filled)}/"
            f"{num(row.get('quantity'))} {row.get('symbol') or ''}")
    if price is not None:
        text += f" @ {num(price)}"
    if row.get("reason"):
        text += f"  {row['reason']}"
    return single_line(text)


NO_POSITIONS = "no open positions"
