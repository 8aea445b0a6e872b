"""The mock paper broker's contract harness: a manual clock moves its fills along."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from brokers.base import Broker
from brokers.mock import MockBroker, MockSettings
from tests.fakes.stores import memory_store


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class MockHarness:
    name = "mock"

    async def start(self, *, chunks: int = 1, reject_reason: str | None = None) -> Broker:
        self.clock = ManualClock()
        _handle, store = memory_store()
        settings = MockSettings(fill_delay_seconds=1.0, fill_chunks=chunks,
                                reject_rate=1.0 if reject_reason else 0.0, seed=1)
        self.broker = MockBroker(store.mock_ledger, settings, clock=self.clock)
        await self.broker.connect()
        return self.broker

    async def advance(self, order_id: str) -> None:
        self.clock.now += timedelta(seconds=1)

    async def move_market(self, symbol: str, price: float) -> None:
        """Another order at `price` for `symbol` is what moves the mock broker's market."""
        self.broker.market_price(symbol, price)

    async def stop(self) -> None:
        await self.broker.close()


HARNESS = MockHarness
