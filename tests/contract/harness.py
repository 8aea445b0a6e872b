"""What every broker adapter's contract harness provides (tests/contract/test_broker_contract.py).

A harness stands in for the venue: it builds a connected adapter and makes the venue do things
(deliver the next fill, cancel, reject) the way the real venue would report them.
"""

from __future__ import annotations

from typing import Protocol

from brokers.base import Broker


class BrokerHarness(Protocol):
    name: str

    async def start(self, *, chunks: int = 1, reject_reason: str | None = None) -> Broker:
        """A connected adapter whose venue fills a marketable order in `chunks` equal fills
        (delivered one per `advance`), or refuses every order with `reject_reason`."""

    async def advance(self, order_id: str) -> None:
        """The venue delivers what is next for this order: its next due fill, or the
        confirmation of a cancel that was asked for."""

    async def move_market(self, symbol: str, price: float) -> None:
        """The venue's market for `symbol` is now `price` (the mock broker triggers resting
        stops and limits from it; venues that fill on `advance` need nothing)."""

    async def stop(self) -> None: ...
