"""Contract harness for the IBKR adapter, and the FakeTws it runs on.

A real `IB()` from ib_async, unconnected. Only its socket layer is stood in for, on this one
instance: `ib.client.connectAsync` marks the client logged on instead of opening a socket, and
the request methods TWS would answer (`reqContractDetails`, `reqOpenOrders`,
`reqCompletedOrders`, `reqExecutions`, `reqPositions`) are answered by FakeTws, on the next loop
turn, through `ib.wrapper` callbacks with ib_async's own data classes, exactly as the decoder
would deliver them. It keeps IB's native brackets: orders sent with `transmit=False` wait for
the last of their bracket; a child (`parentId`) waits PreSubmitted until its parent fills,
executes no more than the parent has filled less what the bracket's children have executed,
and is cancelled with an unfilled parent. Everything else (IB.connectAsync's sync, placeOrder,
cancelOrder, the wrapper's bookkeeping) is ib_async's own code; the bytes the client sends go
nowhere because its transport is None. FakeTws keeps a venue-side book, so what happens while
the line is down is reported on the next connect, as TWS would.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ib_async import (
    IB,
    Client,
    CommissionReport,
    Contract,
    ContractDetails,
    Execution,
    Order,
    OrderState,
)
from ib_async.util import UNSET_DOUBLE, dataclassAsDict

from brokers.base import Broker
from brokers.ibkr import IbkrBroker, IbkrSettings
from brokers.mock import split_money, split_quantity

CLIENT_ID = 7
ACCOUNT = "DU1234567"
SERVER_VERSION = Client.MaxClientVersion
DEFAULT_PRICE = 100.0


@dataclass
class VenueOrder:
    """TWS's side of one order."""

    order_id: int
    client_id: int
    perm_id: int
    contract: Contract
    order: Order
    status: str = "PreSubmitted"
    executions: list[tuple[Execution, CommissionReport]] = field(default_factory=list)
    cancel_pending: bool = False

    @property
    def filled(self) -> float:
        return sum(execution.shares for execution, _ in self.executions)

    @property
    def remaining(self) -> float:
        return float(self.order.totalQuantity) - self.filled

    @property
    def avg_price(self) -> float:
        filled = self.filled
        paid = sum(execution.shares * execution.price for execution, _ in self.executions)
        return paid / filled if filled else 0.0

    @property
    def done(self) -> bool:
        return self.status in ("Filled", "Cancelled", "ApiCancelled", "Inactive")


