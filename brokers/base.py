"""The Broker interface and the order/fill types every adapter speaks.

Adapters translate; they do not decide. Retries, polling and timeouts live in the
order tracker (`execution_service.service.tracker`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class BrokerStatus(StrEnum):
    """Where an order stands at the broker."""

    PENDING = "PENDING"  # received, not yet acknowledged by the venue
    WORKING = "WORKING"  # live at the venue (may be partially filled)
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class OrderRequest:
    """What the service asks a broker to place. Prices are floats; quantities may be fractional
    only for CRYPTO and FOREX."""

    signal_id: str
    account_id: str
    symbol: str
    side: str  # BUY or SELL
    quantity: float
    order_type: str  # MARKET, LIMIT, STOP, STOP_LIMIT
    time_in_force: str = "DAY"
    limit_price: float | None = None
    stop_price: float | None = None
    asset_class: str = "EQUITY"
    exchange: str | None = None
    currency: str | None = None
    product: str | None = None
    reference_price: float | None = None
    broker_account: str | None = None  # the venue's account code from the registration
    #: Orders sharing a group are one-cancels-other at venues that keep such groups (IB's
    #: ocaGroup): one's fill reduces the others by as much, there, even with the daemon down.
    oca_group: str | None = None
    #: The group's (stop_loss, take_profit) when it is a bracket's exits: how a venue that keeps
    #: the pair as one order without tags (a Kite GTT) knows the bracket's order again.
    oca_levels: tuple[float | None, float | None] | None = None


@dataclass(frozen=True)
class Fill:
    """One execution. `exec_id` is unique per broker and is how fills are de-duplicated."""

    exec_id: str
    quantity: float
    price: float
    at: datetime
    commission: float = 0.0


@dataclass(frozen=True)
class BrokerOrder:
    """A snapshot of one order at the broker: every fill so far, and its status."""

    order_id: str
    status: BrokerStatus
    quantity: float
    signal_id: str | None = None
    fills: tuple[Fill, ...] = ()
    reason: str | None = None  # why it was rejected or cancelled, in the broker's words
    extra: dict = field(default_factory=dict)  # broker-specific facts worth recording

    @property
    def filled_quantity(self) -> float:
        return sum(fill.quantity for fill in self.fills)


ConnectionListener = Callable[[bool, str], None]


class Broker(ABC):
    """One connection to one venue."""

    name: str = ""
    #: The venue keeps an entry's protective exits as children of the entry (IB's bracket):
    #: `place_bracket` sends all three at once, and the venue activates, sizes and cancels the
    #: children with the entry. Others get their exits placed after the entry fills.
    native_brackets: bool = False
    #: Called with (connected, detail) when the connection is lost or restored; set by the
    #: factory so the service can alert. Adapters call `_connection_changed`.
    connection_listener: ConnectionListener | None = None

    #: Called (no arguments) when the venue refuses our session credentials (Kite's
    #: TokenException): the service halts this broker's accounts until a new session.
    session_listener: Callable[[], None] | None = None

    def _connection_changed(self, connected: bool, detail: str) -> None:
        if self.connection_listener is not None:
            self.connection_listener(connected, detail)

    def _session_expired(self) -> None:
        if self.session_listener is not None:
            self.session_listener()

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection. Raises TransientBrokerError when the venue is unreachable."""

    async def close(self) -> None:  # noqa: B027 - optional: most adapters hold nothing
        """Release the connection."""

    def order_tag(self, signal_id: str) -> str:
        """The tag the order carries at the venue so it can be found again by signal."""
        return signal_id

    @abstractmethod
    async def place_order(self, request: OrderRequest) -> BrokerOrder:
        """Send the order tagged with `order_tag(request.signal_id)`.

        Raises OrderRejected (refused, nothing working), TransientBrokerError (certainly not
        sent, safe to retry) or PlacementUncertain (may have been sent: look it up).
        """

    async def place_bracket(self, entry: OrderRequest, exits: Sequence[OrderRequest]
                            ) -> tuple[BrokerOrder, list[BrokerOrder]]:
        """Send the entry with its exits as the venue's native bracket (when
        `native_brackets`), each tagged with `order_tag` of its signal; returns the entry and
        the exits, in the order given. Raises as `place_order` does, for the entry."""
        raise NotImplementedError(f"{self.name} keeps no native brackets")

    @abstractmethod
    async def get_order(self, order_id: str) -> BrokerOrder:
        """The order's current state. Raises OrderNotFound or TransientBrokerError."""

    @abstractmethod
    async def find_order(self, signal_id: str) -> BrokerOrder | None:
        """The order tagged with this signal, or None when the broker has none."""

    @abstractmethod
    async def cancel_order(self, order_id: str) -> None:
        """Ask the broker to cancel. The cancel shows in a later `get_order`."""

    @abstractmethod
    async def modify_order(self, order_id: str, request: OrderRequest) -> None:
        """Change a working order to `request` (the order as modified: its quantity, limit and
        stop prices) through the venue's own modify. The change shows in a later `get_order`.

        Raises OrderRejected when the venue refuses (nothing changed: the order is done, or
        the venue will not take the new values), TransientBrokerError when it did not answer.
        """

    async def wait_for_update(self, order_id: str, timeout: float) -> None:
        """Return when the order may have changed, or after `timeout` seconds.

        The default just waits; adapters with push updates return early.
        """
        await asyncio.sleep(timeout)

    async def list_orders(self) -> list[BrokerOrder]:
        """Every order the broker reports for this session (for reconciliation)."""
        return []
