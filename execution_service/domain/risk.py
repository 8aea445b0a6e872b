"""Pre-trade risk controls (issue 9): pure functions over the signal, the account and numbers
the service gathered. No I/O here; `execution_service.service.risk.RiskGate` does the reads.

Controls run in this order and the first that fails is the answer:

1. ``halt``                   an operator halt (global, or on this account) is active
2. ``max_order_quantity``     this order's quantity
3. ``max_order_notional``     quantity x price (limit, else stop, else reference price)
4. ``max_position_notional``  |open net position + working orders on this order's side + this
                              order|, each at its price, per account and symbol
5. ``max_orders_per_minute``  orders the account placed in the last 60 s (sliding)
6. ``price_collar``           a limit no more than PRICE_COLLAR_PCT through reference_price (a
                              BUY above it, a SELL below); a stop not on the side of the market
                              where it would trigger at once

Limits live on the account document under those names; an absent (None) limit is not
checked, and a value exactly at a limit passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from execution_service.domain.reasons import RejectClass
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

    @property
    def kind(self) -> RejectClass:
        return RejectClass.HALT if self.control == HALT else RejectClass.RISK


@dataclass(frozen=True)
class Exposure:
    """The net open position of one account in one symbol, across all its strategies."""

    net_quantity: float = 0.0  # signed: LONG positive, SHORT negative
    avg_price: float | None = None  # quantity-weighted average entry price, for display


@dataclass(frozen=True)
class WorkingOrders:
    """The unfilled remainder of an account's working orders in one symbol, by side: signed
    notional (BUY positive) and quantity, each order at its own price."""

    buy_quantity: float = 0.0
    buy_notional: float = 0.0
    sell_quantity: float = 0.0
    sell_notional: float = 0.0


NONE_WORKING = WorkingOrders()


def working_orders(records: Iterable[dict], fallback_price: float) -> WorkingOrders:
    """Sum PENDING/SUBMITTED/PARTIALLY_FILLED records: remaining quantity at the order's limit
    (else stop, else reference) price, or at `fallback_price` when it has none."""
    totals = {"BUY": [0.0, 0.0], "SELL": [0.0, 0.0]}
    for doc in records:
        side = doc.get("side")
        if side not in totals or doc.get("role"):
            continue  # a protective exit (§12) only ever reduces the position it protects
        remaining = float(doc.get("quantity") or 0.0) - float(doc.get("filled_quantity") or 0.0)
        if remaining <= 0:
            continue
        price = doc.get("limit_price") or doc.get("stop_price") or doc.get("reference_price")
        totals[side][0] += remaining
        totals[side][1] += remaining * float(price or fallback_price)
    return WorkingOrders(totals["BUY"][0], totals["BUY"][1], totals["SELL"][0],
                         totals["SELL"][1])


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
                 settings: RiskSettings = DEFAULT_SETTINGS,
                 working: WorkingOrders = NONE_WORKING) -> RiskBreach | None:
    """The first failing control for this order on this account, or None when it may go.

    `exposure` is the account's open position in the signal's symbol, summed over every
    strategy: max_position_notional is a limit per account and symbol, and counts `working`
    (the account's orders in this symbol not yet filled, this one excluded). `orders_last_minute`
    counts the account's orders in the 60 s before this one (this one excluded). `halt` is the
    active halt document that applies (global or this account's), if any.
    """
    if halt is not None:
        return RiskBreach(HALT, halt_reason(halt))
    checks = (lambda: _order_quantity(signal, account),
              lambda: _order_notional(signal, account),
              lambda: _position_notional(signal, account, exposure, working),
              lambda: _orders_per_minute(account, orders_last_minute),
              lambda: collar_breach(signal, settings.collar_pct))
    for check in checks:
        breach = check()
        if breach is not None:
            return breach
    return None


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


def _order_quantity(signal, account) -> RiskBreach | None:
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


def _order_notional(signal, account) -> RiskBreach | None:
    limit, price, breach = _priced_limit(signal, account, MAX_ORDER_NOTIONAL)
    if limit is None:
        return breach
    notional = signal.quantity * price
    if _above(notional, limit):
        return RiskBreach(MAX_ORDER_NOTIONAL, f"order notional {notional:.2f} exceeds "
                                              f"{MAX_ORDER_NOTIONAL} {limit:.2f}")
    return None


def _position_notional(signal, account, exposure: Exposure,
                       working: WorkingOrders) -> RiskBreach | None:
    limit, price, breach = _priced_limit(signal, account, MAX_POSITION_NOTIONAL)
    if limit is None:
        return breach
    if signal.side == "BUY":
        resting, resting_quantity = working.buy_notional, working.buy_quantity
    else:
        resting, resting_quantity = -working.sell_notional, -working.sell_quantity
    before = exposure.net_quantity * price + resting
    after = before + signed_quantity(signal) * price
    if abs(after) <= abs(before):
        return None  # reduces (or keeps) the position: never block the way out
    if _above(abs(after), limit):
        detail = f"position {exposure.net_quantity:g}"
        if resting_quantity:
            detail += f" + working orders {resting_quantity:g}"
        return RiskBreach(MAX_POSITION_NOTIONAL,
                          f"position notional {abs(after):.2f} would exceed "
                          f"{MAX_POSITION_NOTIONAL} {limit:.2f} ({detail} + this order "
                          f"{signed_quantity(signal):g})")
    return None


def _orders_per_minute(account, recent: int) -> RiskBreach | None:
    limit, unusable = _limit(account, MAX_ORDERS_PER_MINUTE)
    if unusable or limit is None:
        return unusable
    if recent >= limit:  # `recent` excludes this order: at the limit already, this one is over
        return RiskBreach(MAX_ORDERS_PER_MINUTE, f"orders in the last minute {recent} reached "
                                                 f"{MAX_ORDERS_PER_MINUTE} {limit:g}")
    return None


def collar_breach(signal: Signal, collar_pct: float | None) -> RiskBreach | None:
    """A price that goes through the market (reference_price) by more than collar_pct percent
    (a BUY limit above it, a SELL limit below), or a stop on the side of the market where it
    would trigger at once. Passive prices, however far, pass."""
    reference = signal.reference_price
    if reference is None:
        return None
    buy = signal.side == "BUY"
    stop = signal.stop_price
    if signal.order_type in ("STOP", "STOP_LIMIT") and stop is not None and (
            stop <= reference if buy else stop >= reference):
        where = "at or below" if buy else "at or above"
        return RiskBreach(PRICE_COLLAR, f"stop_price {stop:.2f} is {where} the market "
                                        f"(reference_price {reference:.2f}): a {signal.side} "
                                        "stop there would trigger at once")
    limit = signal.limit_price
    if collar_pct is None or limit is None:
        return None
    # a stop-limit's limit is collared around its stop: the market when it triggers
    on_stop = signal.order_type == "STOP_LIMIT" and stop is not None
    market = stop if on_stop else reference
    through = (limit - market if buy else market - limit) / market * 100.0
    if through > 0 and _above(through, collar_pct):
        side = "above" if buy else "below"
        basis = "stop_price" if on_stop else "reference_price"
        return RiskBreach(PRICE_COLLAR, f"limit_price {limit:.2f} is {through:.1f}% {side} "
                                        f"{basis} {market:.2f} for a {signal.side}, beyond the "
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
