"""Numbers a ledger can hold (issue 14): bounds on quantities and prices, and the minimum
increments known per asset class. Pure; used by signal validation.

Every limit is far beyond any real order (the per-account risk limits are the business ones);
they exist so that no quantity x price can overflow a record, a position or a JSON output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from execution_service.domain.intake import Problem


class Order(Protocol):
    """What the bounds read of a signal (domain/signals.py validates with them)."""

    asset_class: object
    quantity: float
    entry_price: float | None  # its prices (PRICE_FIELDS) are read by name


MIN_PRICE = 1e-8
MAX_PRICE = 1e9
MAX_ORDER_NOTIONAL = 1e12  # quantity x the order's price, when a price is known
PRICE_FIELDS = ("limit_price", "stop_price", "reference_price", "stop_loss", "take_profit")


@dataclass(frozen=True)
class InstrumentRules:
    quantity_step: float  # the smallest increment a venue trades
    max_quantity: float
    min_notional: float | None = None  # quantity x price, when a price is known


RULES = {
    "EQUITY": InstrumentRules(1, 1e9),
    "OPTION": InstrumentRules(1, 1e7),
    "FUTURE": InstrumentRules(1, 1e7),
    "CRYPTO": InstrumentRules(1e-8, 1e12, min_notional=1.0),
    "FOREX": InstrumentRules(1e-8, 1e10),
}


def show(value: float) -> str:
    """A number as a reason shows it: `1e-12`, `0.00000001`, `1,000,000,000`."""
    if value >= 1 and float(value).is_integer() and value < 1e15:
        return f"{int(value):,}"
    if value >= 1e-8:
        return f"{value:.8f}".rstrip("0").rstrip(".")
    return f"{value:g}"


def number_problems(signal: Order):
    """Each bound the signal's numbers break, naming the field."""
    rules = RULES[str(signal.asset_class)]
    yield from _quantity_problems(signal.quantity, rules, str(signal.asset_class))
    for name in PRICE_FIELDS:
        price = getattr(signal, name)
        if price is not None and not MIN_PRICE <= price <= MAX_PRICE:
            yield Problem(name, f"{name} must be between {show(MIN_PRICE)} and "
                                f"{show(MAX_PRICE)}, got {price:g}")
    price = signal.entry_price
    if price is None or not MIN_PRICE <= price <= MAX_PRICE:
        return
    notional = signal.quantity * price
    if notional > MAX_ORDER_NOTIONAL:
        yield Problem("quantity", f"quantity {signal.quantity:g} x price {price:g} = "
                                  f"{notional:g} is over the {show(MAX_ORDER_NOTIONAL)} a "
                                  f"single order may be worth")
    elif rules.min_notional is not None and notional < rules.min_notional:
        yield Problem("quantity", f"quantity {signal.quantity:g} x price {price:g} = "
                                  f"{notional:g} is under the {signal.asset_class} minimum "
                                  f"order value {show(rules.min_notional)}")


def _quantity_problems(quantity: float, rules: InstrumentRules, asset_class: str):
    if quantity > rules.max_quantity:
        yield Problem("quantity", f"quantity must be at most {show(rules.max_quantity)} for "
                                  f"{asset_class}, got {quantity!r}")
        return
    steps = quantity / rules.quantity_step
    if rules.quantity_step < 1 and steps < 1 - 1e-9:
        yield Problem("quantity", f"quantity {quantity:g} is below the {asset_class} minimum "
                                  f"increment {show(rules.quantity_step)}")
    elif rules.quantity_step < 1 and not math.isclose(steps, round(steps), abs_tol=1e-6):
        yield Problem("quantity", f"quantity {quantity!r} is not a multiple of the "
                                  f"{asset_class} increment {show(rules.quantity_step)}")