class FakeTws:
    """Stands in for TWS / IB Gateway behind one IB() instance."""

    def __init__(self, ib: IB, *, chunks: int = 1, reject_reason: str | None = None,
                 commission: float = 1.0, book: dict[int, VenueOrder] | None = None):
        self.ib, self.wrapper, self.client = ib, ib.wrapper, ib.client
        self.chunks, self.reject_reason, self.commission = chunks, reject_reason, commission
        self.reachable = True
        self.log_ons = 0  # connection attempts that reached this "TWS"
        self.acknowledge = True  # answer new orders with openOrder + orderStatus
        self.report_completed = True  # answer reqCompletedOrders with the done orders
        self.unknown_symbols: set[str] = set()
        self.ambiguous_symbols: set[str] = set()
        self.book: dict[int, VenueOrder] = {} if book is None else book  # shared: a restart
        self.received: list[tuple[int, Contract, Order]] = []  # what placeOrder sent
        self.held: list[int] = []  # sent with transmit=False: not yet working
        self.contract_requests: list[Contract] = []
        perms = [venue.perm_id for venue in self.book.values()]
        self._perm_ids = itertools.count(max(perms, default=5_000_000) + 1)
        self._exec_seq = itertools.count(sum(len(v.executions) for v in self.book.values()) + 1)
        self._install()

    def _install(self) -> None:
        """Instance-level stand-ins for the socket and the requests TWS answers."""
        self.client.connectAsync = self._log_on
        self.client.reqContractDetails = self._contract_details
        self.client.reqOpenOrders = lambda: self._later(self._open_orders)
        self.client.reqCompletedOrders = lambda _api_only: self._later(self._completed_orders)
        self.client.reqExecutions = lambda req_id, _filter: self._later(self._executions, req_id)
        self.client.reqPositions = lambda: self._later(self.wrapper.positionEnd)
        send_order, send_cancel = self.client.placeOrder, self.client.cancelOrder

        def place_order(order_id, contract, order):
            send_order(order_id, contract, order)  # serialized by ib_async, sent nowhere
            self._received(order_id, contract, order)

        def cancel_order(order_id, manual_time=""):
            send_cancel(order_id, manual_time)
            self._cancel_asked(order_id)

        self.client.placeOrder, self.client.cancelOrder = place_order, cancel_order

    @property
    def online(self) -> bool:
        return self.client.isReady()

    def _later(self, callback, *args) -> None:
        asyncio.get_running_loop().call_soon(callback, *args)

    # the line ---------------------------------------------------------------------------------

    async def _log_on(self, host, port, client_id, timeout=2.0) -> None:
        self.log_ons += 1
        if not self.reachable:
            raise ConnectionRefusedError(111, f"Connect call failed ('{host}', {port})")
        client = self.client
        client.host, client.port, client.clientId = host, int(port), int(client_id)
        client._serverVersion = client.decoder.serverVersion = SERVER_VERSION
        client.connState = Client.CONNECTED
        client.updateReqId(max(self.book, default=0) + 1)  # TWS's nextValidId
        client._hasReqId, client._accounts, client._apiReady = True, [ACCOUNT], True

    def drop_connection(self, reason: str = "Connection reset by peer") -> None:
        """The socket dies: asyncio's protocol callback, as the event loop would call it."""
        self.client.conn.connection_lost(ConnectionResetError(104, reason))

    # contracts --------------------------------------------------------------------------------

    def _contract_details(self, req_id: int, contract: Contract) -> None:
        self.contract_requests.append(contract)
        self._later(self._answer_contract, req_id, contract)

    def _answer_contract(self, req_id: int, contract: Contract) -> None:
        name = contract.localSymbol or contract.symbol
        if name in self.unknown_symbols:
            self.wrapper.error(req_id, 200, "No security definition has been found for the "
                                            "request", "")
            return
        for exchange in ("ARCA", "NYSE") if name in self.ambiguous_symbols else ("",):
            details = ContractDetails(contract=self._qualified(contract, exchange))
            self.wrapper.contractDetails(req_id, details)
        self.wrapper.contractDetailsEnd(req_id)

    @staticmethod
    def _qualified(contract: Contract, exchange: str) -> Contract:
        name = contract.localSymbol or contract.symbol
        values = dataclassAsDict(contract)
        values.update(conId=zlib.crc32(f"{name}{exchange}".encode()) % 10**8,
                      localSymbol=contract.localSymbol or contract.symbol,
                      symbol=contract.symbol or name.split()[0],
                      exchange=exchange or contract.exchange or "CME")
        return Contract(**values)

    # orders -----------------------------------------------------------------------------------

    def _received(self, order_id: int, contract: Contract, order: Order) -> None:
        sent = Order(**dataclassAsDict(order))  # TWS's own copy
        sent.orderId, sent.clientId = order_id, self.client.clientId
        known = self.book.get(order_id)
        if known is not None:  # the same order id again: TWS modifies the live order
            sent.permId = known.perm_id
            self.received.append((order_id, contract, sent))
            if not sent.transmit and order_id not in self.held:
                return  # TWS keeps an untransmitted change to itself: IB never gets it
            known.order = sent
            self._later(self._modified, order_id)
            return
        sent.permId = next(self._perm_ids)
        self.received.append((order_id, contract, sent))
        self.book[order_id] = VenueOrder(order_id, self.client.clientId, sent.permId, contract,
                                         sent)
        if not sent.transmit:  # TWS keeps it until the last order of its bracket transmits
            self.held.append(order_id)
            return
        released, self.held = [*self.held, order_id], []
        for released_id in released:
            if self.reject_reason is not None:
                self._later(self.reject, released_id, 201,
                            f"Order rejected - reason:{self.reject_reason}")
            elif self.acknowledge:
                self._later(self.accept, released_id, self._first_status(released_id))

    def _first_status(self, order_id: int) -> str:
        """A bracket's child waits (PreSubmitted) until its parent has filled some."""
        parent = self.parent_of(self.book[order_id])
        return "PreSubmitted" if parent is not None and parent.filled <= 0 else "Submitted"

    def parent_of(self, venue: VenueOrder) -> VenueOrder | None:
        return self.book.get(venue.order.parentId) if venue.order.parentId else None

    def children_of(self, venue: VenueOrder) -> list[VenueOrder]:
        return [child for child in self.book.values()
                if child.order.parentId == venue.order_id and child is not venue]

    def executable(self, venue: VenueOrder) -> float:
        """What the order may still execute. A child: only what its parent has filled and its
        bracket's children have not yet sold (IB sizes the children with the parent's fills)."""
        parent = self.parent_of(venue)
        if parent is None:
            return venue.remaining
        exited = sum(child.filled for child in self.children_of(parent))
        return max(0.0, min(venue.remaining, parent.filled - exited))

    def accept(self, order_id: int, status: str = "Submitted") -> None:
        venue = self.book[order_id]
        venue.status = status
        if self.online:
            self.wrapper.openOrder(order_id, venue.contract, Order(**dataclassAsDict(venue.order)),
                                   OrderState(status="PreSubmitted"))
            self._status(venue)

    def _modified(self, order_id: int) -> None:
        venue = self.book[order_id]
        if self.online and not venue.done:
            self.wrapper.openOrder(order_id, venue.contract, Order(**dataclassAsDict(venue.order)),
                                   OrderState(status=venue.status))
            self._status(venue)

    def reject(self, order_id: int, code: int, text: str, status: str = "Inactive") -> None:
        venue = self.book[order_id]
        venue.status = status
        if self.online:
            self.wrapper.error(order_id, code, text, "")
            self._status(venue)

    def error(self, req_id: int, code: int, text: str) -> None:
        self.wrapper.error(req_id, code, text, "")

    def status(self, order_id: int, status: str, why_held: str = "") -> None:
        venue = self.book[order_id]
        venue.status = status
        if self.online:
            self._status(venue, why_held)

    def _status(self, venue: VenueOrder, why_held: str = "") -> None:
        last = venue.executions[-1][0].price if venue.executions else 0.0
        self.wrapper.orderStatus(venue.order_id, venue.status, venue.filled, venue.remaining,
                                 venue.avg_price, venue.perm_id, 0, last, venue.client_id,
                                 why_held, 0.0)

    def _cancel_asked(self, order_id: int) -> None:
        if order_id in self.book:
            self.book[order_id].cancel_pending = True

    # fills and cancels ------------------------------------------------------------------------

    def advance(self, order_id: int) -> None:
        """What is next for this order: a pending cancel's confirmation, else its next fill."""
        venue = self.book[order_id]
        if venue.done:
            return
        if venue.cancel_pending:
            self.confirm_cancel(order_id)
        else:
            self.fill_next(order_id)

    def fill_next(self, order_id: int) -> None:
        venue = self.book[order_id]
        sizes = split_quantity(float(venue.order.totalQuantity), self.chunks)
        step = min(len(venue.executions), len(sizes) - 1)
        size = min(sizes[step], self.executable(venue))
        if size <= 1e-9:
            return  # a child whose parent has not filled (more): nothing to execute
        commission = split_money(self.commission, len(sizes))[step]
        self.execute(order_id, size, fill_price(venue.order), commission=commission)
        venue.status = "Filled" if venue.remaining <= 1e-9 else "Submitted"
        if self.online:
            self._status(venue)

    def execute(self, order_id: int, shares: float, price: float, *, commission: float | None,
                exec_id: str | None = None) -> Execution:
        """One execution (execDetails), and its commission report when `commission` is given."""
        venue = self.book[order_id]
        execution = Execution(
            execId=exec_id or f"0000e0d5.{next(self._exec_seq):08x}.01.01",
            time=datetime.now(UTC), acctNumber=ACCOUNT, exchange="ISLAND",
            side="BOT" if venue.order.action == "BUY" else "SLD", shares=shares, price=price,
            permId=venue.perm_id, clientId=venue.client_id, orderId=order_id,
            cumQty=venue.filled + shares, avgPrice=price, orderRef=venue.order.orderRef)
        report = CommissionReport(execution.execId, commission or 0.0, "USD", UNSET_DOUBLE,
                                  UNSET_DOUBLE, 0)
        venue.executions.append((execution, report))
        if self.online:
            self.wrapper.execDetails(-1, venue.contract, execution)
            if commission is not None:
                self.wrapper.commissionReport(report)
        self._one_cancels_other(venue, shares)
        for child in self.children_of(venue):  # IB activates a bracket's children on a fill
            if child.status == "PreSubmitted":
                self.status(child.order_id, "Submitted")
        return execution

    def _one_cancels_other(self, executed: VenueOrder, shares: float) -> None:
        """TWS's OCA groups: a fill cancels the group's other orders (ocaType 1) or reduces
        them by as much (2, 3), cancelling those left with nothing."""
        group = executed.order.ocaGroup
        if not group:
            return
        for venue in self.book.values():
            if venue is executed or venue.done or venue.order.ocaGroup != group:
                continue
            left = float(venue.order.totalQuantity) - shares
            if executed.order.ocaType == 1 or left <= venue.filled + 1e-9:
                self.confirm_cancel(venue.order_id)
                continue
            venue.order.totalQuantity = left
            self._modified(venue.order_id)

    def confirm_cancel(self, order_id: int) -> None:
        venue = self.book[order_id]
        venue.status, venue.cancel_pending = "Cancelled", False
        if self.online:
            self.wrapper.error(order_id, 202, "Order Canceled - reason:", "")
            self._status(venue)
        if venue.filled <= 0:  # an unfilled parent takes its bracket's children with it
            for child in self.children_of(venue):
                if not child.done:
                    self.confirm_cancel(child.order_id)

    # what a (re)connect is told ---------------------------------------------------------------

    def _open_orders(self) -> None:
        for venue in self.book.values():
            if not venue.done and venue.client_id == self.client.clientId:
                self.wrapper.openOrder(venue.order_id, venue.contract,
                                       Order(**dataclassAsDict(venue.order)),
                                       OrderState(status=venue.status))
                self._status(venue)
        self.wrapper.openOrderEnd()

    def _completed_orders(self) -> None:
        for venue in self.book.values() if self.report_completed else ():
            if venue.done:  # completed orders carry no order id, only the permId
                order = Order(**dataclassAsDict(venue.order))
                order.orderId, order.clientId = 0, 0
                order.filledQuantity = venue.filled
                self.wrapper.completedOrder(venue.contract, order,
                                            OrderState(status=venue.status))
        self.wrapper.completedOrdersEnd()

    def _executions(self, req_id: int) -> None:
        for venue in self.book.values():
            for execution, report in venue.executions:
                self.wrapper.execDetails(req_id, venue.contract, execution)
                self.wrapper.commissionReport(CommissionReport(**dataclassAsDict(report)))
        self.wrapper.execDetailsEnd(req_id)


