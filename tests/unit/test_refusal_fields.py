"""Every refusal names the field it is about, so an HTTP caller gets it as data (issue 21)."""

from __future__ import annotations

import json

import pytest

from execution_service.domain.accounts import check_account
from execution_service.domain.signals import Invalid, Problem, Unusable, parse_signal

VALID = {"signal_id": "sig_1", "account_id": "acc_1", "strategy_name": "S", "symbol": "SPY",
         "side": "BUY", "quantity": 10, "order_type": "MARKET", "reference_price": 100.0}


def fields_of(**changes) -> list[str | None]:
    parsed = parse_signal(json.dumps({**VALID, **changes}).encode())
    assert isinstance(parsed, Invalid), parsed
    assert parsed.reason == "; ".join(p.message for p in parsed.problems)
    return [problem.field for problem in parsed.problems]


@pytest.mark.parametrize(("changes", "fields"), [
    ({"quantity": 0}, ["quantity"]),
    ({"quantity": 1.5}, ["quantity"]),
    ({"quantity": 1e10}, ["quantity"]),
    ({"side": "HOLD", "symbol": ""}, ["symbol", "side"]),
    ({"order_type": "LIMIT"}, ["limit_price"]),
    ({"order_type": "STOP"}, ["stop_price"]),
    ({"stop_loss": 120.0}, ["stop_loss"]),
    ({"take_profit": 90.0}, ["take_profit"]),
    ({"limit_price": 2e9, "order_type": "LIMIT"}, ["limit_price"]),
    ({"account_id": None}, ["account_id"]),
    ({"symbol": {"$gt": ""}}, ["symbol.$gt"]),
])
def test_given_a_bad_field_then_the_problem_names_it(changes, fields):
    assert fields_of(**changes) == fields


def test_given_no_usable_signal_id_or_no_json_then_unusable_says_which():
    missing = parse_signal(json.dumps({"symbol": "SPY"}).encode())
    assert isinstance(missing, Unusable) and missing.problems[0].field == "signal_id"
    broken = parse_signal(b"{nope")
    assert isinstance(broken, Unusable) and broken.problems == (Problem(None, broken.reason),)


def test_given_an_account_problem_then_account_id_or_symbol_is_named():
    signal = parse_signal(json.dumps(VALID).encode())
    assert check_account(signal, None).field == "account_id"
    assert check_account(signal, {"enabled": False}).field == "account_id"
    assert check_account(signal, {"allowed_symbols": ["QQQ"]}).field == "symbol"
    assert check_account(signal, {"allowed_symbols": ["SPY"]}) is None
