"""IbkrBroker: what it sends to IB, how it reads IB's answers, and how it meets a lost line.

IB is ib_async's real IB() driven by FakeTws (tests/contract/harness_ibkr.py) through the
wrapper callbacks TWS triggers; the connection tests at the end use real sockets.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import pytest_asyncio
from ib_async import IB, CommissionReport
from ib_async.util import UNSET_DOUBLE

from brokers.base import BrokerStatus, OrderRequest
from brokers.ibkr import IbkrBroker, IbkrSettings
from brokers.ibkr_status import map_status
from execution_service.errors import (
    OrderNotFound,
    OrderRejected,
    PlacementUncertain,
    TransientBrokerError,
)
from tests.contract.harness_ibkr import CLIENT_ID, FakeTws, IbkrHarness, ibkr_settings


def order_request(signal_id: str = "sig-ibkr-1", **fields) -> OrderRequest:
    values = {"signal_id": signal_id, "account_id": "acc-1", "symbol": "SPY", "side": "BUY",
              "quantity": 100, "order_type": "MARKET"}
    return OrderRequest(**{**values, **fields})


@pytest_asyncio.fixture
async def ibkr():
    harness = IbkrHarness()
    await harness.start()
    harness.events = []
    harness.broker.connection_listener = lambda up, detail: harness.events.append((up, detail))
    yield harness
    await harness.stop()


async def place(ibkr, **fields):
    """Place and return (snapshot, the contract and order TWS received)."""
    placed = await ibkr.broker.place_order(order_request(**fields))
    _, contract, order = ibkr.tws.received[-1]
    return placed, contract, order


# contracts ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ibkr_equity_contract_defaults_to_smart_usd_and_is_qualified_first(ibkr):
    placed, contract, _ = await place(ibkr, symbol="AAPL")
    assert (contract.secType, contract.symbol, contract.exchange, contract.currency) == (
        "STK", "AAPL", "SMART", "USD")
    assert contract.conId > 0  # qualified (reqContractDetails answered) before placeOrder
    assert len(ibkr.tws.contract_requests) == 1
    assert placed.status is BrokerStatus.WORKING


@pytest.mark.asyncio
@pytest.mark.parametrize("symbol", ["SPY241129C00235000", "SPY   241129C00235000"])
async def test_ibkr_option_contract_from_occ_local_symbol(ibkr, symbol):
    _, contract, _ = await place(ibkr, asset_class="OPTION", symbol=symbol, quantity=2)
    assert (contract.secType, contract.localSymbol, contract.exchange) == (
        "OPT", "SPY   241129C00235000", "SMART")


@pytest.mark.asyncio
async def test_ibkr_future_contract_from_local_symbol_and_exchange(ibkr):
    _, contract, _ = await place(ibkr, asset_class="FUTURE", symbol="ESZ4", exchange="CME",
                                 quantity=1)
    assert (contract.secType, contract.localSymbol, contract.exchange) == ("FUT", "ESZ4", "CME")


@pytest.mark.asyncio
async def test_ibkr_forex_contract_from_pair(ibkr):
    _, contract, order = await place(ibkr, asset_class="FOREX", symbol="EUR/USD",
                                     quantity=25000.5)
    assert (contract.secType, contract.symbol, contract.currency, contract.exchange) == (
        "CASH", "EUR", "USD", "IDEALPRO")
    assert order.totalQuantity == 25000.5


@pytest.mark.asyncio
async def test_ibkr_forex_symbol_that_is_not_a_pair_is_rejected_unsent(ibkr):
    with pytest.raises(OrderRejected, match="EURO"):
        await ibkr.broker.place_order(order_request(asset_class="FOREX", symbol="EURO"))
    assert ibkr.tws.received == [] and ibkr.tws.contract_requests == []


@pytest.mark.asyncio
@pytest.mark.parametrize("symbol, kind", [("NOPE", "unknown"), ("DUAL", "ambiguous")])
async def test_ibkr_unknown_or_ambiguous_contract_is_rejected_naming_symbol(ibkr, symbol, kind):
    ibkr.tws.unknown_symbols.add("NOPE")
    ibkr.tws.ambiguous_symbols.add("DUAL")
    with pytest.raises(OrderRejected, match=symbol) as refused:
        await ibkr.broker.place_order(order_request(symbol=symbol))
    assert kind != "ambiguous" or "ambiguous" in refused.value.reason
    assert ibkr.tws.received == []


# crypto ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ibkr_crypto_market_buy_is_sized_in_cash(ibkr):
    placed, contract, order = await place(ibkr, asset_class="CRYPTO", symbol="BTC",
                                          quantity=0.5, reference_price=60000.0,
                                          time_in_force="IOC")
    assert (contract.secType, contract.symbol, contract.exchange, contract.currency) == (
        "CRYPTO", "BTC", "PAXOS", "USD")
    assert (order.orderType, order.totalQuantity, order.cashQty, order.tif) == (
        "MKT", 0, 30000.0, "IOC")
    assert placed.quantity == 0.5 and placed.extra["cash_qty"] == 30000.0


@pytest.mark.asyncio
async def test_ibkr_crypto_sell_and_limit_are_sized_in_coins(ibkr):
    _, _, sell = await place(ibkr, signal_id="sig-ibkr-s", asset_class="CRYPTO",
                             symbol="ETH/USD", side="SELL", quantity=0.25, time_in_force="IOC")
    _, _, limit = await place(ibkr, signal_id="sig-ibkr-l", asset_class="CRYPTO", symbol="BTC",
                              order_type="LIMIT", limit_price=50000.0, quantity=0.1,
                              time_in_force="GTC")
    assert (sell.orderType, sell.totalQuantity, sell.cashQty) == ("MKT", 0.25, UNSET_DOUBLE)
    assert (limit.orderType, limit.totalQuantity, limit.lmtPrice, limit.tif) == (
        "LMT", 0.1, 50000.0, "GTC")


@pytest.mark.asyncio
@pytest.mark.parametrize("fields, named", [
    ({"order_type": "STOP", "stop_price": 50000.0, "time_in_force": "GTC"}, "STOP"),
    ({"order_type": "LIMIT", "limit_price": 50000.0, "time_in_force": "DAY"}, "DAY"),
    ({"order_type": "MARKET", "reference_price": 50000.0, "time_in_force": "GTC"}, "IOC"),
    ({"order_type": "MARKET", "time_in_force": "IOC"}, "cashQty"),
])
async def test_ibkr_crypto_orders_ib_refuses_are_rejected_unsent(ibkr, fields, named):
    with pytest.raises(OrderRejected, match=named):
        await ibkr.broker.place_order(order_request(asset_class="CRYPTO", symbol="BTC",
                                                    quantity=0.1, **fields))
    assert ibkr.tws.received == [] and ibkr.tws.contract_requests == []


# orders ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("tif", ["DAY", "GTC", "IOC"])
@pytest.mark.parametrize("order_type, prices, ib_type, lmt, aux", [
    ("MARKET", {}, "MKT", UNSET_DOUBLE, UNSET_DOUBLE),
    ("LIMIT", {"limit_price": 101.5}, "LMT", 101.5, UNSET_DOUBLE),
    ("STOP", {"stop_price": 99.0}, "STP", UNSET_DOUBLE, 99.0),
    ("STOP_LIMIT", {"limit_price": 98.5, "stop_price": 99.0}, "STP LMT", 98.5, 99.0),
])
async def test_ibkr_order_types_and_time_in_force(ibkr, order_type, prices, ib_type, lmt, aux,
                                                  tif):
    _, _, order = await place(ibkr, order_type=order_type, time_in_force=tif, side="SELL",
                              **prices)
    assert (order.orderType, order.lmtPrice, order.auxPrice, order.tif) == (ib_type, lmt, aux,
                                                                             tif)
    assert (order.action, order.totalQuantity) == ("SELL", 100)


@pytest.mark.asyncio
async def test_ibkr_order_carries_signal_as_order_ref_and_account(ibkr):
    _, _, tagged = await place(ibkr, signal_id="sig-ibkr-ref", broker_account="DU7654321")
    _, _, untagged = await place(ibkr, signal_id="sig-ibkr-noacct")
    assert (tagged.orderRef, tagged.account) == ("sig-ibkr-ref", "DU7654321")
    assert (untagged.orderRef, untagged.account) == ("sig-ibkr-noacct", "")


@pytest.mark.asyncio
@pytest.mark.parametrize("fields, missing", [({"order_type": "LIMIT"}, "limit_price"),
                                             ({"order_type": "STOP_LIMIT",
                                               "limit_price": 1.0}, "stop_price")])
async def test_ibkr_missing_price_is_rejected_unsent(ibkr, fields, missing):
    with pytest.raises(OrderRejected, match=missing):
        await ibkr.broker.place_order(order_request(**fields))
    assert ibkr.tws.received == []


# status ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ib_status, kwargs, expected", [
    ("PendingSubmit", {}, BrokerStatus.PENDING),
    ("ApiPending", {}, BrokerStatus.PENDING),
    ("PreSubmitted", {}, BrokerStatus.WORKING),
    ("Submitted", {}, BrokerStatus.WORKING),
    ("PendingCancel", {}, BrokerStatus.WORKING),
    ("Filled", {"fills_complete": True, "has_fills": True}, BrokerStatus.FILLED),
    ("Filled", {"fills_complete": False, "has_fills": True}, BrokerStatus.WORKING),
    ("Cancelled", {}, BrokerStatus.CANCELLED),
    ("ApiCancelled", {"cancel_requested": True}, BrokerStatus.CANCELLED),
    ("Cancelled", {"error": (201, "Order rejected - reason:No margin")}, BrokerStatus.REJECTED),
    ("Cancelled", {"error": (202, "Order Canceled - reason:")}, BrokerStatus.CANCELLED),
    ("Cancelled", {"error": (201, "x"), "has_fills": True}, BrokerStatus.CANCELLED),
    ("Inactive", {}, BrokerStatus.REJECTED),
])
def test_ibkr_status_mapping_table(ib_status, kwargs, expected):
    args = {"fills_complete": False, "error": None, "cancel_requested": False,
            "has_fills": False, **kwargs}
    assert map_status(ib_status, **args)[0] is expected


@pytest.mark.asyncio
async def test_ibkr_pending_until_tws_answers_then_working(ibkr):
    ibkr.tws.acknowledge = False
    placed, _, _ = await place(ibkr)
    assert placed.status is BrokerStatus.PENDING
    ibkr.tws.accept(int(placed.order_id), status="PreSubmitted")
    assert (await ibkr.broker.get_order(placed.order_id)).status is BrokerStatus.WORKING


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [399, 404, 161, 2104, 2106, 2109, 2158, 10167])
async def test_ibkr_informational_error_codes_are_not_rejections(ibkr, code):
    placed, _, _ = await place(ibkr)
    order_id = int(placed.order_id)
    ibkr.tws.error(order_id, code, "Warning: your order will not be placed until 09:30")
    ibkr.tws.error(-1, code, "Market data farm connection is OK:usfarm")
    now = await ibkr.broker.get_order(placed.order_id)
    assert (now.status, now.reason) == (BrokerStatus.WORKING, None)


@pytest.mark.asyncio
async def test_ibkr_inactive_is_rejected_with_code_and_text(ibkr):
    placed, _, _ = await place(ibkr)
    ibkr.tws.reject(int(placed.order_id), 201, "Order rejected - reason:Insufficient margin")
    now = await ibkr.broker.get_order(placed.order_id)
    assert now.status is BrokerStatus.REJECTED
    assert now.reason == "IB error 201: Order rejected - reason:Insufficient margin"


@pytest.mark.asyncio
async def test_ibkr_immediate_rejection_raises_order_rejected():
    harness = IbkrHarness()
    broker = await harness.start(reject_reason="Insufficient margin")
    try:
        with pytest.raises(OrderRejected, match=r"IB error 201: .*Insufficient margin"):
            await broker.place_order(order_request())
    finally:
        await harness.stop()


@pytest.mark.asyncio
async def test_ibkr_order_error_without_a_status_is_rejected(ibkr):
    placed, _, _ = await place(ibkr)
    ibkr.tws.error(int(placed.order_id), 103, "Duplicate order id")
    now = await ibkr.broker.get_order(placed.order_id)
    assert (now.status, now.reason) == (BrokerStatus.REJECTED, "IB error 103: Duplicate order id")


# fills ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ibkr_filled_only_once_the_fills_add_up_with_commission(ibkr):
    placed, _, _ = await place(ibkr, order_type="LIMIT", limit_price=10.0)
    order_id = int(placed.order_id)
    venue = ibkr.tws.book[order_id]
    ibkr.tws.wrapper.orderStatus(order_id, "Filled", 100.0, 0.0, 10.0, venue.perm_id, 0, 10.0,
                                 CLIENT_ID, "", 0.0)  # the status can overtake execDetails
    assert (await ibkr.broker.get_order(placed.order_id)).status is BrokerStatus.WORKING
    ibkr.tws.execute(order_id, 100.0, 10.0, commission=1.25)
    now = await ibkr.broker.get_order(placed.order_id)
    assert now.status is BrokerStatus.FILLED and now.filled_quantity == 100.0
    assert [(f.quantity, f.price, f.commission) for f in now.fills] == [(100.0, 10.0, 1.25)]
    assert now.fills[0].at.tzinfo is not None


@pytest.mark.asyncio
async def test_ibkr_fills_are_deduplicated_by_exec_id(ibkr):
    placed, contract, _ = await place(ibkr)
    order_id = int(placed.order_id)
    execution = ibkr.tws.execute(order_id, 40.0, 100.0, commission=0.4)
    ibkr.tws.wrapper.execDetails(-1, contract, execution)  # delivered twice
    await ibkr.ib.reqExecutionsAsync()  # and again in answer to a request
    ibkr.tws.execute(order_id, 60.0, 100.0, commission=0.6, exec_id="0000e0d5.0000abcd.01.01")
    ibkr.tws.execute(order_id, 60.0, 100.5, commission=0.6, exec_id="0000e0d5.0000abcd.01.02")
    now = await ibkr.broker.get_order(placed.order_id)
    # the correction stands, under the base id, so it can never count as a second fill
    assert [(f.exec_id, f.price) for f in now.fills] == [
        (execution.execId.rsplit(".", 1)[0], 100.0), ("0000e0d5.0000abcd.01", 100.5)]
    assert now.filled_quantity == 100.0


@pytest.mark.asyncio
async def test_ibkr_commission_arrives_after_the_fill(ibkr):
    placed, _, _ = await place(ibkr)
    execution = ibkr.tws.execute(int(placed.order_id), 100.0, 100.0, commission=None)
    assert (await ibkr.broker.get_order(placed.order_id)).fills[0].commission == 0.0
    ibkr.tws.wrapper.commissionReport(CommissionReport(execution.execId, 0.85, "USD"))
    now = await ibkr.broker.get_order(placed.order_id)
    assert now.fills[0].commission == 0.85 and now.extra["commission"] == 0.85


@pytest.mark.asyncio
async def test_ibkr_cancel_keeps_the_partial_fill():
    harness = IbkrHarness()
    broker = await harness.start(chunks=2)
    try:
        placed = await broker.place_order(order_request())
        await harness.advance(placed.order_id)
        await broker.cancel_order(placed.order_id)
        assert (await broker.get_order(placed.order_id)).status is BrokerStatus.WORKING
        await harness.advance(placed.order_id)
        now = await broker.get_order(placed.order_id)
        assert (now.status, now.filled_quantity) == (BrokerStatus.CANCELLED, 50.0)
        assert now.reason == "IB error 202: Order Canceled - reason:"
    finally:
        await harness.stop()


@pytest.mark.asyncio
async def test_ibkr_unknown_order_id_is_not_found(ibkr):
    with pytest.raises(OrderNotFound):
        await ibkr.broker.get_order("424242")
    with pytest.raises(OrderNotFound):
        await ibkr.broker.cancel_order("424242")


# finding orders by signal ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ibkr_find_order_by_order_ref_in_open_trades(ibkr):
    placed, _, _ = await place(ibkr, signal_id="sig-ibkr-open")
    found = await ibkr.broker.find_order("sig-ibkr-open")
    assert (found.order_id, found.status, found.signal_id) == (
        placed.order_id, BrokerStatus.WORKING, "sig-ibkr-open")
    assert await ibkr.broker.find_order("sig-ibkr-never-sent") is None


async def restart(old: IbkrHarness, *, report_completed: bool = True):
    """A new process: a new IB() and adapter, the same TWS (its book) behind them."""
    ib = IB()
    tws = FakeTws(ib, book=old.tws.book)
    tws.report_completed = report_completed
    broker = IbkrBroker(ibkr_settings(), ib=ib)
    await broker.connect()
    return broker


@pytest.mark.asyncio
async def test_ibkr_find_order_after_restart_from_completed_orders(ibkr):
    placed, _, _ = await place(ibkr, signal_id="sig-ibkr-done")
    ibkr.tws.status(int(placed.order_id), "Cancelled")  # IB cancelled it (e.g. IOC expired)
    await ibkr.stop()
    broker = await restart(ibkr)
    try:
        found = await broker.find_order("sig-ibkr-done")
        assert (found.status, found.signal_id) == (BrokerStatus.CANCELLED, "sig-ibkr-done")
        assert (await broker.get_order(found.order_id)).status is BrokerStatus.CANCELLED
    finally:
        await broker.close()


@pytest.mark.asyncio
async def test_ibkr_find_order_after_restart_with_fills_keeps_the_order_id(ibkr):
    placed, _, _ = await place(ibkr, signal_id="sig-ibkr-filled")
    ibkr.tws.fill_next(int(placed.order_id))
    await ibkr.stop()
    broker = await restart(ibkr)
    try:
        found = await broker.find_order("sig-ibkr-filled")
        assert (found.order_id, found.status, found.filled_quantity) == (
            placed.order_id, BrokerStatus.FILLED, 100.0)
        assert found.fills[0].commission == 1.0
        assert (await broker.get_order(placed.order_id)).status is BrokerStatus.FILLED
    finally:
        await broker.close()


@pytest.mark.asyncio
async def test_ibkr_find_order_from_executions_alone(ibkr):
    placed, _, _ = await place(ibkr, signal_id="sig-ibkr-exec")
    ibkr.tws.fill_next(int(placed.order_id))
    await ibkr.stop()
    broker = await restart(ibkr, report_completed=False)
    try:
        found = await broker.find_order("sig-ibkr-exec")
        assert (found.order_id, found.status, found.filled_quantity) == (
            placed.order_id, BrokerStatus.FILLED, 100.0)
        assert found.extra["source"] == "executions"
    finally:
        await broker.close()


# the connection -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ibkr_disconnect_calls_listener_and_everything_is_transient(ibkr):
    placed, _, _ = await place(ibkr)
    ibkr.tws.drop_connection("Connection reset by peer")
    assert ibkr.events == [(False, "IBKR 127.0.0.1:4002 connection lost "
                                   "([Errno 104] Connection reset by peer)")]
    assert not ibkr.broker.is_connected
    sent = len(ibkr.tws.received)
    for call in (ibkr.broker.place_order(order_request(signal_id="sig-ibkr-2")),
                 ibkr.broker.get_order(placed.order_id), ibkr.broker.find_order("sig-ibkr-1"),
                 ibkr.broker.cancel_order(placed.order_id)):
        with pytest.raises(TransientBrokerError, match=r"IBKR 127\.0\.0\.1:4002 not connected"):
            await call
    assert len(ibkr.tws.received) == sent  # nothing sent


@pytest.mark.asyncio
async def test_ibkr_disconnect_while_placing_is_placement_uncertain(ibkr):
    ibkr.tws.acknowledge = False
    loop = asyncio.get_running_loop()
    ibkr.ib.newOrderEvent += lambda _trade: loop.call_soon(ibkr.tws.drop_connection)
    with pytest.raises(PlacementUncertain, match="sig-ibkr-lost"):
        await ibkr.broker.place_order(order_request(signal_id="sig-ibkr-lost"))
    assert ibkr.events[0][0] is False
    await ibkr.broker.connect()  # the tracker reconnects, then looks the signal up
    found = await ibkr.broker.find_order("sig-ibkr-lost")
    assert found is not None and found.status is BrokerStatus.WORKING


@pytest.mark.asyncio
async def test_ibkr_reconnect_resyncs_and_reports_restored(ibkr):
    placed, _, _ = await place(ibkr)
    ibkr.tws.drop_connection()
    ibkr.tws.fill_next(int(placed.order_id))  # filled while the line was down
    await ibkr.broker.connect()
    up, detail = ibkr.events[-1]
    assert up is True and "IBKR 127.0.0.1:4002 connected" in detail
    now = await ibkr.broker.get_order(placed.order_id)
    assert (now.status, now.filled_quantity, now.fills[0].commission) == (
        BrokerStatus.FILLED, 100.0, 1.0)


@pytest.mark.asyncio
async def test_ibkr_connect_makes_one_attempt_per_call(ibkr):
    ibkr.tws.drop_connection()
    ibkr.tws.reachable = False
    for attempt in (1, 2):
        with pytest.raises(TransientBrokerError, match="unreachable: connection refused"):
            await ibkr.broker.connect()
        assert ibkr.tws.log_ons == 1 + attempt  # the harness's own connect, then one per call


@pytest.mark.asyncio
async def test_ibkr_connectivity_codes_reach_the_listener(ibkr):
    ibkr.tws.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
    ibkr.tws.error(-1, 1102, "Connectivity between IB and Trader Workstation has been restored")
    assert [up for up, _ in ibkr.events] == [False, True]
    assert "IB error 1100" in ibkr.events[0][1]


@pytest.mark.asyncio
async def test_ibkr_wait_for_update_returns_early_on_a_push(ibkr):
    """Given a wait of 10 minutes, when TWS pushes a fill, then the wait ends with it (the
    test's own bound, 60 s, is far below the wait's); with nothing pushed, a short wait ends
    at its timeout."""
    placed, _, _ = await place(ibkr)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, ibkr.tws.fill_next, int(placed.order_id))
    await asyncio.wait_for(ibkr.broker.wait_for_update(placed.order_id, 600.0), 60)
    started = time.monotonic()
    await asyncio.wait_for(ibkr.broker.wait_for_update(placed.order_id, 0.1), 60)
    assert time.monotonic() - started >= 0.09  # nothing more came: it waited its time out


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.asyncio
async def test_ibkr_connect_to_a_closed_port_fails_fast_naming_the_connection():
    port = closed_port()
    # a refusal, not the connect timeout: the 600 s timeout is far beyond the test's 60 s
    broker = IbkrBroker(IbkrSettings(host="127.0.0.1", port=port, client_id=CLIENT_ID,
                                     connect_timeout=600.0))
    events = []
    broker.connection_listener = lambda up, detail: events.append(up)
    with pytest.raises(TransientBrokerError) as failed:
        await asyncio.wait_for(broker.connect(), 60)
    assert str(failed.value) == f"IBKR 127.0.0.1:{port} unreachable: connection refused"
    assert not broker.is_connected and events == []


@pytest.mark.asyncio
async def test_ibkr_connect_to_a_silent_server_times_out():
    hung_up = asyncio.Event()

    async def silent(reader, writer):  # accepts, never answers the API handshake
        await reader.read()
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    broker = IbkrBroker(IbkrSettings(port=port, client_id=CLIENT_ID, connect_timeout=0.3))
    try:
        with pytest.raises(TransientBrokerError, match=rf"IBKR 127\.0\.0\.1:{port} unreachable: "
                                                       r"no answer within 0\.3s"):
            await asyncio.wait_for(broker.connect(), 60)
        await asyncio.wait_for(hung_up.wait(), 60)  # the adapter hung up its attempt
    finally:
        server.close()
        await server.wait_closed()


def test_ibkr_factory_builds_an_unconnected_adapter_from_settings():
    from brokers.factory import BUILDERS
    from execution_service.config import load_settings

    settings = load_settings({"IBKR_PORT": 4999, "IBKR_CLIENT_ID": 3}, environ={})
    broker = BUILDERS["IBKR"](settings, None)
    assert isinstance(broker, IbkrBroker) and broker.name == "IBKR"
    assert not broker.is_connected
    assert broker._settings == IbkrSettings("127.0.0.1", 4999, 3, 4.0)


@pytest.mark.asyncio
async def test_ibkr_warning_after_the_fill_keeps_it_filled(ibkr):
    placed, _, _ = await place(ibkr)
    ibkr.tws.fill_next(int(placed.order_id))
    ibkr.tws.error(int(placed.order_id), 110, "The price does not conform to the minimum "
                                              "price variation for this contract.")
    assert ibkr.ib.trades()[0].orderStatus.status == "ValidationError"  # ib_async's marker
    assert (await ibkr.broker.get_order(placed.order_id)).status is BrokerStatus.FILLED


@pytest.mark.asyncio
async def test_ibkr_per_order_bookkeeping_stays_bounded_and_recent_orders_are_found(ibkr,
                                                                                   monkeypatch):
    """Given room for 3 orders' bookkeeping; when 5 are placed; then only the 3 newest are
    kept, and each is still found through ib.trades()."""
    from brokers import ibkr_book as ibkr_module

    monkeypatch.setattr(ibkr_module, "ORDERS_REMEMBERED", 3)
    placed = [(await place(ibkr, signal_id=f"sig-bound-{n}"))[0] for n in range(5)]
    assert list(ibkr.broker._book.placed) == [p.order_id for p in placed[2:]]
    for snapshot in placed:
        assert (await ibkr.broker.get_order(snapshot.order_id)).order_id == snapshot.order_id


async def test_ibkr_modify_places_the_same_order_id_again_with_the_new_values(ibkr):
    """Given a working LIMIT, when modified, then TWS receives placeOrder with the same orderId
    (and permId) carrying the new quantity and limit; a finished order is refused."""
    placed, _, first = await place(ibkr, order_type="LIMIT", limit_price=100.0)
    await asyncio.sleep(0)  # TWS acknowledges

    await ibkr.broker.modify_order(placed.order_id, order_request(
        order_type="LIMIT", limit_price=101.5, quantity=60))

    order_id, _, sent = ibkr.tws.received[-1]
    assert str(order_id) == placed.order_id and len(ibkr.tws.received) == 2
    assert (sent.totalQuantity, sent.lmtPrice, sent.orderRef) == (60, 101.5, first.orderRef)
    await asyncio.sleep(0)
    assert (await ibkr.broker.get_order(placed.order_id)).quantity == 60
    ibkr.tws.confirm_cancel(int(placed.order_id))
    with pytest.raises(OrderRejected, match="nothing to modify"):
        await ibkr.broker.modify_order(placed.order_id, order_request(
            order_type="LIMIT", limit_price=102.0))
    with pytest.raises(OrderNotFound):
        await ibkr.broker.modify_order("424242", order_request(order_type="LIMIT",
                                                               limit_price=102.0))


@pytest.mark.asyncio
async def test_ibkr_orders_of_one_oca_group_carry_it_with_reduce_with_block(ibkr):
    """Given protective exits of one entry (SPEC §12), when placed, then TWS receives them in
    one OCA group with ocaType 2; an order without a group carries none."""
    _, _, stop = await place(ibkr, signal_id="sig-oca:SL", side="SELL", order_type="STOP",
                             stop_price=95.0, time_in_force="GTC", oca_group="sig-oca:OCO")
    _, _, plain = await place(ibkr, signal_id="sig-plain")
    assert (stop.ocaGroup, stop.ocaType) == ("sig-oca:OCO", 2)
    assert plain.ocaGroup == ""