def fill_price(order: Order) -> float:
    for price in (order.lmtPrice, order.auxPrice):
        if price is not None and price != UNSET_DOUBLE:
            return float(price)
    return DEFAULT_PRICE


def ibkr_settings(**overrides) -> IbkrSettings:
    values = {"host": "127.0.0.1", "port": 4002, "client_id": CLIENT_ID, "connect_timeout": 2.0}
    return IbkrSettings(**{**values, **overrides})


class IbkrHarness:
    """BrokerHarness for IbkrBroker (tests/contract/harness.py)."""

    name = "IBKR"

    def __init__(self) -> None:
        self.ib: IB | None = None
        self.tws: FakeTws | None = None
        self.broker: IbkrBroker | None = None

    async def start(self, *, chunks: int = 1, reject_reason: str | None = None) -> Broker:
        self.ib = IB()
        self.tws = FakeTws(self.ib, chunks=chunks, reject_reason=reject_reason)
        self.broker = IbkrBroker(ibkr_settings(), ib=self.ib)
        await self.broker.connect()
        return self.broker

    async def advance(self, order_id: str) -> None:
        self.tws.advance(int(order_id))
        await asyncio.sleep(0)

    async def move_market(self, symbol: str, price: float) -> None:
        """Nothing to do: this venue fills a resting order on `advance`, at its own price."""

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.close()


HARNESS = IbkrHarness
