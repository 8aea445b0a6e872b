"""Interactive Brokers (TWS / IB Gateway) through ib_async, the maintained successor of ib_insync.

The adapter translates; it does not decide. One connection attempt per `connect()` call, no
retries, no polling loops: the order tracker owns those. Orders carry the signal id as IB's
`orderRef`; their state is read from the live `Trade` objects ib_async keeps up to date from
TWS's pushes (openOrder, orderStatus, execDetails, commissionReport, error), so reading an
order costs no request and IB's pacing (50 msgs/s, ib_async throttles at 45) is left to
ib_async. On (re)connect ib_async's `connectAsync` re-syncs open orders, completed orders and
executions before it returns; that is what `find_order` searches after a restart. An entry
with protective exits goes as IB's native bracket (`place_bracket`). Finding and reading trades
is brokers/ibkr_book.py, IB's statuses as ours brokers/ibkr_status.py, contracts and orders
brokers/ibkr_contracts.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ib_async import IB, Contract, Order, StartupFetch, Trade

from brokers.base import Broker, BrokerOrder, BrokerStatus, OrderRequest
from brokers.ibkr_book import TradeBook, remember
from brokers.ibkr_contracts import (
    build_contract,
    build_order,
    contract_key,
    describe,
    link_bracket,
)
from brokers.ibkr_status import is_informational
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

CONNECTIVITY_LOST, CONNECTIVITY_RESTORED = 1100, frozenset({1101, 1102})


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


class IbkrBroker(Broker):
    name = "IBKR"
    native_brackets = True

    def __init__(self, settings: IbkrSettings, ib: IB | None = None):
        self._settings = settings
        self.ib = ib if ib is not None else IB()
        self._connect_lock = asyncio.Lock()
        self._book = TradeBook(self.ib, settings.client_id)
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
        remember(self._book.errors, req_id, (code, text))
        placed = self._book.placed.get(str(req_id))
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
        return self._answer(trade, request)

    async def place_bracket(self, entry: OrderRequest, exits: Sequence[OrderRequest]
                            ) -> tuple[BrokerOrder, list[BrokerOrder]]:
        """IB's native bracket: the parent, then each child (`parentId` = the parent), sent in
        one go with `transmit` false on all but the last, so TWS takes the three together. IB
        holds the children until the parent fills, sizes them with its fills, cancels them with
        an unfilled parent; their `ocaGroup` keeps them one-cancels-other."""
        contract = build_contract(entry)
        parent = build_order(entry, self.order_tag(entry.signal_id))
        children = [build_order(request, self.order_tag(request.signal_id))
                    for request in exits]
        self._require_connection(f"order {entry.signal_id} not sent")
        contract = await self._qualified(contract, entry)
        try:
            linked = link_bracket(parent, children, self.ib.client.getReqId)
        except ConnectionError:
            raise TransientBrokerError(f"{self._settings.where} not connected: order "
                                       f"{entry.signal_id} not sent") from None
        trades = [self._send(contract, parent, entry)]
        try:  # the parent went without transmit: a child that cannot follow leaves it unsure
            trades += [self._send(contract, order, request)
                       for order, request in zip(linked[1:], exits, strict=True)]
        except TransientBrokerError as e:
            raise PlacementUncertain(f"{e}: bracket of {entry.signal_id} sent in part; look "
                                     f"it up by its orderRef") from None
        await asyncio.sleep(0)
        return self._answer(trades[0], entry), [
            self._book.snapshot(trade, str(trade.order.orderId)) for trade in trades[1:]]

    def _answer(self, trade: Trade, request: OrderRequest) -> BrokerOrder:
        """The placed order as TWS answered so far; raises what place_order promises."""
        acknowledged = trade.orderStatus.status != "PendingSubmit"
        if not self.ib.isConnected() and not acknowledged:
            raise PlacementUncertain(f"{self._settings.where} connection lost while placing "
                                     f"{request.signal_id}: look it up by its orderRef")
        snapshot = self._book.snapshot(trade, str(trade.order.orderId))
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
        order_id = self._book.placed_now(trade, request.signal_id, request.quantity)
        logger.info("Placed %s with IBKR as order %s: %s %s %s %s%s", request.signal_id,
                    order_id, order.action, order.totalQuantity or order.cashQty,
                    describe(contract), order.orderType,
                    f" (child of {order.parentId})" if order.parentId else "")
        return trade

    # reading ----------------------------------------------------------------------------------

    async def get_order(self, order_id: str) -> BrokerOrder:
        self._require_connection(f"cannot read order {order_id}")
        trade = self._book.find_trade(order_id)
        if trade is not None:
            return self._book.snapshot(trade, order_id)
        found = self._book.by_executions(order_id)
        if found is not None:
            return found
        raise OrderNotFound(f"{self._settings.where} has no order {order_id}")

    async def find_order(self, signal_id: str) -> BrokerOrder | None:
        self._require_connection(f"cannot look up {signal_id}")
        return self._book.find_by_tag(self.order_tag(signal_id))

    async def list_orders(self) -> list[BrokerOrder]:
        self._require_connection("cannot list orders")
        return [self._book.snapshot(trade) for trade in self.ib.trades()]

    async def cancel_order(self, order_id: str) -> None:
        self._require_connection(f"cancel of {order_id} not sent")
        trade = self._book.find_trade(order_id)
        if trade is None:
            raise OrderNotFound(f"{self._settings.where} has no order {order_id}")
        if trade.isDone():
            return
        remember(self._book.cancels, order_id, None)
        try:
            self.ib.cancelOrder(trade.order)
        except ConnectionError:
            raise TransientBrokerError(f"{self._settings.where} not connected: cancel of "
                                       f"{order_id} not sent") from None
        logger.info("Cancel of IBKR order %s (%s) sent", order_id, trade.order.orderRef)

    async def modify_order(self, order_id: str, request: OrderRequest) -> None:
        """IB's modify: the same order (same orderId) placed again with the new values."""
        self._require_connection(f"modify of {order_id} not sent")
        trade = self._book.find_trade(order_id)
        if trade is None:
            raise OrderNotFound(f"{self._settings.where} has no order {order_id}")
        if trade.isDone():
            raise OrderRejected(f"IBKR order {order_id} is {trade.orderStatus.status}, "
                                f"nothing to modify")
        order = trade.order
        before = (order.totalQuantity, order.lmtPrice, order.auxPrice)
        order.totalQuantity = request.quantity
        order.transmit = True  # a bracket's parent and first child were sent untransmitted
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
        placed = self._book.placed.get(order_id)
        if placed is not None:
            placed.quantity = request.quantity
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
        trade = self._book.find_trade(order_id) if self.ib.isConnected() else None
        if trade is not None:
            events += [trade.statusEvent, trade.fillEvent, trade.commissionReportEvent]
        for event in events:
            event.connect(wake)
        try:
            await asyncio.wait([woke], timeout=timeout)
        finally:
            for event in events:
                event.disconnect(wake)
