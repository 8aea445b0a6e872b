"""Pre-trade risk controls (issue 9): pure checks over a signal, an account and numbers."""

from __future__ import annotations

import pytest

from execution_service.domain.risk import (
    Exposure,
    RiskBreach,
    RiskSettings,
    collar_breach,
    first_breach,
    limits_from_row,
    net_exposure,
)
from execution_service.domain.signals import Signal

ACCOUNT = {"_id": "acc_1", "broker": "MOCK", "enabled": True}


def signal(**overrides) -> Signal:
    fields = {"signal_id": "sig_1", "account_id": "acc_1", "strategy_name": "Strat",
              "symbol": "SPY", "side": "BUY", "quantity": 100, "order_type": "MARKET",
              "reference_price": 100.0}
    fields.update(overrides)
    return Signal(**{key: value for key, value in fields.items() if value is not None})


def account(**limits) -> dict:
    return {**ACCOUNT, **limits}


def control(breach: RiskBreach | None) -> str | None:
    return None if breach is None else breach.control


# -- no limits -------------------------------------------------------------------------------


def test_given_an_account_without_limits_when_checked_then_any_order_passes():
    assert first_breach(signal(quantity=1_000_000), ACCOUNT) is None


def test_given_limits_set_to_none_when_checked_then_they_are_not_checked():
    limits = dict.fromkeys(("max_order_quantity", "max_order_notional",
                            "max_position_notional", "max_orders_per_minute"))
    assert first_breach(signal(quantity=10**6, reference_price=None), account(**limits)) is None


# -- halt ------------------------------------------------------------------------------------


def test_given_a_global_halt_when_checked_then_rejected_with_the_halt_reason():
    halt = {"_id": "global", "account_id": None, "reason": "fat finger on desk 3"}
    breach = first_breach(signal(), ACCOUNT, halt=halt)
    assert breach == RiskBreach("halt", "trading halted: fat finger on desk 3")


def test_given_an_account_halt_when_checked_then_the_reason_names_the_account():
    halt = {"_id": "account:acc_1", "account_id": "acc_1", "reason": "margin call"}
    breach = first_breach(signal(), ACCOUNT, halt=halt)
    assert breach.control == "halt"
    assert breach.reason.startswith("trading halted: margin call")
    assert "acc_1" in breach.reason


def test_given_a_halt_and_a_quantity_breach_then_the_halt_is_reported_first():
    halt = {"_id": "global", "account_id": None, "reason": "stop"}
    assert control(first_breach(signal(quantity=500), account(max_order_quantity=100),
                                halt=halt)) == "halt"


# -- max_order_quantity ----------------------------------------------------------------------


@pytest.mark.parametrize(("quantity", "expected"), [(99, None), (100, None),
                                                    (101, "max_order_quantity")])
def test_given_max_order_quantity_100_then_exactly_100_passes_and_101_fails(quantity, expected):
    assert control(first_breach(signal(quantity=quantity),
                                account(max_order_quantity=100))) == expected


def test_given_quantity_500_over_100_then_the_reason_names_limit_and_value():
    breach = first_breach(signal(quantity=500), account(max_order_quantity=100))
    assert breach.reason == "order quantity 500 exceeds max_order_quantity 100"


# -- max_order_notional ----------------------------------------------------------------------


def test_given_100_at_235_15_over_10000_then_the_reason_shows_both_notionals():
    breach = first_breach(signal(reference_price=235.15), account(max_order_notional=10_000))
    assert breach == RiskBreach("max_order_notional",
                                "order notional 23515.00 exceeds max_order_notional 10000.00")


@pytest.mark.parametrize(("quantity", "expected"), [(100, None), (101, "max_order_notional")])
def test_given_max_order_notional_10000_then_exactly_at_it_passes(quantity, expected):
    assert control(first_breach(signal(quantity=quantity, reference_price=100.0),
                                account(max_order_notional=10_000))) == expected


