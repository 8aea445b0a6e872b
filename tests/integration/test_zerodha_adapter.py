"""ZerodhaBroker with the real kiteconnect client against the fake Kite server."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brokers.base import BrokerStatus, OrderRequest
from brokers.factory import BUILDERS
from brokers.zerodha import SESSION_EXPIRED, OrderRateLimiter, ZerodhaBroker
from brokers.zerodha_mapping import kite_tag
from execution_service.config import load_settings
from execution_service.errors import (
    FatalConfigError,
    OrderNotFound,
    OrderRejected,
    PlacementUncertain,
    TransientBrokerError,
)
from tests.contract.harness_zerodha import ZerodhaHarness
from tests.fakes.fake_kite import ACCESS_TOKEN, API_KEY, FakeKite

ROOT = Path(__file__).resolve().parents[2]
SIGNAL = "sig_1732450800_5678"
TAG = kite_tag(SIGNAL)


@pytest.fixture
def fake():
    server = FakeKite().start()
    yield server
    server.stop()
    assert server.header_problems == []


def make_broker(fake: FakeKite, **options) -> ZerodhaBroker:
    options = {"orders_per_second": 1000, "request_timeout": 2.0} | options
    return ZerodhaBroker(API_KEY, ACCESS_TOKEN, root=fake.url, **options)


def order(**fields) -> OrderRequest:
    defaults = {"signal_id": SIGNAL, "account_id": "acc_z", "symbol": "INFY", "side": "BUY",
                "quantity": 10, "order_type": "MARKET"}
    return OrderRequest(**(defaults | fields))


async def placed(fake: FakeKite, broker: ZerodhaBroker, **fields) -> str:
    return (await broker.place_order(order(**fields))).order_id


# --- what Kite receives ----------------------------------------------------------------------

BASE_FORM = {"variety": "regular", "exchange": "NSE", "tradingsymbol": "INFY",
             "transaction_type": "BUY", "quantity": "10", "product": "CNC",
             "order_type": "MARKET", "validity": "DAY", "tag": TAG}

PARAMETER_CASES = {
    "market equity defaults": ({}, {}),
    "limit sell MIS IOC on BSE": (
        {"order_type": "LIMIT", "limit_price": 1500.5, "side": "sell", "product": "MIS",
         "time_in_force": "IOC", "exchange": "BSE"},
        {"order_type": "LIMIT", "price": "1500.5", "transaction_type": "SELL",
         "product": "MIS", "validity": "IOC", "exchange": "BSE"}),
    "GTC exit on MIS is an SL-M for the day": (
        {"order_type": "STOP", "stop_price": 1490, "side": "SELL", "product": "MIS",
         "time_in_force": "GTC"},
        {"order_type": "SL-M", "trigger_price": "1490", "transaction_type": "SELL",
         "product": "MIS", "validity": "DAY"}),
    "stop is SL-M with a trigger": (
        {"order_type": "STOP", "stop_price": 1490},
        {"order_type": "SL-M", "trigger_price": "1490"}),
    "stop limit is SL with price and trigger": (
        {"order_type": "STOP_LIMIT", "limit_price": 1491.0, "stop_price": 1490.0},
        {"order_type": "SL", "price": "1491.0", "trigger_price": "1490.0"}),
    "option defaults to NFO and NRML": (
        {"symbol": "NIFTY24DEC24000CE", "asset_class": "OPTION", "quantity": 75.0},
        {"exchange": "NFO", "tradingsymbol": "NIFTY24DEC24000CE", "product": "NRML",
         "quantity": "75"}),
    "future intraday on MCX": (
        {"symbol": "CRUDEOIL24DECFUT", "asset_class": "FUTURE", "product": "mis",
         "exchange": "MCX"},
        {"exchange": "MCX", "tradingsymbol": "CRUDEOIL24DECFUT", "product": "MIS"}),
    "exchange prefix wins over the exchange field": (
        {"symbol": "NSE:INFY", "exchange": "BSE"}, {"exchange": "NSE"}),
    "BSE prefix": ({"symbol": "BSE:TCS"}, {"exchange": "BSE", "tradingsymbol": "TCS"}),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("fields, expected", PARAMETER_CASES.values(), ids=PARAMETER_CASES)
async def test_zerodha_sends_exact_kite_parameters(fake, fields, expected):
    """Given an order request, when placed, then Kite receives exactly these form fields."""
    broker = make_broker(fake)

    result = await broker.place_order(order(**fields))

    assert [p.form for p in fake.placements] == [BASE_FORM | expected]
    assert fake.placements[0].variety == "regular"
    assert len(fake.placements[0].form["tag"]) <= 20
    assert result.status == BrokerStatus.PENDING
    assert result.order_id == fake.placements[0].order_id
    assert (result.signal_id, result.quantity) == (SIGNAL, float(expected.get("quantity", 10)))


REJECTED_BEFORE_SENDING = {
    "GTC": ({"time_in_force": "GTC"}, "time_in_force GTC is not supported by Zerodha"),
    "fractional": ({"quantity": 1.5}, "quantity 1.5"),
    "unknown product": ({"product": "BO"}, "product BO"),
    "crypto": ({"asset_class": "CRYPTO", "quantity": 0.5}, "asset_class CRYPTO"),
    "forex": ({"asset_class": "FOREX"}, "asset_class FOREX"),
    "CNC option": ({"asset_class": "OPTION", "product": "CNC"}, "product CNC"),
    "IB exchange": ({"exchange": "SMART"}, "exchange SMART"),
    "US dollars": ({"currency": "USD"}, "currency USD"),
    "limit without price": ({"order_type": "LIMIT"}, "limit_price"),
    "stop without trigger": ({"order_type": "STOP_LIMIT", "limit_price": 10}, "stop_price"),
    "trailing stop": ({"order_type": "TRAIL"}, "order_type TRAIL"),
    "no tradingsymbol": ({"symbol": "NSE:"}, "symbol"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("fields, reason", REJECTED_BEFORE_SENDING.values(),
                         ids=REJECTED_BEFORE_SENDING)
async def test_zerodha_rejects_what_kite_cannot_do_without_sending(fake, fields, reason):
    """Given an order Kite cannot take, when placed, then OrderRejected names the field and
    no request reaches Kite."""
    broker = make_broker(fake)

    with pytest.raises(OrderRejected) as raised:
        await broker.place_order(order(**fields))

    assert reason in raised.value.reason
    assert fake.placements == []
    assert [r for r in fake.requests if r[0] == "POST"] == []


# --- tags ------------------------------------------------------------------------------------


def test_zerodha_tag_is_the_signal_id_when_it_fits():
    assert kite_tag("sig1732450800x5678") == "sig1732450800x5678"


@pytest.mark.parametrize("signal_id", [SIGNAL, "a" * 20, "x" * 128, "sig:2024.11-24_01", "-"])
def test_zerodha_tag_is_derived_for_long_or_punctuated_ids(signal_id):
    tag = kite_tag(signal_id)
    assert len(tag) == 20 and tag.isalnum() and tag != signal_id
    assert tag == kite_tag(signal_id)


def test_zerodha_tags_differ_for_ids_that_differ_only_in_punctuation():
    ids = ("sig_1_2", "sig-1-2", "sig12", "sig_12")
    assert len({kite_tag(signal_id) for signal_id in ids}) == len(ids)


def test_zerodha_tag_is_stable_across_processes():
    """Given two interpreters with different hash seeds, then the tag is the same (hashlib)."""
    code = "from brokers.zerodha_mapping import kite_tag; print(kite_tag('x' * 40 + '_long'))"
    tags = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT),
                                                   "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert tags == {kite_tag("x" * 40 + "_long")}


# --- statuses --------------------------------------------------------------------------------

NON_TERMINAL = {
    "PUT ORDER REQ RECEIVED": BrokerStatus.PENDING,
    "VALIDATION PENDING": BrokerStatus.PENDING,
    "OPEN PENDING": BrokerStatus.PENDING,
    "AMO REQ RECEIVED": BrokerStatus.PENDING,
    "A STATUS KITE ADDS LATER": BrokerStatus.PENDING,
    "OPEN": BrokerStatus.WORKING,
    "TRIGGER PENDING": BrokerStatus.WORKING,
    "MODIFY VALIDATION PENDING": BrokerStatus.WORKING,
    "MODIFY PENDING": BrokerStatus.WORKING,
    "MODIFIED": BrokerStatus.WORKING,
    "CANCEL PENDING": BrokerStatus.WORKING,
}


@pytest.mark.asyncio
@pytest.mark.parametrize("kite_status, expected", NON_TERMINAL.items(), ids=NON_TERMINAL)
async def test_zerodha_pending_statuses_are_never_terminal(fake, kite_status, expected):
    broker = make_broker(fake)
    order_id = await placed(fake, broker)
    fake.set_status(order_id, kite_status)

    snapshot = await broker.get_order(order_id)

    assert snapshot.status == expected
    assert snapshot.extra["kite_status"] == kite_status
    assert snapshot.fills == () and snapshot.reason is None


@pytest.mark.asyncio
async def test_zerodha_partial_fill_is_working_with_its_trade(fake):
    broker = make_broker(fake)
    order_id = await placed(fake, broker, order_type="LIMIT", limit_price=1500.0)
    trade = fake.fill(order_id, 4, 1499.5)

    snapshot = await broker.get_order(order_id)

    assert snapshot.status == BrokerStatus.WORKING
    assert [(f.exec_id, f.quantity, f.price) for f in snapshot.fills] == [
        (f"{order_id}/{trade['trade_id']}", 4, 1499.5)]
    assert snapshot.fills[0].at.utcoffset().total_seconds() == 0
    assert snapshot.signal_id == SIGNAL


@pytest.mark.asyncio
async def test_zerodha_complete_is_filled_with_every_trade_and_stable_exec_ids(fake):
    """Given two executions, when polled twice and from a fresh adapter, then FILLED with
    the same two fills (exec ids from Kite trade ids) every time."""
    broker = make_broker(fake)
    order_id = await placed(fake, broker)
    fake.fill(order_id, 4, 100.0)
    fake.fill(order_id, 6, 101.0)

    first = await broker.get_order(order_id)
    again = await broker.get_order(order_id)
    fresh = await make_broker(fake).get_order(order_id)

    assert first.status == BrokerStatus.FILLED
    assert first.filled_quantity == 10 and first.extra["average_price"] == pytest.approx(100.6)
    assert [f.price for f in first.fills] == [100.0, 101.0]
    assert first.fills == again.fills == fresh.fills
    assert len({f.exec_id for f in first.fills}) == 2


@pytest.mark.asyncio
async def test_zerodha_complete_before_the_trade_book_catches_up_stays_working(fake):
    broker = make_broker(fake)
    order_id = await placed(fake, broker)
    fake.fill(order_id, 10, in_trade_book=False)

    early = await broker.get_order(order_id)
    fake.release_trades(order_id)
    late = await broker.get_order(order_id)

    assert (early.status, early.extra["awaiting_trades"]) == (BrokerStatus.WORKING, True)
    assert (late.status, late.filled_quantity) == (BrokerStatus.FILLED, 10)


@pytest.mark.asyncio
async def test_zerodha_rejected_carries_the_status_message(fake):
    broker = make_broker(fake)
    order_id = await placed(fake, broker)
    fake.reject(order_id, "Insufficient funds. Required margin is 15000.00")

    snapshot = await broker.get_order(order_id)

    assert snapshot.status == BrokerStatus.REJECTED
    assert snapshot.reason == "Insufficient funds. Required margin is 15000.00"


@pytest.mark.asyncio
async def test_zerodha_cancelled_keeps_the_filled_part(fake):
    broker = make_broker(fake)
    order_id = await placed(fake, broker, time_in_force="IOC")
    fake.fill(order_id, 3, 100.0)
    fake.cancel(order_id)

    snapshot = await broker.get_order(order_id)

    assert snapshot.status == BrokerStatus.CANCELLED
    assert snapshot.filled_quantity == 3


@pytest.mark.asyncio
async def test_zerodha_unknown_order_is_not_found(fake):
    with pytest.raises(OrderNotFound):
        await make_broker(fake).get_order("999")


# --- cancel ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_zerodha_cancel_shows_in_a_later_get_order(fake):
    fake.hold_cancels = True
    broker = make_broker(fake)
    order_id = await placed(fake, broker)

    await broker.cancel_order(order_id)
    pending = await broker.get_order(order_id)
    fake.confirm_cancel(order_id)
    done = await broker.get_order(order_id)

    assert ("DELETE", f"/orders/regular/{order_id}") in fake.requests
    assert (pending.status, pending.extra["kite_status"]) == (BrokerStatus.WORKING,
                                                              "CANCEL PENDING")
    assert done.status == BrokerStatus.CANCELLED


@pytest.mark.asyncio
async def test_zerodha_cancel_of_a_finished_order_is_a_no_op(fake):
    """Given a fill raced the cancel, when cancelling, then nothing is raised and get_order
    shows the order FILLED (as with the other adapters)."""
    broker = make_broker(fake)
    order_id = await placed(fake, broker)
    fake.fill(order_id, 10)

    await broker.cancel_order(order_id)

    assert (await broker.get_order(order_id)).status == BrokerStatus.FILLED


@pytest.mark.asyncio
async def test_zerodha_cancel_refused_while_live_is_transient_and_unknown_is_not_found(fake):
    broker = make_broker(fake)
    order_id = await placed(fake, broker)
    fake.fail_next("cancel", "InputException",
                   "Order cannot be cancelled as it is being processed. Try later.")

    with pytest.raises(TransientBrokerError, match="being processed"):
        await broker.cancel_order(order_id)
    with pytest.raises(OrderNotFound):
        await broker.cancel_order("999")


# --- errors ----------------------------------------------------------------------------------

PLACE_ERRORS = {
    "input": ("InputException", 400, OrderRejected),
    "order": ("OrderException", 400, OrderRejected),
    "order 500": ("OrderException", 500, OrderRejected),
    "permission": ("PermissionException", 403, OrderRejected),
    "margin (a GeneralException 400 in the client)": ("MarginException", 400, OrderRejected),
    "rate limit as NetworkException": ("NetworkException", 429, TransientBrokerError),
    "rate limit as GeneralException": ("GeneralException", 429, TransientBrokerError),
    "OMS unreachable": ("NetworkException", 503, PlacementUncertain),
    "OMS answer unreadable": ("DataException", 502, PlacementUncertain),
    "server error": ("GeneralException", 500, PlacementUncertain),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("error_type, status, expected", PLACE_ERRORS.values(), ids=PLACE_ERRORS)
async def test_zerodha_place_errors_translate(fake, error_type, status, expected):
    """Given Kite answers a placement with an error, then the caller gets the error class
    that says what to do: refused (never retry), try later, or look it up by tag."""
    fake.fail_next("place", error_type, f"{error_type} says no", status)

    with pytest.raises(expected) as raised:
        await make_broker(fake).place_order(order())

    assert len(fake.placements) == 1  # sent once, never retried by the adapter
    if expected is OrderRejected:
        assert raised.value.reason == f"{error_type} says no" and raised.value.alert is None


READ_ERRORS = {
    "OMS unreachable": ("NetworkException", 503, TransientBrokerError),
    "OMS answer unreadable": ("DataException", 502, TransientBrokerError),
    "server error": ("GeneralException", 500, TransientBrokerError),
    "rate limit": ("NetworkException", 429, TransientBrokerError),
    "bad order id": ("InputException", 400, OrderNotFound),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("error_type, status, expected", READ_ERRORS.values(), ids=READ_ERRORS)
async def test_zerodha_get_order_errors_translate(fake, error_type, status, expected):
    broker = make_broker(fake)
    order_id = await placed(fake, broker)
    fake.fail_next("history", error_type, "nope", status)

    with pytest.raises(expected):
        await broker.get_order(order_id)


@pytest.mark.asyncio
async def test_given_an_expired_kite_session_then_rejected_and_the_session_listener_told(fake):
    events: list[tuple[bool, str]] = []
    broker = make_broker(fake)
    broker.connection_listener = lambda connected, detail: events.append((connected, detail))
    expired: list[str] = []
    broker.session_listener = lambda: expired.append("expired")
    await broker.connect()
    fake.expire_session()

    with pytest.raises(OrderRejected) as raised:
        await broker.place_order(order())
    with pytest.raises(TransientBrokerError, match="kite login"):
        await broker.find_order(SIGNAL)
    assert broker.is_connected  # Kite answered: reachable, only the session is refused
    fake.access_token = ACCESS_TOKEN  # the operator renewed it
    broker.set_access_token(ACCESS_TOKEN)
    assert await broker.find_order(SIGNAL) is None

    assert SESSION_EXPIRED == "Kite session expired: run `execution-service kite login`"
    assert SESSION_EXPIRED in raised.value.reason and raised.value.alert is None
    assert fake.placements == []
    assert expired == ["expired", "expired"]  # the service halts once (tests/service)
    assert events == []  # not a connection loss: the session halt is the one alert
    assert broker.is_connected


@pytest.mark.asyncio
async def test_zerodha_unreachable_kite_is_transient_and_reported(fake):
    events: list[tuple[bool, str]] = []
    broker = make_broker(fake)
    broker.connection_listener = lambda connected, detail: events.append((connected, detail))
    await broker.connect()
    fake.stop()

    with pytest.raises(TransientBrokerError):
        await broker.place_order(order())  # connection refused: certainly not sent
    with pytest.raises(TransientBrokerError):
        await broker.get_order("1")

    assert not broker.is_connected
    assert [connected for connected, _ in events] == [False]


@pytest.mark.asyncio
async def test_zerodha_connection_dropped_while_placing_is_uncertain(fake):
    fake.drop_next_place()
    broker = make_broker(fake)

    with pytest.raises(PlacementUncertain):
        await broker.place_order(order())

    assert (await broker.find_order(SIGNAL)).order_id == fake.placements[0].order_id


@pytest.mark.asyncio
async def test_zerodha_timeout_while_placing_is_found_by_tag_without_a_second_order(fake):
    """Given Kite creates the order but answers too late, when placing, then
    PlacementUncertain; find_order(signal_id) finds that order; nothing was sent twice."""
    fake.hang_next_place(seconds=5)
    broker = make_broker(fake, request_timeout=0.3)

    with pytest.raises(PlacementUncertain):
        await broker.place_order(order())
    found = await broker.find_order(SIGNAL)

    assert len(fake.placements) == 1 and len(fake.orders) == 1
    assert found is not None and found.order_id == fake.placements[0].order_id
    assert (found.signal_id, found.status) == (SIGNAL, BrokerStatus.WORKING)


@pytest.mark.asyncio
async def test_zerodha_find_order_returns_the_newest_tagged_order_or_none(fake):
    broker = make_broker(fake)
    await placed(fake, broker, symbol="TCS")
    newer = await placed(fake, broker)
    fake.fill(newer, 10, 101.0)

    found = await broker.find_order(SIGNAL)

    assert (found.order_id, found.status, found.filled_quantity) == (newer, BrokerStatus.FILLED,
                                                                     10)
    assert await broker.find_order("sig_never_sent") is None


@pytest.mark.asyncio
async def test_zerodha_list_orders_reports_every_order_with_its_fills(fake):
    broker = make_broker(fake)
    first = await placed(fake, broker)
    second = await placed(fake, broker, signal_id="sig2")
    fake.fill(first, 10, 100.0)

    orders = {o.order_id: o for o in await broker.list_orders()}

    assert orders[first].status == BrokerStatus.FILLED and orders[first].filled_quantity == 10
    assert orders[second].status == BrokerStatus.WORKING and orders[second].signal_id == "sig2"


@pytest.mark.asyncio
async def test_zerodha_never_logs_the_api_key_or_access_token(fake, caplog):
    caplog.set_level(logging.DEBUG)
    broker = make_broker(fake)
    await broker.connect()
    order_id = await placed(fake, broker)
    await broker.get_order(order_id)
    fake.fail_next("place", "NetworkException", "Request failed (kitetrade-oms)")
    with pytest.raises(PlacementUncertain):
        await broker.place_order(order())
    fake.expire_session()
    with pytest.raises(OrderRejected):
        await broker.place_order(order())

    assert caplog.records
    assert API_KEY not in caplog.text and ACCESS_TOKEN not in caplog.text
    assert API_KEY not in repr(broker) and ACCESS_TOKEN not in repr(broker)


# --- rate limit ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_zerodha_rate_limit_spaces_order_requests_and_drops_none(fake):
    """Given 25 placements at once at 10/s, then all reach Kite and no 1-second window of
    arrivals (as the fake recorded them) holds more than 10."""
    broker = make_broker(fake, orders_per_second=10)

    results = await asyncio.gather(
        *(broker.place_order(order(signal_id=f"sig{i}")) for i in range(25)))

    arrivals = sorted(p.arrived for p in fake.placements)
    assert len(results) == len(arrivals) == 25
    assert all(later - earlier >= 1.0
               for earlier, later in zip(arrivals, arrivals[10:], strict=False))


@pytest.mark.asyncio
async def test_zerodha_rate_limiter_queues_in_order_on_a_fake_clock():
    """Given 2.5/s (a burst of 2) and instant requests, then they start in pairs one window
    apart."""
    now = [0.0]
    starts: list[float] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = OrderRateLimiter(2.5, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        async with limiter.slot():
            starts.append(now[0])

    window = 2 / 2.5 * OrderRateLimiter.HEADROOM
    assert starts == pytest.approx([0, 0, window, window, 2 * window, 2 * window])


@pytest.mark.asyncio
async def test_given_slow_requests_when_limited_then_the_window_counts_from_their_ends():
    """Given requests that take 0.4 s each (a slow network, a late worker thread) and a burst
    of 2, when a third comes, then it starts a window after the first one ENDED: Kite sees a
    request at some moment between its start and its end, so counting from the starts could
    let three arrive within one window."""
    now = [0.0]
    starts: list[float] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = OrderRateLimiter(2.5, clock=lambda: now[0], sleep=sleep)

    async def request() -> None:
        async with limiter.slot():
            starts.append(now[0])
            await sleep(0.4)

    await asyncio.gather(*(request() for _ in range(3)))

    window = 2 / 2.5 * OrderRateLimiter.HEADROOM
    assert starts[2] >= starts[0] + 0.4 + window - 1e-9


@pytest.mark.asyncio
async def test_given_a_failed_request_then_its_slot_ends_and_the_queue_moves_on():
    """Given a burst of 1 and a request that raises, then the next one still gets a slot one
    window after the failure (a failed call counts, and never blocks the queue)."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = OrderRateLimiter(1, clock=lambda: now[0], sleep=sleep)
    with pytest.raises(ConnectionError):
        async with limiter.slot():
            raise ConnectionError("Kite unreachable")
    async with limiter.slot():
        started = now[0]
    assert started == pytest.approx(OrderRateLimiter.HEADROOM)


