"""One contract, every broker adapter: the same behaviour for fill, partial fill, reject,
cancel and lookup by signal (STYLE: dramatiq's broker fixtures over backends)."""

from __future__ import annotations

import importlib
import uuid

import pytest

from brokers.base import BrokerStatus, OrderRequest
from execution_service.errors import OrderRejected

HARNESS_MODULES = [
    "tests.contract.harness_mock",
    "tests.contract.harness_ibkr",
    "tests.contract.harness_zerodha",
]


def _available() -> list:
    params = []
    for module in HARNESS_MODULES:
        try:
            params.append(pytest.param(importlib.import_module(module).HARNESS, id=module))
        except ImportError as e:  # an adapter under construction must not hide the others
            params.append(pytest.param(None, id=module, marks=pytest.mark.skip(str(e))))
    return params


@pytest.fixture(params=_available())
async def harness(request):
    instance = request.param()
    yield instance
    await instance.stop()


def market(quantity: float = 10, **fields) -> OrderRequest:
    values = {"signal_id": f"sig_{uuid.uuid4().hex[:10]}", "account_id": "acc", "symbol": "SPY",
              "side": "BUY", "quantity": quantity, "order_type": "MARKET",
              "reference_price": 100.0}
    values.update(fields)
    return OrderRequest(**values)


async def _advance_until(harness, broker, order_id: str, done, steps: int = 10):
    order = await broker.get_order(order_id)
    for _ in range(steps):
        if done(order):
            return order
        await harness.advance(order_id)
        order = await broker.get_order(order_id)
    return order


async def test_contract_given_market_order_then_filled_with_price(harness):
    broker = await harness.start()
    request = market(10)
    placed = await broker.place_order(request)
    assert placed.order_id
    order = await _advance_until(harness, broker, placed.order_id,
                                 lambda o: o.status is BrokerStatus.FILLED)
    assert order.status is BrokerStatus.FILLED
    assert order.filled_quantity == 10
    assert all(fill.price > 0 and fill.exec_id for fill in order.fills)


async def test_contract_given_chunks_then_partial_fills_with_distinct_exec_ids(harness):
    broker = await harness.start(chunks=2)
    placed = await broker.place_order(market(10))
    order = await _advance_until(harness, broker, placed.order_id,
                                 lambda o: 0 < o.filled_quantity < 10)
    assert order.status is BrokerStatus.WORKING and order.filled_quantity == 5
    order = await _advance_until(harness, broker, placed.order_id,
                                 lambda o: o.status is BrokerStatus.FILLED)
    assert order.filled_quantity == 10
    assert len({fill.exec_id for fill in order.fills}) == 2


async def test_contract_given_venue_refuses_then_rejected_with_reason(harness):
    broker = await harness.start(reject_reason="Insufficient margin")
    request = market(10)
    try:
        placed = await broker.place_order(request)
    except OrderRejected as e:
        assert e.reason
        return
    order = await _advance_until(harness, broker, placed.order_id,
                                 lambda o: o.status is BrokerStatus.REJECTED)
    assert order.status is BrokerStatus.REJECTED and order.reason


async def test_contract_given_resting_order_when_cancelled_then_cancelled(harness):
    broker = await harness.start()
    placed = await broker.place_order(market(10, order_type="LIMIT", limit_price=50.0))
    await broker.cancel_order(placed.order_id)
    order = await _advance_until(harness, broker, placed.order_id,
                                 lambda o: o.status is BrokerStatus.CANCELLED)
    assert order.status is BrokerStatus.CANCELLED and order.filled_quantity == 0


async def test_contract_given_placed_order_then_found_by_signal(harness):
    broker = await harness.start()
    request = market(10)
    placed = await broker.place_order(request)
    found = await broker.find_order(request.signal_id)
    assert found is not None and found.order_id == placed.order_id
    assert await broker.find_order(f"sig_never_{uuid.uuid4().hex[:6]}") is None


async def test_contract_given_resting_limit_when_modified_marketable_then_fills_at_new_limit(
        harness):
    """Given a resting LIMIT buy of 10 @ 50 (market 100), when it is modified through the
    broker's own modify to 8 @ 101, then it fills 8 at 101, the new limit."""
    broker = await harness.start()
    placed = await broker.place_order(market(10, order_type="LIMIT", limit_price=50.0))
    await broker.modify_order(placed.order_id,
                              market(8, order_type="LIMIT", limit_price=101.0))
    order = await _advance_until(harness, broker, placed.order_id,
                                 lambda o: o.status is BrokerStatus.FILLED)
    assert order.status is BrokerStatus.FILLED and order.quantity == 8
    assert order.filled_quantity == 8
    assert {fill.price for fill in order.fills} == {101.0}


async def test_contract_given_filled_order_when_modified_then_refused_with_reason(harness):
    broker = await harness.start()
    placed = await broker.place_order(market(10))
    await _advance_until(harness, broker, placed.order_id,
                         lambda o: o.status is BrokerStatus.FILLED)
    with pytest.raises(OrderRejected) as refused:
        await broker.modify_order(placed.order_id,
                                  market(12, order_type="LIMIT", limit_price=99.0))
    assert refused.value.reason
    order = await broker.get_order(placed.order_id)
    assert order.status is BrokerStatus.FILLED and order.filled_quantity == 10


