"""Pre-trade risk controls (issue 9): pure functions over the signal, the account and numbers
the service gathered. No I/O here; `execution_service.service.risk.RiskGate` does the reads.

Controls run in this order and the first that fails is the answer:

1. ``halt``                   an operator halt (global, or on this account) is active
2. ``max_order_quantity``     this order's quantity
3. ``max_order_notional``     quantity x price (limit, else stop, else reference price)
4. ``max_position_notional``  |open net position + this order| x price, per account and symbol
5. ``max_orders_per_minute``  orders the account placed in the last 60 s (sliding)
6. ``price_collar``           limit/stop price within PRICE_COLLAR_PCT of reference_price

Limits live on the account document under those names; an absent (None) limit is not
checked, and a value exactly at a limit passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from execution_service.domain.signals import Signal

HALT = "halt"
MAX_ORDER_QUANTITY = "max_order_quantity"
MAX_ORDER_NOTIONAL = "max_order_notional"
MAX_POSITION_NOTIONAL = "max_position_notional"
MAX_ORDERS_PER_MINUTE = "max_orders_per_minute"
PRICE_COLLAR = "price_collar"
LIMIT_FIELDS = (MAX_ORDER_QUANTITY, MAX_ORDER_NOTIONAL, MAX_POSITION_NOTIONAL,
                MAX_ORDERS_PER_MINUTE)
WHOLE_NUMBER_LIMITS = frozenset({MAX_ORDER_QUANTITY, MAX_ORDERS_PER_MINUTE})
DEFAULT_COLLAR_PCT = 10.0
_REL_TOL = 1e-9  # float noise (3 x 0.1) must not turn "exactly at the limit" into a breach


@dataclass(frozen=True)
class RiskBreach:
    """The first control an order failed, and a reason naming the limit and the value."""

    control: str
    reason: str


@dataclass(frozen=True)
class Exposure:
    """The net open position of one account in one symbol, across all its strategies."""

    net_quantity: float = 0.0  # signed: LONG positive, SHORT negative
    avg_price: float | None = None  # quantity-weighted average entry price, for display


@dataclass(frozen=True)
class RiskSettings:
    collar_pct: float | None = DEFAULT_COLLAR_PCT  # None: no price collar


FLAT = Exposure()
DEFAULT_SETTINGS = RiskSettings()


def net_exposure(positions: Iterable[dict]) -> Exposure:
    """Sum the OPEN position documents of one (account, symbol), whatever their strategy."""
    net, weight, cost = 0.0, 0.0, 0.0
    for doc in positions:
        quantity = float(doc.get("quantity") or 0.0)
        net += -quantity if doc.get("side") == "SHORT" else quantity
        if doc.get("avg_entry_price") is not None:
            weight += quantity
            cost += quantity * float(doc["avg_entry_price"])
    return Exposure(net, cost / weight if weight else None)


def signed_quantity(signal: Signal) -> float:
    return signal.quantity if signal.side == "BUY" else -signal.quantity


def first_breach(signal: Signal, account: dict, *, exposure: Exposure = FLAT,
                 orders_last_minute: int = 0, halt: dict | None = None,
                 settings: RiskSettings = DEFAULT_SETTINGS) -> RiskBreach | None:
    """The first failing control for this order on this account, or None when it may go.

    `exposure` is the account's open position in the signal's symbol, summed over every
    strategy: max_position_notional is a limit per account and symbol. `orders_last_minute`
    counts the account's orders in the 60 s before this one (this one excluded). `halt` is the
    active halt document that applies (global or this account's), if any.
    """
    if halt is not None:
        return RiskBreach(HALT, halt_reason(halt))
    checks = (_order_quantity, _order_notional, _position_notional, _orders_per_minute)
    for check in checks:
        breach = check(signal, account, exposure, orders_last_minute)
        if breach is not None:
            return breach
    return collar_breach(signal, settings.collar_pct)


def halt_reason(halt: dict) -> str:
    text = f"trading halted: {halt.get('reason') or 'no reason given'}"
    account_id = halt.get("account_id")
    return text if account_id is None else f"{text} (halt on account {account_id})"


def _limit(account: dict, name: str) -> tuple[float | None, RiskBreach | None]:
    """The account's limit, or a breach when the stored value is unusable (fail closed)."""
    value = account.get(name)
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0:
        return None, RiskBreach(name, f"account {account.get('_id')} has an unusable {name} "
                                      f"{value!r} (fix it with `accounts update`)")
    return float(value), None


def _above(value: float, limit: float) -> bool:
    return value > limit and not math.isclose(value, limit, rel_tol=_REL_TOL)


def _order_quantity(signal, account, _exposure, _recent) -> RiskBreach | None:
    limit, unusable = _limit(account, MAX_ORDER_QUANTITY)
    if unusable or limit is None:
        return unusable
    if _above(signal.quantity, limit):
        return RiskBreach(MAX_ORDER_QUANTITY, f"order quantity {signal.quantity:g} exceeds "
                                              f"{MAX_ORDER_QUANTITY} {limit:g}")
    return None


def _no_price(name: str) -> RiskBreach:
    return RiskBreach(name, f"cannot check {name} without a price; send limit_price, "
                            "stop_price or reference_price")


def _priced_limit(signal, account, name: str) -> tuple[float | None, float | None,
                                                       RiskBreach | None]:
    """(limit, price, breach): a notional limit needs a price to be checked at all."""
    limit, unusable = _limit(account, name)
    if unusable or limit is None:
        return None, None, unusable
    price = signal.entry_price
    if price is None:
        return None, None, _no_price(name)
    return limit, price, None


def _order_notional(signal, account, _exposure, _recent) -> RiskBreach | None:
    limit, price, breach = _priced_limit(signal, account, MAX_ORDER_NOTIONAL)
    if limit is None:
        return breach
    notional = signal.quantity * price
    if _above(notional, limit):
        return RiskBreach(MAX_ORDER_NOTIONAL, f"order notional {notional:.2f} exceeds "
                                              f"{MAX_ORDER_NOTIONAL} {limit:.2f}")
    return None


def _position_notional(signal, account, exposure, _recent) -> RiskBreach | None:
    limit, price, breach = _priced_limit(signal, account, MAX_POSITION_NOTIONAL)
    if limit is None:
        return breach
    after = abs(exposure.net_quantity + signed_quantity(signal))
    if after <= abs(exposure.net_quantity):
        return None  # reduces (or keeps) the position: never block the way out
    notional = after * price
    if _above(notional, limit):
        return RiskBreach(MAX_POSITION_NOTIONAL, f"position notional {notional:.2f} would "
                                                 f"exceed {MAX_POSITION_NOTIONAL} {limit:.2f}")
    return None


def _orders_per_minute(_signal, account, _exposure, recent: int) -> RiskBreach | None:
    limit, unusable = _limit(account, MAX_ORDERS_PER_MINUTE)
    if unusable or limit is None:
        return unusable
    if recent >= limit:  # `recent` excludes this order: at the limit already, this one is over
        return RiskBreach(MAX_ORDERS_PER_MINUTE, f"orders in the last minute {recent} reached "
                                                 f"{MAX_ORDERS_PER_MINUTE} {limit:g}")
    return None


def collar_breach(signal: Signal, collar_pct: float | None) -> RiskBreach | None:
    """A limit or stop price further than collar_pct percent from reference_price."""
    reference = signal.reference_price
    if collar_pct is None or reference is None:
        return None
    names = {"LIMIT": ("limit_price",), "STOP": ("stop_price",),
             "STOP_LIMIT": ("stop_price", "limit_price")}.get(signal.order_type, ())
    for name in names:
        price = getattr(signal, name)
        if price is None:
            continue
        distance = abs(price - reference) / reference * 100.0
        if _above(distance, collar_pct):
            return RiskBreach(PRICE_COLLAR, f"{name} {price:.2f} is {distance:.1f}% from "
                                            f"reference_price {reference:.2f}, beyond the "
                                            f"{collar_pct:g}% price collar")
    return None


def limits_from_row(row: dict) -> dict:
    """The limit fields of an ACCOUNTS_FILE row (or CLI options), validated.

    Returns only the limit names present in `row`; an explicit null stays None (no limit).
    Raises ValueError naming the field and the value when one is not a positive number
    (a positive whole number for max_order_quantity and max_orders_per_minute).
    """
    limits: dict = {}
    for name in LIMIT_FIELDS:
        if name not in row:
            continue
        value = row[name]
        if value is None:
            limits[name] = None
            continue
        whole = name in WHOLE_NUMBER_LIMITS
        kind = "a positive whole number" if whole else "a positive number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value <= 0 or \
                (whole and not float(value).is_integer()):
            raise ValueError(f"{name} must be {kind}, got {value!r}")
        limits[name] = int(value) if whole else float(value)
    return limits
