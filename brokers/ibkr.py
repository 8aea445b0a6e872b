"""Interactive Brokers (TWS / IB Gateway) through ib_async, the maintained successor of ib_insync.

The adapter translates; it does not decide. One connection attempt per `connect()` call, no
retries, no polling loops: the order tracker owns those. Orders carry the signal id as IB's
`orderRef`; their state is read from the live `Trade` objects ib_async keeps up to date from
TWS's pushes (openOrder, orderStatus, execDetails, commissionReport, error), so reading an
order costs no request and IB's pacing (50 msgs/s, ib_async throttles at 45) is left to
ib_async. On (re)connect ib_async's `connectAsync` re-syncs open orders, completed orders and
executions before it returns; that is what `find_order` searches after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from ib_async import IB, Contract, Order, StartupFetch, Trade
from ib_async import Fill as IbFill

from brokers.base import Broker, BrokerOrder, BrokerStatus, Fill, OrderRequest
from brokers.ibkr_contracts import build_contract, build_order, contract_key, describe, is_set
from execution_service.errors import (
    OrderNotFound,
    OrderRejected,
    PlacementUncertain,
    TransientBrokerError,
)

logger = logging.getLogger(__name__)

#: What connectAsync fetches before it returns: enough to find every order again.
SYNC = StartupFetch.POSITIONS | StartupFetch.ORDERS_OPEN | StartupFetch.ORDERS_COMPLETE | (
    StartupFetch.EXECUTIONS)

#: IB messages about an order that do not change it (held until the open, short-sale locate,
#: a cancel that came too late, tif set by preset, market data notes). 2100-2199 are warnings.
INFORMATIONAL_CODES = frozenset({161, 165, 399, 404, 10090, 10147, 10148, 10167, 10197, 10349})
CANCELLED_CODE = 202  # "Order Canceled - reason:": the cancel confirmation, not a rejection
CONNECTIVITY_LOST, CONNECTIVITY_RESTORED = 1100, frozenset({1101, 1102})

PENDING_STATES = frozenset({"PendingSubmit", "ApiPending", ""})
WORKING_STATES = frozenset({"PreSubmitted", "Submitted", "PendingCancel", "ApiUpdate",
                            "ValidationError"})
CANCELLED_STATES = frozenset({"Cancelled", "ApiCancelled", "Inactive"})


def is_informational(code: int) -> bool:
    return code in INFORMATIONAL_CODES or 2100 <= code <= 2199


@dataclass(frozen=True)
class IbkrSettings:
    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 1
    connect_timeout: float = 4.0

    @classmethod
    def from_settings(cls, settings) -> IbkrSettings:
        return cls(settings.IBKR_HOST, settings.IBKR_PORT, settings.IBKR_CLIENT_ID,
                   settings.IBKR_CONNECT_TIMEOUT_SECONDS)

    @property
    def where(self) -> str:
        return f"IBKR {self.host}:{self.port}"


@dataclass
class _Placed:
    """What this process asked for; ib_async forgets its trades on a disconnect."""

    signal_id: str
    quantity: float


ORDERS_REMEMBERED = 10_000  # per-order bookkeeping kept for the most recent orders only


def _remember(book: dict, key, value) -> None:
    """Set, and forget the oldest entries past ORDERS_REMEMBERED (dicts keep insertion
    order): a long-running daemon's bookkeeping stays bounded."""
    book.pop(key, None)
    book[key] = value
    while len(book) > ORDERS_REMEMBERED:
        del book[next(iter(book))]


