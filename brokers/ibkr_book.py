"""The IB trades this adapter knows, found again by order id, permId or orderRef tag, and read
as BrokerOrder snapshots. ib_async keeps the trades live from TWS's pushes; this book adds
what it forgets across a reconnect (what we placed, order id <-> permId, errors, cancels)."""

from __future__ import annotations

from ib_async import IB, Trade
from ib_async import Fill as IbFill

from brokers.base import BrokerOrder, BrokerStatus
from brokers.ibkr_status import (
    Placed,
    as_int,
    effective_status,
    extra_facts,
    fills_complete,
    latest_corrections,
    map_status,
    order_quantity,
    perm_id,
    to_fill,
)

ORDERS_REMEMBERED = 10_000  # per-order bookkeeping kept for the most recent orders only


def remember(book: dict, key, value) -> None:
    """Set, and forget the oldest entries past ORDERS_REMEMBERED (dicts keep insertion
    order): a long-running daemon's bookkeeping stays bounded."""
    book.pop(key, None)
    book[key] = value
    while len(book) > ORDERS_REMEMBERED:
        del book[next(iter(book))]


class TradeBook:
    def __init__(self, ib: IB, client_id: int):
        self.ib = ib
        self.client_id = client_id
        self.placed: dict[str, Placed] = {}
        self.errors: dict[int, tuple[int, str]] = {}  # order id -> last (code, text)
        self.cancels: dict[str, None] = {}  # an ordered set
        self._perm_by_order: dict[str, int] = {}
        self._order_by_perm: dict[int, str] = {}

    def placed_now(self, trade: Trade, signal_id: str, quantity: float) -> str:
        order_id = str(trade.order.orderId)
        remember(self.placed, order_id, Placed(signal_id, quantity))
        return order_id

    # finding trades ---------------------------------------------------------------------------

    def find_trade(self, order_id: str) -> Trade | None:
        if order_id.startswith("perm:"):
            return self._trade_by_perm(as_int(order_id.removeprefix("perm:")))
        number = as_int(order_id)
        trade = next((t for t in self.ib.trades() if t.order.orderId == number
                      and t.order.clientId == self.client_id), None)
        if trade is not None:
            return trade
        perm = self._perm_by_order.get(order_id) or self._perm_from_executions(order_id)
        trade = self._trade_by_perm(perm) if perm else None
        placed = self.placed.get(order_id)
        if trade is None and placed is not None:
            trade = next((t for t in self.ib.trades() if t.order.orderRef == placed.signal_id),
                         None)
        return trade

    def find_by_tag(self, tag: str) -> BrokerOrder | None:
        trades = [trade for trade in self.ib.trades() if trade.order.orderRef == tag]
        if trades:
            trades.sort(key=lambda trade: trade.order.orderId <= 0)  # our own order id first
            return self.snapshot(trades[0])
        fills = self.executions(lambda e: e.orderRef == tag)
        return self.snapshot_from_executions(fills) if fills else None

    def by_executions(self, order_id: str) -> BrokerOrder | None:
        fills = self.executions(lambda e: self._order_id_of_execution(e) == order_id)
        return self.snapshot_from_executions(fills) if fills else None

    def _trade_by_perm(self, perm: int) -> Trade | None:
        return next((t for t in self.ib.trades() if perm_id(t) == perm), None) if perm else None

    def _perm_from_executions(self, order_id: str) -> int:
        for fill in self.ib.fills():
            if self._order_id_of_execution(fill.execution) == order_id:
                return fill.execution.permId
        return 0

    def _order_id_of(self, trade: Trade) -> str:
        order = trade.order
        if order.orderId > 0 and order.clientId == self.client_id:
            return str(order.orderId)
        perm = perm_id(trade)
        known = self._order_by_perm.get(perm)
        if known is None:
            fills = self.executions(lambda e: e.permId == perm)
            known = self._order_id_of_execution(fills[0].execution) if fills else f"perm:{perm}"
        return known

    def _order_id_of_execution(self, execution) -> str:
        if execution.orderId > 0 and execution.clientId == self.client_id:
            return str(execution.orderId)
        return self._order_by_perm.get(execution.permId, f"perm:{execution.permId}")

    def executions(self, wanted) -> list[IbFill]:
        return [fill for fill in self.ib.fills() if wanted(fill.execution)]

    # translating ------------------------------------------------------------------------------

    def snapshot(self, trade: Trade, order_id: str | None = None) -> BrokerOrder:
        order_id = order_id or self._order_id_of(trade)
        self._remember_perm(order_id, perm_id(trade))
        fills = tuple(to_fill(fill) for fill in self._fills_of(trade))
        status, reason = map_status(
            effective_status(trade), fills_complete=fills_complete(trade, fills),
            error=self.errors.get(as_int(order_id)),
            cancel_requested=order_id in self.cancels, has_fills=bool(fills))
        placed = self.placed.get(order_id)
        return BrokerOrder(
            order_id=order_id, status=status, quantity=order_quantity(trade, placed, fills),
            signal_id=trade.order.orderRef or (placed.signal_id if placed else None),
            fills=fills, reason=reason, extra=extra_facts(trade, fills))

    def snapshot_from_executions(self, ib_fills: list[IbFill]) -> BrokerOrder:
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
            remember(self._perm_by_order, order_id, perm)
            remember(self._order_by_perm, perm, order_id)

    def _fills_of(self, trade: Trade) -> list[IbFill]:
        """The trade's fills plus executions re-synced for it, one per execId."""
        perm = perm_id(trade)
        by_exec_id = {fill.execution.execId: fill for fill in trade.fills}
        if perm:
            for fill in self.executions(lambda e: e.permId == perm):
                by_exec_id.setdefault(fill.execution.execId, fill)
        return latest_corrections(by_exec_id.values())
