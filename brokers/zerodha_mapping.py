"""Pure translation between our order types and Kite Connect v3 (no I/O, no SDK import).

`order_params` turns an OrderRequest into the exact form fields Kite's `POST /orders/regular`
takes, or raises OrderRejected naming the field Kite cannot honour (nothing is sent then).
`to_broker_order` turns an order-book entry (last `GET /orders/{id}` entry or a `GET /orders`
row) plus its trades into a BrokerOrder.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

from brokers.base import BrokerOrder, BrokerStatus, Fill, OrderRequest
from brokers.zerodha_gtt import GTT_PRODUCTS
from execution_service.errors import OrderRejected

VARIETY = "regular"
EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX")
DERIVATIVES = ("OPTION", "FUTURE")
ASSET_CLASSES = ("EQUITY", *DERIVATIVES)
PRODUCTS = ("MIS", "NRML", "CNC")
VALIDITIES = ("DAY", "IOC")
SIDES = ("BUY", "SELL")
ORDER_TYPES = {"MARKET": "MARKET", "LIMIT": "LIMIT", "STOP": "SL-M", "STOP_LIMIT": "SL"}

TAG_MAX = 20
_TAG_PASSTHROUGH = re.compile(rf"[A-Za-z0-9]{{1,{TAG_MAX - 1}}}")
_TAG_PREFIX_MAX = 8

#: Kite reports naive timestamps in Indian Standard Time (UTC+05:30, no daylight saving).
IST = timezone(timedelta(hours=5, minutes=30), "IST")
_EPOCH = datetime.fromtimestamp(0, UTC)

_TERMINAL = {
    "COMPLETE": BrokerStatus.FILLED,
    "REJECTED": BrokerStatus.REJECTED,
    "CANCELLED": BrokerStatus.CANCELLED,
}
FINAL_STATUSES = frozenset(_TERMINAL)
#: Statuses of an order that is live at the exchange (or being modified/cancelled there).
_LIVE = frozenset({"OPEN", "TRIGGER PENDING", "MODIFY PENDING", "MODIFY VALIDATION PENDING",
                   "MODIFIED", "CANCEL PENDING"})


def kite_tag(signal_id: str) -> str:
    """A stable Kite tag (at most 20 alphanumeric characters) for a signal id.

    A signal id of up to 19 letters and digits is its own tag. Any other id becomes a readable
    prefix of its letters and digits followed by a sha256 digest, exactly 20 characters long,
    so a derived tag can never equal a pass-through one. hashlib, not hash(): the tag must be
    the same in every process, or a restarted daemon could not find its orders again.
    """
    if _TAG_PASSTHROUGH.fullmatch(signal_id):
        return signal_id
    prefix = re.sub(r"[^A-Za-z0-9]", "", signal_id)[:_TAG_PREFIX_MAX]
    digest = hashlib.sha256(signal_id.encode("utf-8")).hexdigest()
    return prefix + digest[: TAG_MAX - len(prefix)]


def order_params(request: OrderRequest, tag: str) -> dict:
    """The keyword arguments for `KiteConnect.place_order`, or OrderRejected."""
    asset_class = _asset_class(request)
    exchange, tradingsymbol = _instrument(request, asset_class)
    params = {
        "variety": VARIETY,
        "exchange": exchange,
        "tradingsymbol": tradingsymbol,
        "transaction_type": _side(request),
        "quantity": _whole_quantity(request.quantity),
        "product": (product := _product(request, asset_class)),
        "validity": _validity(request, product),
        "tag": tag,
    }
    params.update(_order_type_fields(request))
    return params


def gtt_exit_target(request: OrderRequest) -> tuple[str, str, str, int] | None:
    """(exchange, tradingsymbol, product, quantity) of a GTC exit on CNC/NRML, which goes to
    Kite as a GTT (`brokers.zerodha_exits`); None for any other order. Or OrderRejected.
    An exit is told by its one-cancels-other group: a GTC entry is refused as before."""
    if (request.time_in_force or "").upper() != "GTC" or request.oca_group is None:
        return None
    asset_class = _asset_class(request)
    product = _product(request, asset_class)
    if product not in GTT_PRODUCTS:
        return None
    _side(request)
    exchange, tradingsymbol = _instrument(request, asset_class)
    return exchange, tradingsymbol, product, _whole_quantity(request.quantity)


def modify_params(request: OrderRequest) -> dict:
    """The keyword arguments for `KiteConnect.modify_order`: the order as modified."""
    return {"quantity": _whole_quantity(request.quantity), **_order_type_fields(request)}


def _asset_class(request: OrderRequest) -> str:
    asset_class = (request.asset_class or "EQUITY").upper()
    if asset_class not in ASSET_CLASSES:
        raise OrderRejected(f"asset_class {asset_class} is not supported by Zerodha "
                            "(EQUITY, OPTION or FUTURE)")
    if request.currency and request.currency.upper() != "INR":
        raise OrderRejected(f"currency {request.currency} is not supported by Zerodha (INR)")
    return asset_class


def _instrument(request: OrderRequest, asset_class: str) -> tuple[str, str]:
    """`NSE:INFY` names both; otherwise the request's exchange, else NSE (NFO for F&O)."""
    symbol = request.symbol.strip()
    exchange = request.exchange or ("NFO" if asset_class in DERIVATIVES else "NSE")
    if ":" in symbol:
        exchange, symbol = symbol.split(":", 1)
    exchange = exchange.strip().upper()
    if exchange not in EXCHANGES:
        raise OrderRejected(f"exchange {exchange} is not a Zerodha exchange "
                            f"({', '.join(EXCHANGES)})")
    if not symbol.strip():
        raise OrderRejected(f"symbol {request.symbol!r} has no tradingsymbol")
    return exchange, symbol.strip()


