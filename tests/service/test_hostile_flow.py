"""Hostile bodies and the risk limits through the real wiring, fakes at the edges (issue 14)."""

from __future__ import annotations

import asyncio

import pytest

from execution_service.config import load_settings
from execution_service.errors import FatalConfigError
from execution_service.service.processor import Action
from tests.fakes.service_fakes import FlakyStore, make_app, order_body, settle


def deep_body(signal_id: bytes | None, levels: int = 800) -> bytes:
    head = b'{"signal_id": "' + signal_id + b'", "x": ' if signal_id else b'{"x": '
    return head + b"[" * levels + b"]" * levels + b"}"


async def test_given_a_body_nested_800_deep_then_a_rejected_record_with_the_reason():
    """Given a body nested 800 deep with a readable signal_id, when handled, then it is acked
    with a REJECTED record, confirmation and notice naming the limit, and nothing raised."""
    app, publisher = make_app()
    outcome = app.processor.handle(deep_body(b"sig_deep"))
    assert outcome.action is Action.ACK
    await settle(app)
    record = app.store.get_record("sig_deep")
    assert record["status"] == "REJECTED"
    assert record["reject_reason"].startswith("body nests deeper than 32 levels")
    assert publisher.statuses("sig_deep") == ["REJECTED"]
    assert app.notifier.kinds() == ["REJECTED"]


async def test_given_a_deep_body_without_signal_id_then_dead_lettered_with_the_reason():
    app, _ = make_app()
    outcome = app.processor.handle(deep_body(None))
    assert outcome.action is Action.DEAD_LETTER
    assert outcome.reason.startswith("body nests deeper than 32 levels")


async def test_given_the_store_down_when_a_deep_body_arrives_then_held_then_recorded():
    """Fault: the store fails right when the rejection is written: held, never lost."""
    app, _ = make_app(store_class=FlakyStore)
    app.store.down = True
    assert app.processor.handle(deep_body(b"sig_deep")).action is Action.HOLD
    app.store.down = False
    assert app.processor.handle(deep_body(b"sig_deep")).action is Action.ACK
    await settle(app)
    assert app.store.get_record("sig_deep")["status"] == "REJECTED"


async def test_given_a_nul_in_a_key_then_the_record_is_stored_without_it():
    app, _ = make_app()
    body = order_body()[:-1] + b', "bad\\u0000key": 1, "meta": {"$gt": ""}}'
    assert app.processor.handle(body).action is Action.ACK
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["reject_reason"] == "field name 'bad\\x00key' contains U+0000 NULL"
    assert record["symbol"] == "SPY" and "bad\x00key" not in record


async def test_given_a_crypto_quantity_of_1e_12_then_rejected_not_left_submitted():
    app, _ = make_app()
    app.processor.handle(order_body(quantity=1e-12, asset_class="CRYPTO", symbol="BTC-USD"))
    await settle(app)
    record = app.store.get_record("sig_1")
    assert record["status"] == "REJECTED"
    assert record["reject_reason"] == ("quantity 1e-12 is below the CRYPTO minimum increment "
                                       "0.00000001")


async def test_given_resting_bids_then_they_count_toward_the_position_limit():
    """Given a 30,000 position limit and a resting bid of 23,000 (working at the mock broker),
    when a second bid of 23,000 arrives, then it is rejected by max_position_notional; a bid
    far below the market rests while a bid far above it is rejected by the collar."""
    app, _ = make_app(accounts=[{"_id": "acc_1", "broker": "MOCK", "enabled": True,
                                 "max_position_notional": 30_000}],
                      env={"ORDER_TIMEOUT_SECONDS": "30"})
    resting = {"order_type": "LIMIT", "limit_price": 230.0, "reference_price": 235.0}
    app.processor.handle(order_body(signal_id="bid_1", quantity=100, **resting))
    outcome = app.processor.handle(order_body(signal_id="bid_2", quantity=100, **resting))
    assert outcome.action is Action.ACK
    assert app.store.get_record("bid_2")["reject_reason"] == (
        "position notional 46000.00 would exceed max_position_notional 30000.00 "
        "(position 0 + working orders 100 + this order 100)")
    passive = {"order_type": "LIMIT", "limit_price": 50.0, "reference_price": 235.0}
    app.processor.handle(order_body(signal_id="far_bid", symbol="QQQ", quantity=10, **passive))
    aggressive = {"order_type": "LIMIT", "limit_price": 400.0, "reference_price": 235.0}
    app.processor.handle(order_body(signal_id="far_lift", symbol="IWM", quantity=10,
                                    **aggressive))
    assert app.store.get_record("far_lift")["reject_reason"].startswith(
        "limit_price 400.00 is 70.2% above reference_price 235.00 for a BUY")
    for _ in range(500):  # a condition with a deadline, not a fixed wait
        if app.store.get_record("far_bid")["status"] != "PENDING":
            break
        await asyncio.sleep(0.01)
    assert app.store.get_record("far_bid")["status"] == "SUBMITTED"
    assert app.store.get_record("bid_1")["status"] == "SUBMITTED"
    await app.tracker.stop()


@pytest.mark.parametrize(("name", "value"), [("MAX_MESSAGE_BYTES", "abc"),
                                             ("MAX_MESSAGE_BYTES", "20000000"),
                                             ("MAX_MESSAGE_DEPTH", "0")])
def test_given_a_bad_limit_setting_then_one_line_names_the_variable(name, value):
    with pytest.raises(FatalConfigError) as error:
        load_settings(environ={name: value})
    assert name in str(error.value) and "\n" not in str(error.value)