# --- the contract harness and the factory ----------------------------------------------------


@pytest.mark.asyncio
async def test_zerodha_harness_fills_in_chunks_and_confirms_cancels():
    harness = ZerodhaHarness()
    broker = await harness.start(chunks=3)
    try:
        filled = (await broker.place_order(order(quantity=10))).order_id
        for _ in range(3):
            await harness.advance(filled)
        cancelled = (await broker.place_order(order(signal_id="sig_c", quantity=5))).order_id
        await harness.advance(cancelled)
        await broker.cancel_order(cancelled)
        before = await broker.get_order(cancelled)
        await harness.advance(cancelled)

        done = await broker.get_order(filled)
        assert done.status == BrokerStatus.FILLED
        assert [f.quantity for f in done.fills] == [3, 3, 4]
        assert before.status == BrokerStatus.WORKING
        after = await broker.get_order(cancelled)
        assert (after.status, after.filled_quantity) == (BrokerStatus.CANCELLED, 1)
    finally:
        await harness.stop()


@pytest.mark.asyncio
async def test_zerodha_harness_rejects_with_the_reason():
    harness = ZerodhaHarness()
    broker = await harness.start(reject_reason="Insufficient funds")
    try:
        order_id = (await broker.place_order(order())).order_id
        snapshot = await broker.get_order(order_id)
        assert (snapshot.status, snapshot.reason) == (BrokerStatus.REJECTED, "Insufficient funds")
    finally:
        await harness.stop()