def _side(request: OrderRequest) -> str:
    side = request.side.upper()
    if side not in SIDES:
        raise OrderRejected(f"side {request.side} is not supported by Zerodha (BUY or SELL)")
    return side


def _whole_quantity(quantity: float) -> int:
    if not (quantity > 0 and float(quantity).is_integer()):
        raise OrderRejected(f"quantity {quantity} is not supported by Zerodha "
                            "(a whole number of units)")
    return int(quantity)


def _product(request: OrderRequest, asset_class: str) -> str:
    derivative = asset_class in DERIVATIVES
    product = (request.product or ("NRML" if derivative else "CNC")).upper()
    if product not in PRODUCTS:
        raise OrderRejected(f"product {product} is not supported by Zerodha (MIS, NRML or CNC)")
    if derivative and product == "CNC":
        raise OrderRejected(f"product CNC is for equity delivery: a Zerodha {asset_class} order "
                            "needs NRML or MIS")
    return product


def _validity(request: OrderRequest, product: str) -> str:
    """Kite orders live a day at most. A GTC order on MIS (a protective exit, SPEC §12) goes
    as DAY: Kite squares an intraday position off at the close, so the exit outlives nothing.
    CNC/NRML exits go as GTTs (`gtt_exit_target`), never through here."""
    validity = (request.time_in_force or "DAY").upper()
    if validity == "GTC" and product == "MIS":
        return "DAY"
    if validity not in VALIDITIES:
        raise OrderRejected(f"time_in_force {validity} is not supported by Zerodha for "
                            f"{product} (DAY or IOC; GTC only on MIS, sent as DAY)")
    return validity


def _order_type_fields(request: OrderRequest) -> dict:
    order_type = request.order_type.upper()
    if order_type not in ORDER_TYPES:
        raise OrderRejected(f"order_type {request.order_type} is not supported by Zerodha "
                            f"({', '.join(ORDER_TYPES)})")
    fields: dict = {"order_type": ORDER_TYPES[order_type]}
    if order_type in ("LIMIT", "STOP_LIMIT"):
        fields["price"] = _required_price(request.limit_price, "limit_price", order_type)
    if order_type in ("STOP", "STOP_LIMIT"):
        fields["trigger_price"] = _required_price(request.stop_price, "stop_price", order_type)
    return fields


def _required_price(value: float | None, name: str, order_type: str) -> float:
    if value is None or not value > 0:
        raise OrderRejected(f"{name} is required for a {order_type} order (a number > 0)")
    return value


# --- order book -> BrokerOrder -------------------------------------------------------------