def test_given_float_noise_at_the_limit_then_it_still_passes():
    crypto = signal(quantity=30, reference_price=0.1, asset_class="CRYPTO")  # 3.0000000000000004
    assert first_breach(crypto, account(max_order_notional=3)) is None


@pytest.mark.parametrize(("overrides", "price"), [
    ({"order_type": "LIMIT", "limit_price": 101.0}, 101.0),
    ({"order_type": "STOP", "stop_price": 101.0}, 101.0),
    ({"order_type": "STOP_LIMIT", "stop_price": 101.0, "limit_price": 101.5}, 101.5),
    ({}, 100.0),
])
def test_given_an_order_then_notional_uses_limit_else_stop_else_reference(overrides, price):
    just_over = 100 * price - 0.01
    breach = first_breach(signal(**overrides), account(max_order_notional=just_over))
    assert breach.reason == (f"order notional {100 * price:.2f} exceeds max_order_notional "
                             f"{just_over:.2f}")
    assert first_breach(signal(**overrides), account(max_order_notional=100 * price)) is None


def test_given_a_market_order_without_a_price_when_a_notional_limit_is_set_then_rejected():
    breach = first_breach(signal(reference_price=None), account(max_order_notional=10_000))
    assert breach.control == "max_order_notional"
    assert breach.reason.startswith("cannot check max_order_notional without a price")


def test_given_a_market_order_without_a_price_and_no_notional_limits_then_it_passes():
    assert first_breach(signal(reference_price=None), account(max_order_quantity=100)) is None


# -- max_position_notional -------------------------------------------------------------------


def test_given_long_200_when_buying_100_at_100_over_25000_then_rejected_with_the_total():
    breach = first_breach(signal(), account(max_position_notional=25_000),
                          exposure=Exposure(200, 95.0))
    assert breach == RiskBreach("max_position_notional", "position notional 30000.00 would "
                                                         "exceed max_position_notional 25000.00 "
                                                         "(position 200 + this order 100)")


@pytest.mark.parametrize(("held", "expected"), [(150, None), (151, "max_position_notional")])
def test_given_max_position_notional_25000_then_exactly_at_it_passes(held, expected):
    assert control(first_breach(signal(), account(max_position_notional=25_000),
                                exposure=Exposure(held))) == expected


def test_given_short_300_when_buying_100_then_the_order_reduces_risk_and_passes():
    assert first_breach(signal(), account(max_position_notional=1_000),
                        exposure=Exposure(-300)) is None


def test_given_long_100_when_selling_400_then_short_300_is_checked():
    breach = first_breach(signal(side="SELL", quantity=400), account(max_position_notional=25_000),
                          exposure=Exposure(100))
    assert breach.reason.startswith("position notional 30000.00 would exceed")


def test_given_no_position_then_the_order_alone_counts():
    assert control(first_breach(signal(quantity=300), account(max_position_notional=25_000))) \
        == "max_position_notional"


def test_given_no_price_when_a_position_limit_is_set_then_rejected():
    breach = first_breach(signal(reference_price=None), account(max_position_notional=25_000))
    assert breach.control == "max_position_notional"
    assert breach.reason.startswith("cannot check max_position_notional without a price")


def test_given_positions_of_two_strategies_and_both_sides_then_they_net():
    docs = [{"side": "LONG", "quantity": 300, "avg_entry_price": 100.0, "strategy_name": "A"},
            {"side": "SHORT", "quantity": 100, "avg_entry_price": 110.0, "strategy_name": "B"}]
    exposure = net_exposure(docs)
    assert exposure.net_quantity == 200
    assert exposure.avg_price == pytest.approx(102.5)
    assert net_exposure([]) == Exposure(0.0, None)


# -- max_orders_per_minute -------------------------------------------------------------------


@pytest.mark.parametrize(("before", "expected"), [(0, None), (2, None),
                                                  (3, "max_orders_per_minute")])
