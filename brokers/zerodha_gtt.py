"""Pure translation between protective exits and Kite GTTs (no I/O, no SDK import).

A CNC/NRML position outlives the day, and Kite's regular orders do not: its exits are one GTT
per bracket (`<parent>:OCO`), single-leg while one exit exists and two-leg (OCO) once both do,
so the one-cancels-other rule lives at Kite (a triggered two-leg GTT places one order only).

Each exit record keeps its own order id naming the GTT and its leg, `GTT<trigger id>.SL` or
`.TP`. Kite's GTT legs carry no tag, so the leg is told by its prices: every leg is a LIMIT
order, a take-profit at its trigger, a stop a few ticks beyond it (so it fills in a moving
market). A GTT of ours is found again after a crash by its instrument, side, product, and the
trigger values of its legs, which are the bracket's levels (`matching_gtt`): never placed
twice.
"""

from __future__ import annotations

import math
import re

from brokers.base import BrokerOrder, BrokerStatus, OrderRequest
from execution_service.domain.brackets import ExitRole
from execution_service.errors import OrderRejected

GTT_PRODUCTS = frozenset({"CNC", "NRML"})
SINGLE, TWO_LEG = "single", "two-leg"
TICK = 0.05
#: How far beyond its trigger a stop leg's limit price sits (fraction of the trigger).
STOP_LIMIT_SLACK = 0.01
_LEG_ID = re.compile(r"GTT(\d+)\.(SL|TP)")
_CLOSED = {"cancelled": BrokerStatus.CANCELLED, "deleted": BrokerStatus.CANCELLED,
           "disabled": BrokerStatus.CANCELLED, "expired": BrokerStatus.CANCELLED,
           "rejected": BrokerStatus.REJECTED}


def is_gtt_exit(request: OrderRequest, product: str) -> bool:
    """A GTC exit on a product that outlives the day goes as a GTT."""
    return (request.time_in_force or "").upper() == "GTC" and product in GTT_PRODUCTS


def role_of_request(request: OrderRequest) -> ExitRole:
    order_type = request.order_type.upper()
    if order_type == "STOP":
        return ExitRole.STOP_LOSS
    if order_type == "LIMIT":
        return ExitRole.TAKE_PROFIT
    raise OrderRejected(f"order_type {request.order_type} cannot be a Zerodha GTT exit "
                        "(STOP or LIMIT)")


def leg_order_id(trigger_id: int | str, role: ExitRole) -> str:
    return f"GTT{trigger_id}.{role.suffix}"


def parse_leg_order_id(order_id: str) -> tuple[int, ExitRole] | None:
    """(trigger id, role) for a GTT leg's order id, None for a regular Kite order id."""
    match = _LEG_ID.fullmatch(order_id)
    if match is None:
        return None
    role = ExitRole.STOP_LOSS if match.group(2) == "SL" else ExitRole.TAKE_PROFIT
    return int(match.group(1)), role


def _ticks(price: float) -> float:
    return round(round(price / TICK) * TICK, 2)


def leg(request: OrderRequest, role: ExitRole, exchange: str, tradingsymbol: str,
        product: str, quantity: int) -> dict:
    """One GTT leg: the order Kite places when its trigger is hit, plus that trigger."""
    side = request.side.upper()
    trigger = request.stop_price if role is ExitRole.STOP_LOSS else request.limit_price
    if trigger is None or not trigger > 0:
        raise OrderRejected(f"{role.price_field} is required for a GTT exit (a number > 0)")
    trigger = _ticks(trigger)
    price = trigger
    if role is ExitRole.STOP_LOSS:
        slack = max(TICK, _ticks(trigger * STOP_LIMIT_SLACK))
        price = _ticks(trigger - slack if side == "SELL" else trigger + slack)
    return {"exchange": exchange, "tradingsymbol": tradingsymbol, "transaction_type": side,
            "quantity": quantity, "order_type": "LIMIT", "product": product, "price": price,
            "trigger": trigger}


def role_of_leg(order: dict, trigger: float) -> ExitRole:
    """A take-profit leg's price is its trigger; a stop leg's lies beyond it."""
    same = math.isclose(float(order["price"]), float(trigger), abs_tol=TICK / 10)
    return ExitRole.TAKE_PROFIT if same else ExitRole.STOP_LOSS


def legs_of(gtt: dict) -> dict[ExitRole, dict]:
    """The GTT's legs by role, each its order with `trigger` and `result` (None untriggered)."""
    triggers = gtt["condition"]["trigger_values"]
    legs = {}
    for order, trigger in zip(gtt["orders"], triggers, strict=False):
        legs[role_of_leg(order, trigger)] = {**order, "trigger": float(trigger)}
    return legs


