"""Protective exits of CNC/NRML positions as Kite GTTs (see `brokers.zerodha_gtt`).

One GTT per bracket: the first exit places a single-leg GTT, the second turns it into a
two-leg (OCO) one with `modify_gtt`; resizing is `modify_gtt`; cancelling one leg leaves the
other as a single-leg GTT, the last one deletes it. Once triggered, a leg is the regular order
Kite placed for it: its state and trades are the exit's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from brokers.base import BrokerOrder, BrokerStatus, OrderRequest
from brokers.zerodha_gtt import (
    gtt_arguments,
    leg,
    leg_order_id,
    leg_snapshot,
    legs_of,
    matching_gtt,
    role_of_request,
)
from execution_service.domain.brackets import ExitRole
from execution_service.errors import OrderRejected

logger = logging.getLogger(__name__)
PLACE, CANCEL, MODIFY, LOOKUP, READ = "place", "cancel", "modify", "lookup", "read"


class GttExits:
    def __init__(self, call: Callable[..., Awaitable],
                 order: Callable[[str], Awaitable[BrokerOrder]],
                 cancel_order: Callable[[str], Awaitable[None]]):
        self._call = call  # the adapter's: a KiteConnect method by name, errors translated
        self._order = order  # a regular Kite order's snapshot
        self._cancel_order = cancel_order
        self._by_group: dict[str, int] = {}  # one-cancels-other group -> its GTT id
        self._by_signal: dict[str, str] = {}  # exit signal id -> leg order id
        #: A GTT is read, then rewritten whole: one change at a time, so one bracket's two
        #: exits never make two GTTs, nor two cancels each put back the other's leg.
        self._lock = asyncio.Lock()

    async def place(self, request: OrderRequest, exchange: str, tradingsymbol: str,
                    product: str, quantity: int) -> BrokerOrder:
        role = role_of_request(request)
        wanted = leg(request, role, exchange, tradingsymbol, product, quantity)
        group = request.oca_group or request.signal_id
        async with self._lock:
            gtt_id = await self._place_leg(request, group, role, wanted)
        self._by_group[group] = gtt_id
        order_id = leg_order_id(gtt_id, role)
        self._by_signal[request.signal_id] = order_id
        return BrokerOrder(order_id, BrokerStatus.WORKING, float(quantity), request.signal_id,
                           extra={"gtt_id": gtt_id, "exchange": exchange,
                                  "tradingsymbol": tradingsymbol, "product": product})

    async def _place_leg(self, request: OrderRequest, group: str, role: ExitRole,
                         wanted: dict) -> int:
        signal_id = request.signal_id
        known = self._by_group.get(group)
        if known is not None:
            gtts = [await self._call(LOOKUP, f"GTT {known}", "get_gtt", known)]
            taken: set[int] = set()
        else:
            gtts = await self._call(READ, "GTT list", "get_gtts")
            taken = set(self._by_group.values())
        found = matching_gtt(gtts, wanted, role, taken, request.oca_levels)
        if found is not None and found[1]:
            logger.info("Exit %s is already in Kite GTT %s: not placed again", signal_id,
                        found[0]["id"])
            return int(found[0]["id"])
        last_price = await self._last_price(wanted)
        if found is not None:
            gtt = found[0]
            legs = [*legs_of(gtt).values(), wanted]
            logger.info("Adding exit %s to Kite GTT %s (two-leg, one-cancels-other)",
                        signal_id, gtt["id"])
            await self._call(MODIFY, signal_id, "modify_gtt", int(gtt["id"]),
                             **gtt_arguments(legs, last_price))
            return int(gtt["id"])
        logger.info("Placing Kite GTT for exit %s: %s %s %s:%s trigger %s price %s",
                    signal_id, wanted["transaction_type"], wanted["quantity"],
                    wanted["exchange"], wanted["tradingsymbol"], wanted["trigger"],
                    wanted["price"])
        placed = await self._call(PLACE, signal_id, "place_gtt",
                                  **gtt_arguments([wanted], last_price))
        return int(placed["trigger_id"])

    async def _last_price(self, wanted: dict) -> float:
        key = f"{wanted['exchange']}:{wanted['tradingsymbol']}"
        quotes = await self._call(READ, f"last price of {key}", "ltp", key)
        return float(quotes[key]["last_price"])

    def known_leg(self, signal_id: str) -> str | None:
        return self._by_signal.get(signal_id)

    async def get(self, gtt_id: int, role: ExitRole) -> BrokerOrder:
        gtt = await self._call(LOOKUP, f"GTT {gtt_id}", "get_gtt", gtt_id)
        snapshot = leg_snapshot(gtt, role)
        if isinstance(snapshot, BrokerOrder):
            return snapshot
        placed = await self._order(snapshot)  # the order the trigger placed
        return BrokerOrder(leg_order_id(gtt_id, role), placed.status, placed.quantity,
                           placed.signal_id, placed.fills, placed.reason,
                           {**placed.extra, "gtt_id": gtt_id, "kite_order_id": snapshot})

    async def cancel(self, gtt_id: int, role: ExitRole) -> None:
        async with self._lock:  # a GTT is rewritten whole: one change at a time
            await self._cancel(gtt_id, role)

    async def _cancel(self, gtt_id: int, role: ExitRole) -> None:
        gtt = await self._call(LOOKUP, f"GTT {gtt_id}", "get_gtt", gtt_id)
        snapshot = leg_snapshot(gtt, role)
        if isinstance(snapshot, str):  # triggered: cancel the order it placed
            await self._cancel_order(snapshot)
            return
        if snapshot.status is not BrokerStatus.WORKING:
            logger.info("Kite GTT %s leg %s is already %s: nothing to cancel", gtt_id,
                        role.suffix, snapshot.status)
            return
        legs = legs_of(gtt)
        legs.pop(role)
        if not legs:
            logger.info("Deleting Kite GTT %s (its last leg, %s, cancelled)", gtt_id, role)
            await self._call(CANCEL, f"GTT {gtt_id}", "delete_gtt", gtt_id)
            return
        logger.info("Removing leg %s from Kite GTT %s (the other stays)", role, gtt_id)
        await self._call(CANCEL, f"GTT {gtt_id}", "modify_gtt", gtt_id,
                         **gtt_arguments(list(legs.values()),
                                         float(gtt["condition"]["last_price"])))

    async def modify(self, gtt_id: int, role: ExitRole, request: OrderRequest) -> None:
        async with self._lock:
            await self._modify(gtt_id, role, request)

    async def _modify(self, gtt_id: int, role: ExitRole, request: OrderRequest) -> None:
        gtt = await self._call(LOOKUP, f"GTT {gtt_id}", "get_gtt", gtt_id)
        legs = legs_of(gtt)
        mine = legs.get(role)
        if gtt.get("status") != "active" or mine is None:
            raise OrderRejected(f"Kite GTT {gtt_id} is {gtt.get('status')}: its {role} leg "
                                "cannot be modified")
        quantity = request.quantity
        if not (quantity > 0 and float(quantity).is_integer()):
            raise OrderRejected(f"quantity {quantity} is not supported by Zerodha "
                                "(a whole number of units)")
        legs[role] = leg(request, role, mine["exchange"], mine["tradingsymbol"],
                         mine["product"], int(quantity))
        logger.info("Modifying Kite GTT %s leg %s: quantity %s", gtt_id, role, int(quantity))
        await self._call(MODIFY, f"GTT {gtt_id}", "modify_gtt", gtt_id,
                         **gtt_arguments(list(legs.values()), await self._last_price(mine)))