def test_given_limit_3_then_the_third_order_passes_and_the_fourth_fails(before, expected):
    assert control(first_breach(signal(), account(max_orders_per_minute=3),
                                orders_last_minute=before)) == expected


def test_given_3_orders_in_the_minute_then_the_reason_names_count_and_limit():
    breach = first_breach(signal(), account(max_orders_per_minute=3), orders_last_minute=3)
    assert breach.reason == "orders in the last minute 3 reached max_orders_per_minute 3"


# -- price collar ----------------------------------------------------------------------------


def test_given_a_buy_limit_30_pct_above_reference_then_the_reason_names_the_collar():
    breach = first_breach(signal(order_type="LIMIT", limit_price=130.0), ACCOUNT)
    assert breach == RiskBreach("price_collar", "limit_price 130.00 is 30.0% above "
                                                "reference_price 100.00 for a BUY, beyond the "
                                                "10% price collar")


@pytest.mark.parametrize("overrides", [
    {"order_type": "LIMIT", "limit_price": 110.0},
    {"order_type": "LIMIT", "side": "SELL", "limit_price": 90.0},
    {"order_type": "STOP", "stop_price": 110.0},
    {"order_type": "STOP", "side": "SELL", "stop_price": 90.0},
    {"order_type": "STOP_LIMIT", "stop_price": 100.5, "limit_price": 110.55},
    {"order_type": "LIMIT", "limit_price": 70.0},
    {"order_type": "LIMIT", "side": "SELL", "limit_price": 130.0},
    {"order_type": "STOP", "stop_price": 150.0},
    {"order_type": "STOP", "side": "SELL", "stop_price": 50.0},
    {"order_type": "STOP_LIMIT", "stop_price": 150.0, "limit_price": 120.0},
], ids=["buy-at-band", "sell-at-band", "buy-stop-above", "sell-stop-below", "stop-limit-at-band",
        "bid-30-under", "offer-30-over", "buy-stop-far", "sell-stop-far", "stop-limit-passive"])
def test_given_prices_at_the_band_or_passive_however_far_then_they_pass(overrides):
    """Given an aggressive price exactly at the band, or a bid 30% under the market (an offer
    above, a stop far away), when checked, then it passes: the collar stops aggressive prices
    only."""
    assert first_breach(signal(**overrides), ACCOUNT) is None


@pytest.mark.parametrize(("overrides", "price"), [
    ({"order_type": "LIMIT", "limit_price": 110.01}, "110.01 is 10.0% above reference_price"),
    ({"order_type": "LIMIT", "side": "SELL", "limit_price": 89.99},
     "89.99 is 10.0% below reference_price"),
    ({"order_type": "STOP_LIMIT", "stop_price": 100.5, "limit_price": 111.0},
     "111.00 is 10.4% above stop_price 100.50"),
    ({"order_type": "STOP_LIMIT", "side": "SELL", "stop_price": 99.0, "limit_price": 80.0},
     "80.00 is 19.2% below stop_price 99.00"),
])
def test_given_a_limit_through_the_market_beyond_the_collar_then_limit_price_is_named(
        overrides, price):
    breach = first_breach(signal(**overrides), ACCOUNT)
    assert breach.control == "price_collar"
    assert breach.reason.startswith(f"limit_price {price}")
    assert breach.reason.endswith("beyond the 10% price collar")


@pytest.mark.parametrize(("overrides", "where"), [
    ({"order_type": "STOP", "stop_price": 99.0}, "99.00 is at or below"),
    ({"order_type": "STOP", "stop_price": 100.0}, "100.00 is at or below"),
    ({"order_type": "STOP", "side": "SELL", "stop_price": 101.0}, "101.00 is at or above"),
    ({"order_type": "STOP_LIMIT", "stop_price": 90.0, "limit_price": 91.0}, "90.00 is at or "
                                                                             "below"),
])
def test_given_a_stop_on_the_wrong_side_of_the_market_then_stop_price_is_named(overrides, where):
    """Given a stop that would trigger at once, then it is rejected naming stop_price, whatever
    the collar setting."""
    for settings in (RiskSettings(), RiskSettings(collar_pct=None)):
        breach = first_breach(signal(**overrides), ACCOUNT, settings=settings)
        assert breach.control == "price_collar"
        assert breach.reason.startswith(f"stop_price {where} the market")
        assert breach.reason.endswith("would trigger at once")


