"""How an OrderRequest becomes an IB contract and order (ib_async's own classes).

Pure translation, nothing here talks to IB. What IB would refuse anyway (a crypto STOP order, a
crypto market buy sized in coins) is refused here with a reason, before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ib_async import (
    Contract,
    Crypto,
    Forex,
    Future,
    LimitOrder,
    MarketOrder,
    Option,
    Order,
    Stock,
    StopLimitOrder,
    StopOrder,
)
from ib_async.util import UNSET_DOUBLE

from brokers.base import OrderRequest
from execution_service.errors import OrderRejected

TIMES_IN_FORCE = ("DAY", "GTC", "IOC")
SIDES = ("BUY", "SELL")
DEFAULT_EXCHANGE = "SMART"
DEFAULT_CURRENCY = "USD"
FOREX_EXCHANGE = "IDEALPRO"
CRYPTO_EXCHANGE = "PAXOS"
# IB crypto (PAXOS): market orders must be IOC and market buys are sized in cash (cashQty,
# error 10289 otherwise); limit orders are sized in coins; no STOP orders; no DAY orders.
CRYPTO_TIMES_IN_FORCE = ("IOC", "GTC")
CRYPTO_ORDER_TYPES = ("MARKET", "LIMIT", "STOP_LIMIT")

_OCC_SYMBOL = re.compile(r"^([A-Z0-9]{1,6})\s*(\d{6}[CP]\d{8})$")
_PAIR_SEPARATORS = re.compile(r"[/.\-_ ]")


# contracts ------------------------------------------------------------------------------------


def build_contract(request: OrderRequest) -> Contract:
    """The IB contract for the request's asset class (not yet qualified)."""
    builder = _CONTRACTS.get(request.asset_class.upper())
    if builder is None:
        known = ", ".join(_CONTRACTS)
        raise OrderRejected(f"IBKR does not trade asset class {request.asset_class!r} here "
                            f"(use one of {known})")
    return builder(request)


def _stock(request: OrderRequest) -> Contract:
    return Stock(request.symbol.strip(), request.exchange or DEFAULT_EXCHANGE,
                 request.currency or DEFAULT_CURRENCY)


def _option(request: OrderRequest) -> Contract:
    return Option(localSymbol=occ_local_symbol(request.symbol),
                  exchange=request.exchange or DEFAULT_EXCHANGE,
                  currency=request.currency or DEFAULT_CURRENCY)


def _future(request: OrderRequest) -> Contract:
    # No default exchange: SMART does not route futures; IB finds the listing when unique.
    return Future(localSymbol=request.symbol.strip().upper(), exchange=request.exchange or "",
                  currency=request.currency or "")


def _forex(request: OrderRequest) -> Contract:
    return Forex(forex_pair(request.symbol), exchange=request.exchange or FOREX_EXCHANGE)


def _crypto(request: OrderRequest) -> Contract:
    base, quote = crypto_pair(request.symbol, request.currency)
    return Crypto(base, request.exchange or CRYPTO_EXCHANGE, quote)


_CONTRACTS: dict[str, Callable[[OrderRequest], Contract]] = {
    "EQUITY": _stock, "OPTION": _option, "FUTURE": _future, "FOREX": _forex, "CRYPTO": _crypto,
}


def occ_local_symbol(symbol: str) -> str:
    """IB's local symbol for an OCC option symbol: the root padded to six characters
    ('SPY241129C00235000' -> 'SPY   241129C00235000'). Anything else is passed as given."""
    text = symbol.strip().upper()
    match = _OCC_SYMBOL.match(text)
    return f"{match[1]:<6}{match[2]}" if match else text


def forex_pair(symbol: str) -> str:
    pair = _PAIR_SEPARATORS.sub("", symbol.strip().upper())
    if len(pair) != 6 or not pair.isalpha():
        raise OrderRejected(f"IBKR forex symbol must be a currency pair like EURUSD, "
                            f"got {symbol!r}")
    return pair


def crypto_pair(symbol: str, currency: str | None) -> tuple[str, str]:
    """('BTC', 'USD') from 'BTC' (+ currency) or 'BTC/USD'."""
    parts = [part for part in _PAIR_SEPARATORS.split(symbol.strip().upper()) if part]
    if len(parts) == 2:
        return parts[0], parts[1]
    return parts[0] if parts else symbol, (currency or DEFAULT_CURRENCY).upper()


def describe(contract: Contract) -> str:
    """'STK SPY SMART USD' for messages."""
    parts = (contract.secType, contract.localSymbol or contract.symbol, contract.exchange,
             contract.currency)
    return " ".join(part.strip() for part in parts if part and part.strip())