class IbkrBroker(Broker):
    name = "IBKR"

    def __init__(self, settings: IbkrSettings, ib: IB | None = None):
        self._settings = settings
        self.ib = ib if ib is not None else IB()
        self._connect_lock = asyncio.Lock()
        self._placed: dict[str, _Placed] = {}
        self._perm_by_order: dict[str, int] = {}
        self._order_by_perm: dict[int, str] = {}
        self._errors: dict[int, tuple[int, str]] = {}  # order id -> last (code, text)
        self._cancels: dict[str, None] = {}  # an ordered set
        self._contracts: dict[tuple, Contract] = {}
        self._up = False
        self._lost = False
        self._closing = False
        self._last_api_error = ""
        self.ib.disconnectedEvent += self._on_disconnected
        self.ib.errorEvent += self._on_error
        self.ib.client.apiError += self._on_api_error

    # connection -------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self.ib.isConnected()

    async def connect(self) -> None:
        async with self._connect_lock:
            if self.ib.isConnected():
                self._up = True
                return
            await self._connect_once()
            restored, self._up, self._lost = self._lost, True, False
            detail = (f"{self._settings.where} connected (client id {self._settings.client_id}); "
                      f"synced {len(self.ib.openTrades())} open orders, "
                      f"{len(self.ib.trades())} orders, {len(self.ib.fills())} executions")
            logger.info(detail)
            if restored:
                self._connection_changed(True, detail)

    async def _connect_once(self) -> None:
        s = self._settings
        self._last_api_error = ""
        try:
            await self.ib.connectAsync(s.host, s.port, clientId=s.client_id,
                                       timeout=s.connect_timeout, raiseSyncErrors=True,
                                       fetchFields=SYNC)
        except ConnectionRefusedError:
            raise TransientBrokerError(f"{s.where} unreachable: connection refused") from None
        except TimeoutError:
            raise TransientBrokerError(f"{s.where} unreachable: no answer within "
                                       f"{s.connect_timeout:g}s{self._api_detail()}") from None
        except OSError as e:  # ConnectionError included: reset, clientId in use, sync failed
            raise TransientBrokerError(f"{s.where} unreachable: {str(e) or type(e).__name__}"
                                       f"{self._api_detail()}") from None

    def _api_detail(self) -> str:
        return f" ({self._last_api_error})" if self._last_api_error else ""

    async def close(self) -> None:
        self._closing = True
        try:
            self.ib.disconnect()
        finally:
            self._closing, self._up, self._lost = False, False, False

    def _on_api_error(self, message: str) -> None:
        if not message.startswith("API connection failed"):  # that one restates the exception
            self._last_api_error = message

    def _on_disconnected(self) -> None:
        if self._closing or not self._up:
            return
        self._up, self._lost = False, True
        detail = f"{self._settings.where} connection lost{self._api_detail()}"
        logger.warning(detail)
        self._connection_changed(False, detail)

    def _on_error(self, req_id: int, code: int, text: str, _contract) -> None:
        if code == CONNECTIVITY_LOST or code in CONNECTIVITY_RESTORED:
            self._connection_changed(code != CONNECTIVITY_LOST,
                                     f"{self._settings.where}: IB error {code}: {text}")
        if req_id <= 0 or is_informational(code):
            return
        _remember(self._errors, req_id, (code, text))
        placed = self._placed.get(str(req_id))
        logger.warning("IBKR order %s (%s): IB error %s: %s", req_id,
                       placed.signal_id if placed else "no signal", code, text)

    def _require_connection(self, what: str) -> None:
        if not self.ib.isConnected():
            raise TransientBrokerError(f"{self._settings.where} not connected: {what}")

    # placing ----------------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> BrokerOrder:
        contract = build_contract(request)
        order = build_order(request, self.order_tag(request.signal_id))
        self._require_connection(f"order {request.signal_id} not sent")
        contract = await self._qualified(contract, request)
        trade = self._send(contract, order, request)
        await asyncio.sleep(0)  # take in what is already there: an answer, or a lost line
        acknowledged = trade.orderStatus.status != "PendingSubmit"
        if not self.ib.isConnected() and not acknowledged:
            raise PlacementUncertain(f"{self._settings.where} connection lost while placing "
                                     f"{request.signal_id}: look it up by its orderRef")
        snapshot = self._snapshot(trade, str(trade.order.orderId))
        if snapshot.status is BrokerStatus.REJECTED:
            logger.warning("IBKR rejected %s (order %s): %s", request.signal_id,
                           snapshot.order_id, snapshot.reason)
            raise OrderRejected(snapshot.reason or "rejected by IBKR")
        return snapshot

    async def _qualified(self, contract: Contract, request: OrderRequest) -> Contract:
        key = contract_key(contract)
        if key in self._contracts:
            return self._contracts[key]
        try:
            [found] = await asyncio.wait_for(
                self.ib.qualifyContractsAsync(contract, returnAll=True),
                self._settings.connect_timeout)
        except (ConnectionError, TimeoutError) as e:
            raise TransientBrokerError(f"{self._settings.where}: contract lookup for "
                                       f"{request.symbol} failed ({str(e) or type(e).__name__}); "
                                       f"order {request.signal_id} not sent") from None
        if found is None:
            raise OrderRejected(f"IBKR does not know the contract {request.symbol} "
                                f"({describe(contract)})")
        if isinstance(found, list):
            options = "; ".join(describe(c) for c in found if c is not None)
            raise OrderRejected(f"IBKR contract {request.symbol} is ambiguous ({options}): "
                                f"give its exchange and currency")
        self._contracts[key] = found
        return found

    def _send(self, contract: Contract, order: Order, request: OrderRequest) -> Trade:
        try:
            trade = self.ib.placeOrder(contract, order)
        except ConnectionError:
            raise TransientBrokerError(f"{self._settings.where} not connected: order "
                                       f"{request.signal_id} not sent") from None
        except Exception as e:
            raise PlacementUncertain(f"{self._settings.where}: placing {request.signal_id} "
                                     f"failed midway ({e!r}): look it up by its orderRef") from e
        order_id = str(trade.order.orderId)
        _remember(self._placed, order_id, _Placed(request.signal_id, request.quantity))
        logger.info("Placed %s with IBKR as order %s: %s %s %s %s", request.signal_id, order_id,
                    order.action, order.totalQuantity or order.cashQty, describe(contract),
                    order.orderType)
        return trade

    # reading ----------------------------------------------------------------------------------

    async def get_order(self, order_id: str) -> BrokerOrder:
        self._require_connection(f"cannot read order {order_id}")
        trade = self._find_trade(order_id)
        if trade is not None:
            return self._snapshot(trade, order_id)
        fills = self._executions(lambda e: self._order_id_of_execution(e) == order_id)
        if fills:
            return self._snapshot_from_executions(fills)
        raise OrderNotFound(f"{self._settings.where} has no order {order_id}")

    async def find_order(self, signal_id: str) -> BrokerOrder | None:
        self._require_connection(f"cannot look up {signal_id}")
        tag = self.order_tag(signal_id)
        trades = [trade for trade in self.ib.trades() if trade.order.orderRef == tag]
        if trades:
            trades.sort(key=lambda trade: trade.order.orderId <= 0)  # our own order id first
            return self._snapshot(trades[0])
        fills = self._executions(lambda e: e.orderRef == tag)
        return self._snapshot_from_executions(fills) if fills else None

    async def list_orders(self) -> list[BrokerOrder]:
        self._require_connection("cannot list orders")
        return [self._snapshot(trade) for trade in self.ib.trades()]

    async def cancel_order(self, order_id: str) -> None:
        self._require_connection(f"cancel of {order_id} not sent")
        trade = self._find_trade(order_id)
        if trade is None:
            raise OrderNotFound(f"{self._settings.where} has no order {order_id}")
        if trade.isDone():
            return
        _remember(self._cancels, order_id, None)
        try:
            self.ib.cancelOrder(trade.order)
        except ConnectionError:
            raise TransientBrokerError(f"{self._settings.where} not connected: cancel of "
                                       f"{order_id} not sent") from None
        logger.info("Cancel of IBKR order %s (%s) sent", order_id, trade.order.orderRef)

    async def modify_order(self, order_id: str, request: OrderRequest) -> None:
        """IB's modify: the same order (same orderId) placed again with the new values."""
        self._require_connection(f"modify of {order_id} not sent")
        trade = self._find_trade(order_id)
        if trade is None:
            raise OrderNotFound(f"{self._settings.where} has no order {order_id}")
        if trade.isDone():
            raise OrderRejected(f"IBKR order {order_id} is {trade.orderStatus.status}, "
                                f"nothing to modify")
        order = trade.order
        before = (order.totalQuantity, order.lmtPrice, order.auxPrice)
        order.totalQuantity = request.quantity
        if request.limit_price is not None:
            order.lmtPrice = request.limit_price
        if request.stop_price is not None:
            order.auxPrice = request.stop_price
        try:
            self.ib.placeOrder(trade.contract, order)
        except ConnectionError:
            order.totalQuantity, order.lmtPrice, order.auxPrice = before
            raise TransientBrokerError(f"{self._settings.where} not connected: modify of "
                                       f"{order_id} not sent") from None
        placed = self._placed.get(order_id)
        if placed is not None:
            self._placed[order_id] = _Placed(placed.signal_id, request.quantity)
        logger.info("Modify of IBKR order %s (%s) sent: %s @ %s/%s", order_id, order.orderRef,
                    order.totalQuantity, order.lmtPrice, order.auxPrice)

    async def wait_for_update(self, order_id: str, timeout: float) -> None:
        """Return at the next push about this order (status, fill, commission, error) or about
        the connection, else after `timeout`."""
        woke = asyncio.get_running_loop().create_future()

        def wake(*_args) -> None:
            if not woke.done():
                woke.set_result(None)

        events = [self.ib.disconnectedEvent, self.ib.connectedEvent]
        trade = self._find_trade(order_id) if self.ib.isConnected() else None
        if trade is not None:
            events += [trade.statusEvent, trade.fillEvent, trade.commissionReportEvent]
        for event in events:
            event.connect(wake)
        try:
            await asyncio.wait([woke], timeout=timeout)
        finally:
            for event in events:
                event.disconnect(wake)

    # finding trades ---------------------------------------------------------------------------

    def _find_trade(self, order_id: str) -> Trade | None:
        if order_id.startswith("perm:"):
            return self._trade_by_perm(_int(order_id.removeprefix("perm:")))
        number, client_id = _int(order_id), self._settings.client_id
        trade = next((t for t in self.ib.trades() if t.order.orderId == number
                      and t.order.clientId == client_id), None)
        if trade is not None:
            return trade
        perm = self._perm_by_order.get(order_id) or self._perm_from_executions(order_id)
        trade = self._trade_by_perm(perm) if perm else None
        placed = self._placed.get(order_id)
        if trade is None and placed is not None:
            tag = self.order_tag(placed.signal_id)
            trade = next((t for t in self.ib.trades() if t.order.orderRef == tag), None)
        return trade

    def _trade_by_perm(self, perm: int) -> Trade | None:
        return next((t for t in self.ib.trades() if _perm_id(t) == perm), None) if perm else None

    def _perm_from_executions(self, order_id: str) -> int:
        for fill in self.ib.fills():
            if self._order_id_of_execution(fill.execution) == order_id:
                return fill.execution.permId
        return 0

    def _order_id_of(self, trade: Trade) -> str:
        order = trade.order
        if order.orderId > 0 and order.clientId == self._settings.client_id:
            return str(order.orderId)
        perm = _perm_id(trade)
        known = self._order_by_perm.get(perm)
        if known is None:
            fills = self._executions(lambda e: e.permId == perm)
            known = self._order_id_of_execution(fills[0].execution) if fills else f"perm:{perm}"
        return known

    def _order_id_of_execution(self, execution) -> str:
        if execution.orderId > 0 and execution.clientId == self._settings.client_id:
            return str(execution.orderId)
        return self._order_by_perm.get(execution.permId, f"perm:{execution.permId}")

    def _executions(self, wanted) -> list[IbFill]:
        return [fill for fill in self.ib.fills() if wanted(fill.execution)]

    # translating ------------------------------------------------------------------------------

    def _snapshot(self, trade: Trade, order_id: str | None = None) -> BrokerOrder:
        order_id = order_id or self._order_id_of(trade)
        self._remember_perm(order_id, _perm_id(trade))
        ib_fills = self._fills_of(trade)
        fills = tuple(to_fill(fill) for fill in ib_fills)
        status, reason = map_status(
            effective_status(trade), fills_complete=_fills_complete(trade, fills),
            error=self._errors.get(_int(order_id)),
            cancel_requested=order_id in self._cancels, has_fills=bool(fills))
        placed = self._placed.get(order_id)
        return BrokerOrder(
            order_id=order_id, status=status, quantity=_quantity(trade, placed, fills),
            signal_id=trade.order.orderRef or (placed.signal_id if placed else None),
            fills=fills, reason=reason, extra=_extra(trade, fills))

    def _snapshot_from_executions(self, ib_fills: list[IbFill]) -> BrokerOrder:
        """IB reports executions but no open or completed order: the executions are all of it."""
        execution = ib_fills[0].execution
        fills = tuple(to_fill(fill) for fill in latest_corrections(ib_fills))
        quantity = max(*(f.execution.cumQty for f in ib_fills), sum(f.quantity for f in fills))
        return BrokerOrder(
            order_id=self._order_id_of_execution(execution), status=BrokerStatus.FILLED,
            quantity=quantity, signal_id=execution.orderRef or None, fills=fills,
            extra={"source": "executions", "perm_id": execution.permId,
                   "commission": round(sum((f.commission for f in fills), 0.0), 6)})

    def _remember_perm(self, order_id: str, perm: int) -> None:
        if perm and not order_id.startswith("perm:"):
            _remember(self._perm_by_order, order_id, perm)
            _remember(self._order_by_perm, perm, order_id)

    def _fills_of(self, trade: Trade) -> list[IbFill]:
        """The trade's fills plus executions re-synced for it, one per execId."""
        perm = _perm_id(trade)
        by_exec_id = {fill.execution.execId: fill for fill in trade.fills}
        if perm:
            for fill in self._executions(lambda e: e.permId == perm):
                by_exec_id.setdefault(fill.execution.execId, fill)
        return latest_corrections(by_exec_id.values())


