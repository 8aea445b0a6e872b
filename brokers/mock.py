"""The mock paper broker: ships in the product, and is the test double (SPEC §4).

Deterministic: prices come from the signal, fills fall due on a schedule fixed at placement or
trigger, randomness is seeded per signal. The order ledger (`MockLedger`) is the store's
`mock_broker_orders` collection, so another process (or this one after a restart) can ask
"which order carries this signal_id" and gets the fills that fell due meanwhile. Its errors
are the store's (StoreUnavailable): the tracker retries them like any store outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from brokers.base import Broker, BrokerOrder, BrokerStatus, Fill, OrderRequest
from execution_service.clock import utc_now
from execution_service.domain.records import as_utc as _aware
from execution_service.errors import OrderNotFound, OrderRejected, PlacementUncertain

DEFAULT_PRICE = 100.0


class MockLedger(Protocol):
    """The orders the mock broker holds, one document each (adapters/mock_ledger_store.py)."""

    def add(self, doc: dict) -> bool: ...  # False: an order with this _id exists

    def get(self, order_id: str) -> dict | None: ...

    def latest_priced(self, symbol: str) -> dict | None: ...

    def update_if(self, order_id: str, expected: dict, changes: dict) -> bool: ...

    def all(self) -> list[dict]: ...


@dataclass(frozen=True)
class MockSettings:
    fill_delay_seconds: float = 0.05
    fill_chunks: int = 1
    reject_rate: float = 0.0
    slippage_bps: float = 0.0
    commission_per_order: float = 1.0
    seed: int | None = None

    @classmethod
    def from_settings(cls, settings) -> MockSettings:
        return cls(settings.MOCK_FILL_DELAY_SECONDS, settings.MOCK_FILL_CHUNKS,
                   settings.MOCK_REJECT_RATE, settings.MOCK_SLIPPAGE_BPS,
                   settings.MOCK_COMMISSION_PER_ORDER, settings.MOCK_SEED)


class MockBroker(Broker):
    name = "MOCK"

    def __init__(self, ledger: MockLedger, settings: MockSettings | None = None,
                 clock: Callable[[], datetime] = utc_now):
        self._ledger = ledger
        self._settings = settings or MockSettings()
        self._clock = clock
        self._last_prices: dict[str, float] = {}
        self._connected = False
        self._offload = None

    def offload_store_calls(self, run) -> None:
        """Run the ledger's store work through `run(work, *args)` (the service's store thread:
        a hanging store then never holds up the event loop)."""
        self._offload = run

    async def _run(self, work, *args):
        return work(*args) if self._offload is None else await self._offload(work, *args)

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        self._connected = True

    async def close(self) -> None:
        self._connected = False

    # placing ----------------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> BrokerOrder:
        return await self._run(self._place, request)

    def _place(self, request: OrderRequest) -> BrokerOrder:
        now = self._clock()
        market = self.market_price(request.symbol, request.reference_price)
        doc = {
            "_id": _order_id(request.signal_id), "signal_id": request.signal_id,
            "account_id": request.account_id, "symbol": request.symbol, "side": request.side,
            "quantity": request.quantity, "order_type": request.order_type,
            "limit_price": request.limit_price, "stop_price": request.stop_price,
            "time_in_force": request.time_in_force, "reference_price": request.reference_price,
            "market_price_at_submit": market, "submitted_at": now, "status": "WORKING",
            "reason": None, "triggered_at": None, "fills": [], "cancelled_at": None,
        }
        rejection = self._random_rejection(request.signal_id)
        if rejection:
            doc.update(status="REJECTED", reason=rejection)
        else:
            doc.update(self._trigger(doc, market, now))
        if not self._ledger.add(doc):
            # The signal already has an order here: never place it twice.
            raise PlacementUncertain(f"mock broker already holds an order for "
                                     f"{request.signal_id}")
        if rejection:
            raise OrderRejected(rejection)
        return self._snapshot(doc, now)

    def market_price(self, symbol: str, reference_price: float | None = None) -> float:
        if reference_price is not None:
            self._last_prices[symbol] = reference_price
            return reference_price
        if symbol not in self._last_prices:
            seen = self._ledger.latest_priced(symbol)
            return seen["reference_price"] if seen else DEFAULT_PRICE
        return self._last_prices[symbol]

    def _random_rejection(self, signal_id: str) -> str | None:
        rate = self._settings.reject_rate
        if rate <= 0:
            return None
        seed = None if self._settings.seed is None else f"{self._settings.seed}:{signal_id}"
        if random.Random(seed).random() >= rate:
            return None
        return f"Insufficient margin (mock broker, MOCK_REJECT_RATE={rate:g})"

    # when orders fill -------------------------------------------------------------------------

    def _trigger(self, doc: dict, market: float, now: datetime) -> dict:
        """The fields that change when the order becomes marketable at `market`, if it does."""
        price = _execution_price(doc, market, self._settings.slippage_bps)
        if price is None:
            if doc["time_in_force"] == "IOC":
                return {"status": "CANCELLED", "cancelled_at": now,
                        "reason": "IOC order not marketable at submission"}
            return {}
        return {"triggered_at": now, "fills": self._plan_fills(doc, price, now)}

    def _plan_fills(self, doc: dict, price: float, start: datetime) -> list[dict]:
        chunks = split_quantity(doc["quantity"], self._settings.fill_chunks)
        commissions = split_money(self._settings.commission_per_order, len(chunks))
        delay = timedelta(seconds=self._settings.fill_delay_seconds)
        pairs = zip(chunks, commissions, strict=True)
        return [{"exec_id": f"{doc['_id']}-F{n}", "quantity": quantity, "price": price,
                 "commission": commission, "due_at": start + delay * n}
                for n, (quantity, commission) in enumerate(pairs, start=1)]

    def _refresh(self, doc: dict, now: datetime) -> dict:
        """Trigger a resting order whose price has come (another signal moved the market)."""
        if doc["status"] != "WORKING" or doc["triggered_at"] is not None:
            return doc
        changes = self._trigger(doc, self.market_price(doc["symbol"]), now)
        if not changes:
            return doc
        self._ledger.update_if(doc["_id"], {"triggered_at": None}, changes)
        return {**doc, **changes}

    # reading ----------------------------------------------------------------------------------

    async def get_order(self, order_id: str) -> BrokerOrder:
        return await self._run(self._get, order_id)

    def _get(self, order_id: str) -> BrokerOrder:
        doc = self._ledger.get(order_id)
        if doc is None:
            raise OrderNotFound(f"mock broker has no order {order_id}")
        now = self._clock()
        return self._snapshot(self._refresh(doc, now), now)

    async def find_order(self, signal_id: str) -> BrokerOrder | None:
        return await self._run(self._find, signal_id)

    def _find(self, signal_id: str) -> BrokerOrder | None:
        doc = self._ledger.get(_order_id(signal_id))
        if doc is None:
            return None
        now = self._clock()
        return self._snapshot(self._refresh(doc, now), now)

    async def list_orders(self) -> list[BrokerOrder]:
        return await self._run(self._list)

    def _list(self) -> list[BrokerOrder]:
        now = self._clock()
        return [self._snapshot(doc, now) for doc in self._ledger.all()]

    def _snapshot(self, doc: dict, now: datetime) -> BrokerOrder:
        cutoff = _aware(doc["cancelled_at"]) or now
        fills = tuple(Fill(f["exec_id"], f["quantity"], f["price"], _aware(f["due_at"]),
                           f["commission"]) for f in doc["fills"]
                      if _aware(f["due_at"]) <= min(now, cutoff))
        status = BrokerStatus(doc["status"])
        if status is BrokerStatus.WORKING and doc["fills"] and len(fills) == len(doc["fills"]):
            status = BrokerStatus.FILLED
        return BrokerOrder(order_id=doc["_id"], status=status, quantity=doc["quantity"],
                           signal_id=doc["signal_id"], fills=fills, reason=doc["reason"])

    # cancelling -------------------------------------------------------------------------------

    async def cancel_order(self, order_id: str) -> None:
        await self._run(self._cancel, order_id)

    def _cancel(self, order_id: str) -> None:
        order = self._get(order_id)
        if order.status is not BrokerStatus.WORKING:
            return  # already filled, cancelled or rejected: nothing to cancel
        self._ledger.update_if(order_id, {"status": "WORKING"},
                               {"status": "CANCELLED", "cancelled_at": self._clock(),
                                "reason": "cancelled on request"})

    # modifying --------------------------------------------------------------------------------

    async def modify_order(self, order_id: str, request: OrderRequest) -> None:
        """A resting order takes the new quantity and prices in the ledger and is looked at
        again under the same fill rules: a limit that became marketable fills at its new
        limit. An order already executing (its fills scheduled) or done is refused."""
        await self._run(self._modify, order_id, request)

    def _modify(self, order_id: str, request: OrderRequest) -> None:
        doc = self._ledger.get(order_id)
        if doc is None:
            raise OrderNotFound(f"mock broker has no order {order_id}")
        now = self._clock()
        doc = self._refresh(doc, now)
        status = self._snapshot(doc, now).status
        if status is not BrokerStatus.WORKING:
            raise OrderRejected(f"mock broker: order {order_id} is {status.lower()}, "
                                f"nothing to modify")
        if doc["triggered_at"] is not None:
            raise OrderRejected(f"mock broker: order {order_id} is already executing, "
                                f"it can no longer be modified")
        changes = {"quantity": request.quantity, "limit_price": request.limit_price,
                   "stop_price": request.stop_price, "modified_at": now}
        changes.update(self._trigger({**doc, **changes},
                                     self.market_price(doc["symbol"], request.reference_price),
                                     now))
        if not self._ledger.update_if(order_id, {"status": "WORKING", "triggered_at": None},
                                      changes):
            raise OrderRejected(f"mock broker: order {order_id} changed meanwhile, "
                                f"not modified")

    async def wait_for_update(self, order_id: str, timeout: float) -> None:
        doc = await self._run(self._ledger.get, order_id)
        due = [_aware(f["due_at"]) for f in (doc or {}).get("fills", [])
               if _aware(f["due_at"]) > self._clock()]
        if due and doc["status"] == "WORKING":
            timeout = min(timeout, max(0.0, (min(due) - self._clock()).total_seconds()))
        await asyncio.sleep(timeout)


def _order_id(signal_id: str) -> str:
    """Derived from the signal: the ledger's `_id` is what makes a signal's order unique."""
    return "MOCK-" + hashlib.sha256(signal_id.encode()).hexdigest()[:16].upper()


def _execution_price(doc: dict, market: float, slippage_bps: float) -> float | None:
    """The price the order fills at, at this market price, or None when it must rest."""
    buy = doc["side"] == "BUY"
    kind = doc["order_type"]
    if kind in ("STOP", "STOP_LIMIT"):
        stop = doc["stop_price"]
        if (buy and market < stop) or (not buy and market > stop):
            return None
        kind = "MARKET" if kind == "STOP" else "LIMIT"
    if kind == "MARKET":
        slip = market * slippage_bps / 10_000
        return round(market + slip if buy else market - slip, 6)
    limit = doc["limit_price"]
    marketable = market <= limit if buy else market >= limit
    return limit if marketable else None


def split_quantity(quantity: float, chunks: int) -> list[float]:
    """`quantity` in `chunks` parts: whole parts for whole quantities, the remainder last."""
    if float(quantity).is_integer():
        whole = int(quantity)
        chunks = max(1, min(chunks, whole))
        base, extra = divmod(whole, chunks)
        return [float(base + (1 if n >= chunks - extra else 0)) for n in range(chunks)]
    part = round(quantity / chunks, 9)
    return [part] * (chunks - 1) + [round(quantity - part * (chunks - 1), 9)]


def split_money(total: float, parts: int) -> list[float]:
    """`total` in `parts` amounts of whole cents that add up exactly."""
    cents = round(total * 100)
    base, extra = divmod(cents, parts)
    return [(base + (1 if n >= parts - extra else 0)) / 100 for n in range(parts)]