def contract_key(contract: Contract) -> tuple:
    return (contract.secType, contract.symbol, contract.localSymbol, contract.exchange,
            contract.currency)


# orders ---------------------------------------------------------------------------------------


#: IB's ocaType 2: when one order of the group fills (even partly), IB reduces the others by
#: as much, with overfill protection: the §12 one-cancels-other rule, kept at the venue.
OCA_REDUCE_WITH_BLOCK = 2


def build_order(request: OrderRequest, order_ref: str) -> Order:
    """The IB order: type and prices, tif, orderRef (the signal tag) and account."""
    side, tif = request.side.upper(), request.time_in_force.upper()
    if side not in SIDES:
        raise OrderRejected(f"IBKR order side must be BUY or SELL, got {request.side!r}")
    if tif not in TIMES_IN_FORCE:
        raise OrderRejected(f"IBKR time_in_force must be one of {', '.join(TIMES_IN_FORCE)}, "
                            f"got {request.time_in_force!r}")
    if request.asset_class.upper() == "CRYPTO":
        check_crypto(request)
    builder = _ORDERS.get(request.order_type.upper())
    if builder is None:
        raise OrderRejected(f"IBKR adapter does not place {request.order_type!r} orders")
    order = builder(request, side)
    order.tif = tif
    order.orderRef = order_ref
    if request.oca_group:
        order.ocaGroup, order.ocaType = request.oca_group, OCA_REDUCE_WITH_BLOCK
    if request.broker_account:
        order.account = request.broker_account
    return order


def link_bracket(parent: Order, children: list[Order], next_id: Callable[[], int]
                 ) -> list[Order]:
    """Orders to send as one native bracket, as ib_async's `IB.bracketOrder` builds them: ids
    in sending order, each child's `parentId` the parent's id, `transmit` only on the last, so
    TWS holds the others until the last arrives and releases them together."""
    parent.orderId, parent.transmit = next_id(), False
    for child in children:
        child.orderId, child.parentId, child.transmit = next_id(), parent.orderId, False
    (children or [parent])[-1].transmit = True
    return [parent, *children]


def check_crypto(request: OrderRequest) -> None:
    """Refuse, before sending, the crypto orders IB does not take."""
    kind, tif = request.order_type.upper(), request.time_in_force.upper()
    if kind not in CRYPTO_ORDER_TYPES:
        raise OrderRejected(f"IBKR does not take {kind} orders for crypto ({CRYPTO_EXCHANGE}): "
                            f"use {', '.join(CRYPTO_ORDER_TYPES)}")
    if tif not in CRYPTO_TIMES_IN_FORCE:
        raise OrderRejected(f"IBKR crypto orders take time_in_force IOC or GTC, not {tif}")
    if kind == "MARKET" and tif != "IOC":
        raise OrderRejected(f"IBKR crypto MARKET orders must be IOC, not {tif}")


def cash_quantity(request: OrderRequest) -> float:
    """IB sizes crypto market buys in cash: quantity (coins) x reference price, in cents."""
    if request.reference_price is None or request.reference_price <= 0:
        raise OrderRejected(f"IBKR sizes crypto MARKET buys in cash (cashQty): reference_price "
                            f"is needed to turn {request.quantity:g} {request.symbol} into cash")
    return round(request.quantity * request.reference_price, 2)


def _market(request: OrderRequest, side: str) -> Order:
    if request.asset_class.upper() == "CRYPTO" and side == "BUY":
        return MarketOrder(side, 0, cashQty=cash_quantity(request))
    return MarketOrder(side, _quantity(request.quantity))


def _limit(request: OrderRequest, side: str) -> Order:
    return LimitOrder(side, _quantity(request.quantity), _price(request, "limit_price"))


def _stop(request: OrderRequest, side: str) -> Order:
    return StopOrder(side, _quantity(request.quantity), _price(request, "stop_price"))


def _stop_limit(request: OrderRequest, side: str) -> Order:
    return StopLimitOrder(side, _quantity(request.quantity), _price(request, "limit_price"),
                          _price(request, "stop_price"))


_ORDERS: dict[str, Callable[[OrderRequest, str], Order]] = {
    "MARKET": _market, "LIMIT": _limit, "STOP": _stop, "STOP_LIMIT": _stop_limit,
}


def _price(request: OrderRequest, field: str) -> float:
    value = getattr(request, field)
    if value is None or value <= 0:
        raise OrderRejected(f"IBKR {request.order_type} order needs {field} > 0")
    return float(value)


def _quantity(quantity: float) -> float | int:
    return int(quantity) if float(quantity).is_integer() else float(quantity)


def is_set(value) -> bool:
    """ib_async marks an unset double with UNSET_DOUBLE."""
    return value is not None and value != UNSET_DOUBLE