# pure translation -----------------------------------------------------------------------------


def map_status(ib_status: str, *, fills_complete: bool, error: tuple[int, str] | None,
               cancel_requested: bool, has_fills: bool) -> tuple[BrokerStatus, str | None]:
    """IB's order status (plus the order's last error) as a BrokerStatus and reason."""
    reason = f"IB error {error[0]}: {error[1]}" if error else None
    if ib_status in PENDING_STATES:
        return BrokerStatus.PENDING, None
    if ib_status in WORKING_STATES:
        return BrokerStatus.WORKING, None
    if ib_status == "Filled":  # IB may say Filled before the last execDetails arrives
        return (BrokerStatus.FILLED if fills_complete else BrokerStatus.WORKING), None
    if ib_status in CANCELLED_STATES:
        refused = ib_status == "Inactive" or (error is not None and error[0] != CANCELLED_CODE)
        if refused and not cancel_requested and not has_fills:
            return BrokerStatus.REJECTED, reason or f"IB status {ib_status}"
        return BrokerStatus.CANCELLED, reason or (
            "cancelled on request" if cancel_requested else f"IB status {ib_status}")
    return BrokerStatus.WORKING, None  # a status IB added later: still live as far as we know


def effective_status(trade: Trade) -> str:
    """The trade's status, ignoring what ib_async wrote on warnings (ValidationError, the order
    is still live) and on informational messages (ib_async marks an order Cancelled on any
    error it does not know as a warning)."""
    for entry in reversed(trade.log):
        if entry.status == "ValidationError" or (entry.errorCode
                                                 and is_informational(entry.errorCode)):
            continue
        return entry.status
    return trade.orderStatus.status


