"""The mock paper broker's pricing, triggers, ledger and determinism (SPEC §4)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from brokers.base import BrokerStatus, OrderRequest
from brokers.mock import MockBroker, MockSettings
from execution_service.errors import OrderRejected, PlacementUncertain, StoreUnavailable
from tests.contract.harness_mock import ManualClock
from tests.fakes.stores import down_store, memory_store

pytestmark = pytest.mark.asyncio


def make(**settings) -> tuple[MockBroker, ManualClock, object]:
    clock = ManualClock()
    _handle, store = memory_store()
    values = {"fill_delay_seconds": 1.0, **settings}
    return MockBroker(store.mock_ledger, MockSettings(**values), clock=clock), clock, \
        store.mock_ledger


def req(signal_id: str = "s1", **fields) -> OrderRequest:
    values = {"signal_id": signal_id, "account_id": "a", "symbol": "SPY", "side": "BUY",
              "quantity": 10, "order_type": "MARKET", "reference_price": 200.0}
    values.update(fields)
    return OrderRequest(**values)


async def filled(broker, clock, order_id, seconds: float = 5):
    clock.now += timedelta(seconds=seconds)
    return await broker.get_order(order_id)


async def test_market_buy_fills_at_reference_plus_slippage_after_delay():
    broker, clock, _ = make(slippage_bps=10)
    placed = await broker.place_order(req())
    assert placed.status is BrokerStatus.WORKING and not placed.fills
    order = await filled(broker, clock, placed.order_id)
    assert order.status is BrokerStatus.FILLED
    assert order.fills[0].price == pytest.approx(200.2)
    assert order.fills[0].commission == 1.0


async def test_market_sell_slips_down_and_unknown_symbol_uses_100():
    broker, clock, _ = make(slippage_bps=100)
    placed = await broker.place_order(req(side="SELL", symbol="NEW", reference_price=None))
    order = await filled(broker, clock, placed.order_id)
    assert order.fills[0].price == pytest.approx(99.0)


async def test_last_seen_price_is_used_when_no_reference_price():
    broker, clock, _ = make()
    await broker.place_order(req("s1", reference_price=321.0))
    placed = await broker.place_order(req("s2", reference_price=None))
    assert (await filled(broker, clock, placed.order_id)).fills[0].price == 321.0


@pytest.mark.parametrize("side,limit,fills", [("BUY", 201.0, True), ("BUY", 200.0, True),
                                              ("BUY", 199.0, False), ("SELL", 199.0, True),
                                              ("SELL", 201.0, False)])
async def test_limit_fills_at_limit_only_when_marketable(side, limit, fills):
    broker, clock, _ = make()
    placed = await broker.place_order(req(side=side, order_type="LIMIT", limit_price=limit))
    order = await filled(broker, clock, placed.order_id)
    assert (order.status is BrokerStatus.FILLED) is fills
    if fills:
        assert order.fills[0].price == limit


async def test_resting_limit_fills_when_a_later_signal_moves_the_price():
    broker, clock, _ = make()
    resting = await broker.place_order(req("s1", order_type="LIMIT", limit_price=190.0))
    assert (await filled(broker, clock, resting.order_id)).status is BrokerStatus.WORKING
    await broker.place_order(req("s2", reference_price=185.0))
    assert (await broker.get_order(resting.order_id)).fills == ()  # triggered now, fills later
    assert (await filled(broker, clock, resting.order_id)).fills[0].price == 190.0


@pytest.mark.parametrize("order_type,side,stop,triggers", [
    ("STOP", "BUY", 199.0, True), ("STOP", "BUY", 201.0, False),
    ("STOP", "SELL", 201.0, True), ("STOP", "SELL", 199.0, False),
    ("STOP_LIMIT", "BUY", 199.0, True),
])
async def test_stops_trigger_at_or_through_the_stop(order_type, side, stop, triggers):
    broker, clock, _ = make()
    placed = await broker.place_order(req(side=side, order_type=order_type, stop_price=stop,
                                          limit_price=205.0 if side == "BUY" else 195.0))
    order = await filled(broker, clock, placed.order_id)
    assert (order.status is BrokerStatus.FILLED) is triggers


async def test_ioc_not_marketable_is_cancelled_at_once():
    broker, clock, _ = make()
    placed = await broker.place_order(req(order_type="LIMIT", limit_price=150.0,
                                          time_in_force="IOC"))
    assert placed.status is BrokerStatus.CANCELLED


async def test_chunks_split_quantity_and_commission_with_distinct_exec_ids():
    broker, clock, _ = make(fill_chunks=3, commission_per_order=1.0)
    placed = await broker.place_order(req(quantity=10))
    clock.now += timedelta(seconds=1)
    assert (await broker.get_order(placed.order_id)).filled_quantity == 3
    order = await filled(broker, clock, placed.order_id)
    assert [f.quantity for f in order.fills] == [3, 3, 4]
    assert sum(f.commission for f in order.fills) == pytest.approx(1.0)
    assert len({f.exec_id for f in order.fills}) == 3


async def test_cancel_keeps_fills_due_before_it():
    broker, clock, _ = make(fill_chunks=2)
    placed = await broker.place_order(req(quantity=10))
    clock.now += timedelta(seconds=1.5)
    await broker.cancel_order(placed.order_id)
    order = await filled(broker, clock, placed.order_id)
    assert order.status is BrokerStatus.CANCELLED and order.filled_quantity == 5


async def test_ledger_survives_a_new_instance_and_reports_fills_due_meanwhile():
    broker, clock, ledger = make()
    placed = await broker.place_order(req())
    clock.now += timedelta(seconds=10)
    restarted = MockBroker(ledger, MockSettings(), clock=clock)
    found = await restarted.find_order("s1")
    assert found.order_id == placed.order_id and found.status is BrokerStatus.FILLED


async def test_same_signal_twice_is_never_placed_twice():
    broker, clock, ledger = make()
    await broker.place_order(req())
    with pytest.raises(PlacementUncertain):
        await broker.place_order(req())
    assert ledger.count() == 1


async def test_reject_rate_is_deterministic_under_seed():
    outcomes = []
    for _ in range(2):
        broker, _, _ = make(reject_rate=0.5, seed=42)
        run = []
        for n in range(20):
            try:
                await broker.place_order(req(f"s{n}"))
                run.append("ok")
            except OrderRejected as e:
                assert "MOCK_REJECT_RATE=0.5" in e.reason
                run.append("rejected")
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 0 < outcomes[0].count("rejected") < 20


async def test_given_the_ledgers_store_down_then_store_unavailable_and_placed_once_after():
    """The ledger is the store: its outage is StoreUnavailable (the tracker backs off and
    looks the order up), never a driver error, and nothing is placed twice."""
    handle, store = memory_store()
    down, switch = down_store(handle.database)
    clock = ManualClock()
    broker = MockBroker(down.mock_ledger, MockSettings(fill_delay_seconds=1.0), clock=clock)
    switch.down = True
    with pytest.raises(StoreUnavailable):
        await broker.place_order(req())
    with pytest.raises(StoreUnavailable):
        await broker.find_order("s1")
    switch.down = False
    assert await broker.find_order("s1") is None  # the failed insert never landed
    placed = await broker.place_order(req())
    assert (await broker.find_order("s1")).order_id == placed.order_id
    assert store.mock_ledger.count("s1") == 1