def test_given_no_reference_price_then_the_collar_is_not_checked():
    assert first_breach(signal(order_type="LIMIT", limit_price=500.0, reference_price=None),
                        ACCOUNT) is None


def test_given_a_market_order_then_the_collar_does_not_apply():
    assert collar_breach(signal(), 10.0) is None


def test_given_a_configured_collar_then_it_is_used_and_none_disables_it():
    wide = signal(order_type="LIMIT", limit_price=130.0)
    assert first_breach(wide, ACCOUNT, settings=RiskSettings(collar_pct=30)) is None
    assert first_breach(wide, ACCOUNT, settings=RiskSettings(collar_pct=None)) is None
    breach = first_breach(wide, ACCOUNT, settings=RiskSettings(collar_pct=2.5))
    assert breach.reason.endswith("beyond the 2.5% price collar")


# -- order of controls -----------------------------------------------------------------------


def test_given_every_control_failing_then_they_are_reported_in_order():
    order = signal(quantity=500, order_type="LIMIT", limit_price=200.0)
    limits = {"max_order_quantity": 100, "max_order_notional": 10_000,
              "max_position_notional": 25_000, "max_orders_per_minute": 3}
    seen = []
    while True:
        breach = first_breach(order, account(**limits), orders_last_minute=3)
        if breach is None or breach.control not in limits:
            break
        seen.append(breach.control)
        limits.pop(breach.control)
    assert seen == ["max_order_quantity", "max_order_notional", "max_position_notional",
                    "max_orders_per_minute"]
    assert control(breach) == "price_collar"


def test_given_a_stored_limit_that_is_not_a_number_then_the_order_is_refused():
    breach = first_breach(signal(), account(max_order_quantity="lots"))
    assert breach.control == "max_order_quantity"
    assert "'lots'" in breach.reason


# -- limits_from_row -------------------------------------------------------------------------


def test_given_a_row_with_limits_then_they_come_back_typed():
    row = {"account_id": "acc_1", "max_order_quantity": 100.0, "max_order_notional": 10_000,
           "max_position_notional": 2.5e4, "max_orders_per_minute": 3, "broker": "MOCK"}
    limits = limits_from_row(row)
    assert limits == {"max_order_quantity": 100, "max_order_notional": 10_000.0,
                      "max_position_notional": 25_000.0, "max_orders_per_minute": 3}
    assert isinstance(limits["max_order_quantity"], int)
    assert limits_from_row({"account_id": "acc_1"}) == {}
    assert limits_from_row({"max_order_notional": None}) == {"max_order_notional": None}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_order_quantity", 0, "max_order_quantity must be a positive whole number, got 0"),
    ("max_order_quantity", 1.5, "max_order_quantity must be a positive whole number, got 1.5"),
    ("max_orders_per_minute", -1, "max_orders_per_minute must be a positive whole number"),
    ("max_order_notional", "10000", "max_order_notional must be a positive number, got '10000'"),
    ("max_position_notional", True, "max_position_notional must be a positive number"),
    ("max_position_notional", float("inf"), "max_position_notional must be a positive number"),
    ("max_order_notional", -5.0, "max_order_notional must be a positive number, got -5.0"),
])
def test_given_a_bad_limit_then_value_error_names_field_and_value(field, value, message):
    with pytest.raises(ValueError) as raised:
        limits_from_row({"account_id": "acc_1", field: value})
    assert str(raised.value).startswith(message)