def latest_corrections(fills) -> list[IbFill]:
    """One fill per execution: IB corrects an execution by re-sending it with an execId that
    differs only after the last period; the highest one stands."""
    latest: dict[str, IbFill] = {}
    for fill in fills:
        exec_id = fill.execution.execId
        base = exec_id.rsplit(".", 1)[0]
        if base not in latest or exec_id > latest[base].execution.execId:
            latest[base] = fill
    return sorted(latest.values(), key=lambda fill: (_at(fill), fill.execution.execId))


def to_fill(fill: IbFill) -> Fill:
    report = fill.commissionReport
    commission = report.commission if report.execId and is_set(report.commission) else 0.0
    # A correction re-sends an execution under a new last segment ("….01" -> "….02"): keep
    # the base as our exec id so a correction can never count as a second fill.
    return Fill(exec_id=base_exec_id(fill.execution.execId),
                quantity=float(fill.execution.shares),
                price=float(fill.execution.price), at=_at(fill), commission=commission)


def base_exec_id(exec_id: str) -> str:
    head, dot, tail = exec_id.rpartition(".")
    return head if dot and tail.isdigit() and head.count(".") >= 1 else exec_id


def _at(fill: IbFill) -> datetime:
    at = fill.execution.time if fill.execution.time.year > 1970 else fill.time
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _fills_complete(trade: Trade, fills: tuple[Fill, ...]) -> bool:
    filled = sum(fill.quantity for fill in fills)
    expected = float(trade.orderStatus.filled)
    if expected <= 0 and is_set(trade.order.filledQuantity):
        expected = float(trade.order.filledQuantity)
    if expected <= 0:
        expected = float(trade.order.totalQuantity)
    return filled > 0 and filled >= expected - 1e-9 * max(1.0, expected)


def _quantity(trade: Trade, placed: _Placed | None, fills: tuple[Fill, ...]) -> float:
    if placed is not None:
        return placed.quantity
    total = float(trade.order.totalQuantity or 0)
    return total if total > 0 else sum(fill.quantity for fill in fills)


def _extra(trade: Trade, fills: tuple[Fill, ...]) -> dict:
    extra = {"ib_status": trade.orderStatus.status, "perm_id": _perm_id(trade),
             "con_id": trade.contract.conId,
             "commission": round(sum((fill.commission for fill in fills), 0.0), 6)}
    if is_set(trade.order.cashQty):
        extra["cash_qty"] = float(trade.order.cashQty)
    return extra


def _perm_id(trade: Trade) -> int:
    return trade.order.permId or trade.orderStatus.permId


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