async def test_contract_given_filled_order_when_cancelled_then_nothing_changes(harness):
    broker = await harness.start()
    placed = await broker.place_order(market(10))
    await _advance_until(harness, broker, placed.order_id,
                         lambda o: o.status is BrokerStatus.FILLED)
    await broker.cancel_order(placed.order_id)
    order = await broker.get_order(placed.order_id)
    assert order.status is BrokerStatus.FILLED and order.filled_quantity == 10


# protective exits (SPEC §12) ------------------------------------------------------------------

async def _take_profit_filled(harness, **exit_fields):
    """A sell STOP 95 and a sell LIMIT 110 (GTC) resting with the market at 100; the limit is
    resized to 6 and the market moves to 111: the limit fills 6 at 110. Returns the broker
    and the stop's order."""
    broker = await harness.start()
    await harness.move_market("SPY", 100.0)
    exit_fields = {"side": "SELL", "time_in_force": "GTC", "reference_price": None,
                   **exit_fields}
    stop = await broker.place_order(market(10, order_type="STOP", stop_price=95.0,
                                           **exit_fields))
    take = market(10, order_type="LIMIT", limit_price=110.0, **exit_fields)
    take_order = await broker.place_order(take)
    assert (await broker.get_order(stop.order_id)).status is BrokerStatus.WORKING
    await broker.modify_order(take_order.order_id, OrderRequest(**{**vars(take), "quantity": 6}))
    await harness.move_market("SPY", 111.0)
    filled = await _advance_until(harness, broker, take_order.order_id,
                                  lambda o: o.status is BrokerStatus.FILLED)
    assert filled.status is BrokerStatus.FILLED and filled.filled_quantity == 6
    assert {fill.price for fill in filled.fills} == {110.0}
    return broker, stop


async def _cancelled_unfilled(harness, broker, stop) -> None:
    await broker.cancel_order(stop.order_id)
    cancelled = await _advance_until(harness, broker, stop.order_id,
                                     lambda o: o.status is BrokerStatus.CANCELLED)
    assert cancelled.status is BrokerStatus.CANCELLED and cancelled.filled_quantity == 0


async def test_contract_given_gtc_exits_when_market_moves_through_one_then_only_it_fills(harness):
    """Given a resting sell STOP 95 and sell LIMIT 110 (GTC, MIS: Zerodha takes those as DAY
    orders) with the market at 100, when one is resized and the market moves to 111, then the
    limit fills at its limit for the new quantity, the stop keeps working and can still be
    cancelled."""
    broker, stop = await _take_profit_filled(harness, product="MIS")
    assert (await broker.get_order(stop.order_id)).status is BrokerStatus.WORKING
    await _cancelled_unfilled(harness, broker, stop)


async def test_contract_given_cnc_exits_in_one_group_when_take_profit_fills_then_stop_ends(
        harness):
    """Given the same exits for a delivery (CNC) position in one one-cancels-other group (a
    Zerodha GTT, an IB OCA group, two mock orders), when the limit fills 6 at 110, then the
    stop, cancelled (or already cancelled by the venue), ends CANCELLED without a fill."""
    broker, stop = await _take_profit_filled(harness, product="CNC", oca_group="sig_cnc:OCO")
    await _cancelled_unfilled(harness, broker, stop)


async def test_contract_given_native_brackets_then_children_wait_for_the_entry_and_oco(harness):
    """Given an adapter that keeps native brackets (IB), when an entry is placed with a
    take-profit and a stop-loss as its children, then each child is found by its own tag,
    executes nothing before the entry fills, and after the entry fills the take-profit's fill
    ends the stop. An adapter without them says so (`native_brackets` false) and refuses
    `place_bracket` without sending anything: its exits are placed after the fill."""
    broker = await harness.start()
    entry = market(10)
    exit_fields = {"side": "SELL", "time_in_force": "GTC", "reference_price": None,
                   "oca_group": f"{entry.signal_id}:OCO"}
    exits = [market(10, signal_id=f"{entry.signal_id}:TP", order_type="LIMIT",
                    limit_price=110.0, **exit_fields),
             market(10, signal_id=f"{entry.signal_id}:SL", order_type="STOP", stop_price=95.0,
                    **exit_fields)]
    if not broker.native_brackets:
        with pytest.raises(NotImplementedError):
            await broker.place_bracket(entry, exits)
        assert await broker.find_order(entry.signal_id) is None
        return
    placed, children = await broker.place_bracket(entry, exits)
    assert [child.signal_id for child in children] == [e.signal_id for e in exits]
    for request, child in zip(exits, children, strict=True):
        found = await broker.find_order(request.signal_id)
        assert found is not None and found.order_id == child.order_id
    take, stop = (child.order_id for child in children)
    await harness.advance(take)
    assert (await broker.get_order(take)).filled_quantity == 0  # held until the entry fills
    await _advance_until(harness, broker, placed.order_id,
                         lambda o: o.status is BrokerStatus.FILLED)
    filled = await _advance_until(harness, broker, take,
                                  lambda o: o.status is BrokerStatus.FILLED)
    assert filled.filled_quantity == 10 and {fill.price for fill in filled.fills} == {110.0}
    stopped = await broker.get_order(stop)
    assert stopped.status is BrokerStatus.CANCELLED and stopped.filled_quantity == 0