def to_broker_order(entry: dict, trades: list[dict], signal_id: str | None = None
                    ) -> BrokerOrder:
    """One Kite order-book entry and the trades Kite lists for it, as a BrokerOrder.

    Fills come from the trades (see `fills_from_trades`). Kite can show COMPLETE or CANCELLED
    a moment before its trade book lists every trade; until the trades cover
    `filled_quantity` the order is reported WORKING (never terminal with fills missing), so
    the tracker polls again instead of closing the order on an incomplete set of fills.
    """
    order_id = str(entry["order_id"])
    kite_status = str(entry.get("status") or "").upper()
    fills = fills_from_trades(order_id, trades)
    filled = _number(entry.get("filled_quantity"))
    awaiting_trades = sum(fill.quantity for fill in fills) < filled
    status = _status(kite_status, filled, awaiting_trades)
    return BrokerOrder(
        order_id=order_id,
        status=status,
        quantity=_number(entry.get("quantity")),
        signal_id=signal_id,
        fills=fills,
        reason=_reason(entry, status),
        extra=_extra(entry, kite_status, awaiting_trades),
    )


def fills_from_trades(order_id: str, trades: list[dict]) -> tuple[Fill, ...]:
    """Kite's trades for this order, one Fill each, oldest first.

    Why trades rather than fills synthesised from `filled_quantity` steps in the history: a
    trade is Kite's own record of one execution, with its own `trade_id` and price, so the
    exec id (`{order_id}/{trade_id}`) is the same on every poll, in every process, and a
    partial fill's price is the trade's price, not one derived from two averages.
    """
    fills: dict[str, Fill] = {}
    for trade in trades:
        if str(trade.get("order_id", order_id)) != order_id or trade.get("trade_id") is None:
            continue
        exec_id = f"{order_id}/{trade['trade_id']}"
        fills[exec_id] = Fill(
            exec_id=exec_id,
            quantity=_number(trade.get("quantity")),
            price=_number(trade.get("average_price")),
            at=kite_time(trade.get("fill_timestamp") or trade.get("exchange_timestamp"))
            or datetime.now(UTC),
        )
    return tuple(sorted(fills.values(), key=lambda fill: (fill.at, fill.exec_id)))


def _status(kite_status: str, filled: float, awaiting_trades: bool) -> BrokerStatus:
    terminal = _TERMINAL.get(kite_status)
    if terminal == BrokerStatus.REJECTED or (terminal is not None and not awaiting_trades):
        return terminal
    if terminal is not None or kite_status in _LIVE or filled > 0:
        return BrokerStatus.WORKING
    # PUT ORDER REQ RECEIVED, VALIDATION PENDING, OPEN PENDING, AMO REQ RECEIVED, and any
    # status Kite adds later: received, not yet at the exchange, never terminal.
    return BrokerStatus.PENDING


def _reason(entry: dict, status: BrokerStatus) -> str | None:
    message = entry.get("status_message") or entry.get("status_message_raw")
    if status == BrokerStatus.REJECTED:
        return str(message or "rejected by Zerodha")
    if status == BrokerStatus.CANCELLED:
        return str(message or "cancelled at Zerodha")
    return None


def _extra(entry: dict, kite_status: str, awaiting_trades: bool) -> dict:
    extra = {
        "kite_status": kite_status,
        "tag": entry.get("tag"),
        "exchange": entry.get("exchange"),
        "tradingsymbol": entry.get("tradingsymbol"),
        "product": entry.get("product"),
        "exchange_order_id": entry.get("exchange_order_id"),
        "filled_quantity": _number(entry.get("filled_quantity")),
        "average_price": _number(entry.get("average_price")),
    }
    if awaiting_trades:
        extra["awaiting_trades"] = True
    return extra


def entry_has_tag(entry: dict, tag: str) -> bool:
    """Kite echoes the order's tag as `tag` (and, on newer accounts, in a `tags` list)."""
    return entry.get("tag") == tag or tag in (entry.get("tags") or ())


def newest(entries: list[dict]) -> dict | None:
    """The most recently placed entry (by order_timestamp; later in the list breaks ties)."""
    if not entries:
        return None
    ranked = enumerate(entries)
    return max(ranked, key=lambda pair: (kite_time(pair[1].get("order_timestamp")) or _EPOCH,
                                         pair[0]))[1]


def kite_time(value) -> datetime | None:
    """A Kite timestamp (naive IST datetime or 'YYYY-MM-DD HH:MM:SS') as an aware UTC datetime,
    or None when it is missing or unreadable."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=IST)
    return value.astimezone(UTC)


def _number(value) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0
