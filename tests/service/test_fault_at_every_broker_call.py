"""Fault injection at every broker call the tracker makes: the Nth call fails (the broker is
unreachable, or a placement is left uncertain), for each N; the order still ends FILLED
exactly once, without a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from brokers.base import BrokerOrder, BrokerStatus
from execution_service.errors import PlacementUncertain, TransientBrokerError
from tests.fakes.service_fakes import ScriptedBroker, make_app, order_body

pytestmark = pytest.mark.asyncio
CALLS = ("connect", "place_order", "get_order", "find_order", "wait_for_update")


class FailingBroker(ScriptedBroker):
    """Fills each order on its second look; call number `fail_at` (over CALLS) raises
    `error` instead of running (a PlacementUncertain placement reached the venue all the
    same)."""

    def __init__(self, fail_at: int | None, error: Exception) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.fail_at, self.error, self.looks = fail_at, error, 0

    def _count(self, name: str) -> bool:
        self.calls.append(name)
        return len(self.calls) == self.fail_at

    async def connect(self) -> None:
        if self._count("connect"):
            raise TransientBrokerError("injected: connect")
        await super().connect()

    async def place_order(self, request):
        if self._count("place_order"):
            if isinstance(self.error, PlacementUncertain):
                self.place_error = self.error
                return await super().place_order(request)
            raise self.error
        return await super().place_order(request)

    async def get_order(self, order_id: str) -> BrokerOrder:
        if self._count("get_order"):
            raise TransientBrokerError("injected: get_order")
        self.looks += 1
        order = self.orders.get(order_id)
        if order is not None and self.looks >= 2 and not order.fills:
            self.fill(order_id, f"X-{order_id}", order.quantity, 10.0, datetime.now(UTC))
            self.set_status(order_id, BrokerStatus.FILLED)
        return await super().get_order(order_id)

    async def find_order(self, signal_id: str) -> BrokerOrder | None:
        if self._count("find_order"):
            raise TransientBrokerError("injected: find_order")
        return await super().find_order(signal_id)

    async def wait_for_update(self, order_id: str, timeout: float) -> None:
        if self._count("wait_for_update"):
            raise TransientBrokerError("injected: wait_for_update")
        await asyncio.sleep(0.005)


async def _fill_one(fail_at: int | None, error: Exception):
    broker = FailingBroker(fail_at, error)
    app, publisher = make_app(broker=broker, env={"SUPERVISE_SECONDS": "0.05"})
    app.processor.handle(order_body(quantity=3))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    # FILLED reaches the store (store thread) a moment before its confirmation is queued (on
    # the loop): done is FILLED with every confirmation out, not FILLED and an empty queue
    while not (app.store.get_record("sig_1")["status"] == "FILLED" and not app.outbox.backlog
               and not app.store.records_with_unpublished()):
        assert loop.time() < deadline, f"not FILLED; broker call {fail_at} failed: {broker.calls}"
        await asyncio.sleep(0.01)
    await app.outbox.stop()
    await app.tracker.stop()
    return app, publisher, broker


def _clean_calls() -> int:
    async def count() -> int:
        return len((await _fill_one(None, TransientBrokerError("unused")))[2].calls)
    return asyncio.run(count())


@pytest.mark.parametrize("error", [TransientBrokerError("injected: place_order"),
                                   PlacementUncertain("injected: timed out while placing")],
                         ids=["unreachable", "uncertain"])
@pytest.mark.parametrize("fail_at", range(1, _clean_calls() + 1))
async def test_given_the_nth_broker_call_fails_then_the_order_fills_once(fail_at, error):
    app, publisher, broker = await _fill_one(fail_at, error)
    assert len(broker.orders) == 1, f"sent {len(broker.orders)} times: {broker.calls}"
    record = app.store.get_record("sig_1")
    assert record["filled_quantity"] == 3
    assert publisher.statuses("sig_1") == ["SUBMITTED", "FILLED"]
    position = app.store.open_position({"account_id": "acc_1", "strategy_name": "Strat",
                                        "symbol": "SPY"})
    assert position["quantity"] == 3