def gtt_arguments(legs: list[dict], last_price: float) -> dict:
    """Keyword arguments for `place_gtt`/`modify_gtt`: triggers ascending, as Kite wants."""
    ordered = sorted(legs, key=lambda one: one["trigger"])
    first = ordered[0]
    return {"trigger_type": SINGLE if len(ordered) == 1 else TWO_LEG,
            "tradingsymbol": first["tradingsymbol"], "exchange": first["exchange"],
            "trigger_values": [one["trigger"] for one in ordered], "last_price": last_price,
            "orders": [{name: one[name] for name in ("exchange", "tradingsymbol",
                                                      "transaction_type", "quantity",
                                                      "order_type", "product", "price")}
                       for one in ordered]}


def matching_gtt(gtts: list[dict], wanted: dict, role: ExitRole, taken: set[int],
                 levels: tuple[float | None, float | None] | None = None
                 ) -> tuple[dict, bool] | None:
    """The active GTT of ours this leg belongs to, and whether the leg is already in it.

    Ours: the same instrument, side and product, holding this very leg (same trigger and
    quantity: placed before a crash), or else the other role's leg alone (the bracket's first
    exit) for the same quantity. With the bracket's `levels` (stop_loss, take_profit) known,
    every leg's trigger must be its role's level too, so another bracket's GTT on the same
    symbol is never taken for ours. GTTs this process holds for other brackets are `taken`.
    """
    other_alone = None
    for gtt in gtts:
        if gtt.get("status") != "active" or int(gtt["id"]) in taken:
            continue
        legs = legs_of(gtt)
        if not _same_order(gtt, legs, wanted) or not _at_levels(legs, levels):
            continue
        mine = legs.get(role)
        if mine is not None and math.isclose(mine["trigger"], wanted["trigger"]) \
                and int(mine["quantity"]) == wanted["quantity"]:
            return gtt, True
        if mine is None and len(legs) == 1 and other_alone is None \
                and int(next(iter(legs.values()))["quantity"]) == wanted["quantity"]:
            other_alone = gtt
    return (other_alone, False) if other_alone is not None else None


def _same_order(gtt: dict, legs: dict[ExitRole, dict], wanted: dict) -> bool:
    condition = gtt["condition"]
    return (condition["exchange"], condition["tradingsymbol"]) == (
        wanted["exchange"], wanted["tradingsymbol"]) and all(
        (one["transaction_type"], one["product"]) == (wanted["transaction_type"],
                                                      wanted["product"])
        for one in legs.values())


def _at_levels(legs: dict[ExitRole, dict], levels: tuple[float | None, float | None] | None
               ) -> bool:
    if levels is None:
        return True
    by_role = dict(zip((ExitRole.STOP_LOSS, ExitRole.TAKE_PROFIT), levels, strict=True))
    return all(by_role[role] is not None and math.isclose(one["trigger"], _ticks(by_role[role]))
               for role, one in legs.items())


def leg_snapshot(gtt: dict, role: ExitRole) -> BrokerOrder | str:
    """A leg of a GTT as a BrokerOrder, or the Kite order id its trigger placed (whose own
    state and trades are the leg's)."""
    order_id = leg_order_id(gtt["id"], role)
    status = str(gtt.get("status") or "").lower()
    legs = legs_of(gtt)
    mine = legs.get(role)
    quantity = float(mine["quantity"]) if mine else 0.0
    extra = {"gtt_id": int(gtt["id"]), "gtt_status": status}
    if mine is None:
        return BrokerOrder(order_id, BrokerStatus.CANCELLED, quantity, reason=(
            f"removed from GTT {gtt['id']}"), extra=extra)
    if status == "active":
        return BrokerOrder(order_id, BrokerStatus.WORKING, quantity, extra=extra)
    if status == "triggered":
        result = mine.get("result")
        if not result:
            return BrokerOrder(order_id, BrokerStatus.CANCELLED, quantity, reason=(
                f"the other leg of GTT {gtt['id']} triggered (one-cancels-other)"), extra=extra)
        placed = (result.get("order_result") or {})
        if placed.get("order_id"):
            return str(placed["order_id"])
        return BrokerOrder(order_id, BrokerStatus.REJECTED, quantity, reason=(
            f"GTT {gtt['id']} triggered, its order failed: "
            f"{placed.get('rejection_reason') or placed.get('status') or 'no order'}"),
            extra=extra)
    closed = _CLOSED.get(status, BrokerStatus.WORKING)
    return BrokerOrder(order_id, closed, quantity, reason=f"GTT {gtt['id']} {status}",
                       extra=extra)