def test_zerodha_factory_needs_kite_credentials():
    settings = load_settings(environ={})

    with pytest.raises(FatalConfigError,
                       match=r"ZERODHA accounts need KITE_API_KEY and a session: run "
                             r"`execution-service kite login` \(or set KITE_ACCESS_TOKEN\)"):
        BUILDERS["ZERODHA"](settings, None)


def test_zerodha_factory_builds_the_adapter_from_settings():
    settings = load_settings(environ={"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "t",
                                      "KITE_API_URL": "http://127.0.0.1:9",
                                      "KITE_ORDERS_PER_SECOND": "5"})

    broker = BUILDERS["ZERODHA"](settings, None)

    assert isinstance(broker, ZerodhaBroker) and broker.name == "ZERODHA"
    assert repr(broker) == "ZerodhaBroker(root='http://127.0.0.1:9')"


async def test_given_calls_from_several_worker_threads_then_no_session_is_shared(fake):
    """Given Kite calls run on worker threads; when two threads call; then each has a client
    (and requests.Session) of its own, kept for its later calls, all closed on close()."""
    import threading

    broker = make_broker(fake)
    seen: dict[int, set[int]] = {}
    barrier = threading.Barrier(2)

    def call_twice() -> None:
        barrier.wait()  # both threads are alive at once: two distinct threads
        for _ in range(2):
            broker._invoke("profile")
            seen.setdefault(threading.get_ident(), set()).add(id(broker._local.kite.reqsession))

    threads = [threading.Thread(target=call_twice) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sessions = [next(iter(ids)) for ids in seen.values()]
    assert len(seen) == 2 and all(len(ids) == 1 for ids in seen.values())
    assert len(set(sessions)) == 2 and len(broker._sessions) == 2
    await broker.close()
    assert broker._sessions == []


@pytest.mark.asyncio
async def test_zerodha_modify_puts_kite_modify_order_with_the_new_values(fake):
    """Given a resting SL order, when modified, then Kite's PUT /orders/regular/{id} carries the
    new quantity, limit (price) and stop (trigger_price), and the order book shows them."""
    broker = make_broker(fake)
    order_id = await placed(fake, broker, order_type="STOP_LIMIT", limit_price=1500.0,
                            stop_price=1490.0)

    await broker.modify_order(order_id, order(order_type="STOP_LIMIT", quantity=6,
                                              limit_price=1510.0, stop_price=1495.0))

    assert ("PUT", f"/orders/regular/{order_id}") in fake.requests
    [(modified_id, form)] = fake.modifications
    assert modified_id == order_id
    assert (form["quantity"], form["price"], form["trigger_price"], form["order_type"]) == (
        "6", "1510.0", "1495.0", "SL")
    current = await broker.get_order(order_id)
    assert current.quantity == 6 and current.status is BrokerStatus.WORKING


@pytest.mark.asyncio
async def test_zerodha_modify_refused_or_unreachable_translates(fake):
    broker = make_broker(fake)
    order_id = await placed(fake, broker, order_type="LIMIT", limit_price=1500.0)
    fake.fill(order_id, 10)
    with pytest.raises(OrderRejected, match="cannot be modified as it is complete"):
        await broker.modify_order(order_id, order(order_type="LIMIT", limit_price=1501.0))
    with pytest.raises(OrderNotFound):
        await broker.modify_order("999", order(order_type="LIMIT", limit_price=1501.0))
    fake.fail_next("modify", "NetworkException", "OMS busy", 503)
    other = await placed(fake, broker, signal_id="sig_z_2", order_type="LIMIT",
                         limit_price=1500.0)
    with pytest.raises(TransientBrokerError):
        await broker.modify_order(other, order(order_type="LIMIT", limit_price=1501.0))
