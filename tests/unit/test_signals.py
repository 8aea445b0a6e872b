"""Inbound validation (SPEC §3) and the account checks (SPEC §2.5).

Each rule gets a case; a rejection's reason must name the field and the rule broken.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from execution_service.domain.accounts import account_problem
from execution_service.domain.signals import AssetClass, Invalid, Signal, Unusable, parse_signal

SPEC_EXAMPLE = {
    "signal_id": "sig_1732450800_5678",
    "order_type": "MARKET",
    "symbol": "SPY",
    "side": "BUY",
    "quantity": 100,
    "account_id": "acc_abc123",
    "strategy_name": "SPX 1-Day Options",
    "stop_loss": 230.00,
    "take_profit": 240.00,
}
DROP = object()


def body(**changes) -> bytes:
    """The SPEC example with fields changed (or removed with DROP)."""
    message = dict(SPEC_EXAMPLE)
    for key, value in changes.items():
        if value is DROP:
            message.pop(key, None)
        else:
            message[key] = value
    return json.dumps(message).encode()


def accepted(**changes) -> Signal:
    parsed = parse_signal(body(**changes))
    assert isinstance(parsed, Signal), parsed
    return parsed


def rejected(**changes) -> Invalid:
    parsed = parse_signal(body(**changes))
    assert isinstance(parsed, Invalid), parsed
    assert parsed.signal_id == SPEC_EXAMPLE["signal_id"]
    return parsed


# -- the spec example -----------------------------------------------------------------------


def test_given_the_spec_example_then_it_is_a_signal_with_the_defaults():
    signal = accepted()
    assert signal.signal_id == "sig_1732450800_5678"
    assert (signal.side, signal.quantity, signal.order_type) == ("BUY", 100, "MARKET")
    assert (signal.stop_loss, signal.take_profit) == (230.0, 240.0)
    assert signal.time_in_force == "DAY"
    assert signal.asset_class is AssetClass.EQUITY
    assert signal.limit_price is None and signal.stop_price is None
    assert signal.extra_fields == {}


# -- one case per rule ----------------------------------------------------------------------

REQUIRED = ["account_id", "strategy_name", "symbol", "side", "quantity", "order_type"]


@pytest.mark.parametrize("field", REQUIRED)
def test_given_a_required_field_missing_then_it_is_rejected_as_required(field):
    assert rejected(**{field: DROP}).reason == f"{field} is required"


@pytest.mark.parametrize("field", ["account_id", "strategy_name", "symbol"])
def test_given_a_text_field_that_is_not_a_string_then_the_reason_says_it_must_be_a_string(field):
    assert rejected(**{field: 123}).reason == f"{field} must be a string, got 123"


@pytest.mark.parametrize(
    ("value", "shown"), [("100", "'100'"), (True, "true"), ([1], "a list"), ({"n": 1}, "an object")]
)
def test_given_a_quantity_that_is_not_a_number_then_the_reason_says_it_must_be_a_number(
    value, shown
):
    assert rejected(quantity=value).reason == f"quantity must be a number, got {shown}"


@pytest.mark.parametrize("field", ["account_id", "strategy_name", "symbol"])
@pytest.mark.parametrize("value", ["", "   "], ids=["empty", "blank"])
def test_given_an_empty_or_blank_text_field_then_it_is_rejected(field, value):
    reason = rejected(**{field: value}).reason
    assert reason in (f"{field} must not be empty", f"{field} must not be blank")


# signal_id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signal_id", ["a", "x" * 128, "sig_1732450800_5678", "A-z.0:9_-", "strategy:spx.1d-42"]
)
def test_given_a_signal_id_of_the_allowed_charset_and_length_then_it_is_accepted(signal_id):
    assert accepted(signal_id=signal_id).signal_id == signal_id


@pytest.mark.parametrize(
    "signal_id",
    ["x" * 129, "", "has space", "sig/1", "sig$1", "sïg", "sig\n1", "sig{1}"],
    ids=["129-chars", "empty", "space", "slash", "dollar", "non-ascii", "newline", "braces"],
)
def test_given_a_signal_id_outside_the_rule_then_the_message_is_unusable_naming_signal_id(
    signal_id,
):
    parsed = parse_signal(body(signal_id=signal_id))
    assert isinstance(parsed, Unusable)
    assert parsed.reason.startswith("signal_id invalid")
    assert "1-128 characters" in parsed.reason


@pytest.mark.parametrize(
    "value",
    [DROP, None, 42, ["sig_1"], {"id": "sig_1"}],
    ids=["missing", "null", "number", "list", "object"],
)
def test_given_no_string_signal_id_then_the_message_is_unusable(value):
    parsed = parse_signal(body(signal_id=value))
    assert isinstance(parsed, Unusable)
    assert parsed.reason.startswith("signal_id ")


def test_given_a_missing_signal_id_then_the_reason_says_missing():
    assert parse_signal(body(signal_id=DROP)).reason.startswith("signal_id missing")


# strategy_name ---------------------------------------------------------------------------


def test_given_a_strategy_name_of_200_characters_then_it_is_accepted():
    assert accepted(strategy_name="s" * 200).strategy_name == "s" * 200


def test_given_a_strategy_name_of_201_characters_then_it_is_rejected_naming_the_limit():
    assert (
        rejected(strategy_name="s" * 201).reason
        == "strategy_name must be at most 200 characters, got 201"
    )


# symbol ----------------------------------------------------------------------------------


def test_given_a_symbol_of_64_characters_then_it_is_accepted():
    assert accepted(symbol="S" * 64).symbol == "S" * 64


def test_given_a_symbol_of_65_characters_then_it_is_rejected_naming_the_limit():
    assert rejected(symbol="S" * 65).reason == "symbol must be at most 64 characters, got 65"


@pytest.mark.parametrize(
    ("symbol", "named"),
    [("$SPY", "U+0024 DOLLAR SIGN"), ("SP$Y", "U+0024 DOLLAR SIGN"), ("SPY\x00", "U+0000 NULL"),
     ("SPY\n", "U+000A LINE FEED"), ("S\tPY", "U+0009 CHARACTER TABULATION"),
     ("SPY\x1b[2J", "U+001B ESCAPE"), ("SPY\x7f", "U+007F DELETE")],
    ids=["leading-dollar", "dollar", "nul", "newline", "tab", "escape", "del"],
)
def test_given_a_symbol_with_a_dollar_or_control_character_then_it_is_rejected(symbol, named):
    """Given a symbol with '$' or a control character, then the reason names the field and
    the character."""
    assert rejected(symbol=symbol).reason.startswith(f"symbol contains {named}")


@pytest.mark.parametrize("symbol", ["SPY\x85", "SPY\x9b2J"], ids=["NEL", "CSI"])
def test_given_a_symbol_with_a_c1_control_character_then_it_is_rejected(symbol):
    reason = rejected(symbol=symbol).reason
    assert reason == f"symbol contains U+{ord(symbol[3]):04X} " + (
        "NEXT LINE" if symbol[3] == "\x85" else "CONTROL CHARACTER")


@pytest.mark.parametrize("symbol", ["BRK.B", "RELIANCE-EQ", "BTC/USD", "ES=F", "NIFTY24NOVFUT"])
def test_given_ordinary_symbols_with_punctuation_then_they_are_accepted(symbol):
    assert accepted(symbol=symbol).symbol == symbol


# side ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_side", "stored"),
    [
        ("BUY", "BUY"),
        ("buy", "BUY"),
        ("Buy", "BUY"),
        ("SELL", "SELL"),
        ("sell", "SELL"),
        (" sell ", "SELL"),
    ],
)
def test_given_a_side_in_any_case_then_it_is_stored_upper_case(given_side, stored):
    signal = accepted(side=given_side, stop_loss=DROP, take_profit=DROP)
    assert signal.side == stored


@pytest.mark.parametrize(("side", "shown"), [("HOLD", "'HOLD'"), ("short", "'SHORT'"), (1, "1")])
def test_given_a_side_other_than_buy_or_sell_then_it_is_rejected_listing_both(side, shown):
    assert rejected(side=side).reason == f"side must be one of 'BUY' or 'SELL', got {shown}"


# quantity --------------------------------------------------------------------------------


@pytest.mark.parametrize(("quantity", "shown"), [(0, "0"), (-5, "-5"), (-0.5, "-0.5")])
def test_given_a_quantity_not_above_zero_then_it_is_rejected_naming_the_rule(quantity, shown):
    assert rejected(quantity=quantity).reason == f"quantity must be > 0, got {shown}"


def test_given_an_overflowing_quantity_then_it_is_rejected_as_not_finite():
    parsed = parse_signal(body().replace(b'"quantity": 100', b'"quantity": 1e400'))
    assert isinstance(parsed, Invalid)
    assert parsed.reason == "quantity must be a finite number, got 1e400"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_given_a_nan_or_infinite_quantity_then_the_message_is_never_accepted(literal):
    parsed = parse_signal(body().replace(b'"quantity": 100', b'"quantity": ' + literal))
    assert not isinstance(parsed, Signal)
    assert "quantity must be a finite number" in parsed.reason


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity"])
def test_given_a_nan_or_infinite_quantity_then_it_is_a_recorded_rejection_naming_quantity(literal):
    parsed = parse_signal(body().replace(b'"quantity": 100', b'"quantity": ' + literal))
    assert isinstance(parsed, Invalid)
    assert parsed.reason.startswith("quantity must be a finite number")


@pytest.mark.parametrize("asset_class", [DROP, "EQUITY", "OPTION", "FUTURE"])
def test_given_a_fractional_quantity_for_a_whole_unit_asset_then_it_is_rejected(asset_class):
    reason = rejected(quantity=1.5, asset_class=asset_class).reason
    shown = "EQUITY" if asset_class is DROP else asset_class
    assert reason == (
        f"quantity must be a whole number for {shown} (fractions only for CRYPTO or FOREX), got 1.5"
    )


def test_given_a_tiny_fractional_equity_quantity_then_it_is_rejected_as_not_whole():
    rejected(quantity=1e-10, stop_loss=DROP, take_profit=DROP)


@pytest.mark.parametrize("asset_class", ["CRYPTO", "FOREX", "crypto"])
def test_given_a_fractional_quantity_for_crypto_or_forex_then_it_is_accepted(asset_class):
    signal = accepted(quantity=0.015, asset_class=asset_class)
    assert signal.quantity == 0.015
    assert signal.asset_class == asset_class.upper()


def test_given_a_whole_quantity_written_as_a_float_then_it_is_accepted():
    assert accepted(quantity=100.0).quantity == 100


# order_type ------------------------------------------------------------------------------


@pytest.mark.parametrize("order_type", ["MARKET", "market"])
def test_given_a_market_order_then_no_price_is_needed(order_type):
    assert accepted(order_type=order_type).order_type == "MARKET"


def test_given_an_unknown_order_type_then_it_is_rejected_listing_the_four():
    assert (
        rejected(order_type="TRAILING").reason
        == "order_type must be one of 'MARKET', 'LIMIT', 'STOP' or 'STOP_LIMIT', got 'TRAILING'"
    )


@pytest.mark.parametrize("order_type", ["LIMIT", "STOP_LIMIT"])
def test_given_a_limit_kind_of_order_without_limit_price_then_it_is_rejected(order_type):
    reason = rejected(order_type=order_type, stop_price=235.0).reason
    assert reason == f"limit_price is required for {order_type} orders"


@pytest.mark.parametrize("order_type", ["STOP", "STOP_LIMIT"])
def test_given_a_stop_kind_of_order_without_stop_price_then_it_is_rejected(order_type):
    reason = rejected(order_type=order_type, limit_price=235.0).reason
    assert reason == f"stop_price is required for {order_type} orders"


def test_given_each_order_type_with_its_prices_then_it_is_accepted():
    assert accepted(order_type="LIMIT", limit_price=235.0).limit_price == 235.0
    assert accepted(order_type="STOP", stop_price=235.0).stop_price == 235.0
    signal = accepted(order_type="STOP_LIMIT", stop_price=235.0, limit_price=235.5)
    assert (signal.stop_price, signal.limit_price) == (235.0, 235.5)


@pytest.mark.parametrize(
    "field", ["limit_price", "stop_price", "reference_price", "stop_loss", "take_profit"]
)
@pytest.mark.parametrize(("value", "shown"), [(0, "0"), (-1.5, "-1.5")])
def test_given_a_price_not_above_zero_then_it_is_rejected_naming_the_field(field, value, shown):
    changes = {
        "order_type": "STOP_LIMIT",
        "limit_price": 235.0,
        "stop_price": 235.0,
        "stop_loss": DROP,
        "take_profit": DROP,
        field: value,
    }
    assert rejected(**changes).reason == f"{field} must be > 0, got {shown}"


@pytest.mark.parametrize("field", ["limit_price", "stop_price", "reference_price"])
def test_given_a_price_that_is_not_a_number_then_it_is_rejected_naming_the_field(field):
    changes = {"order_type": "STOP_LIMIT", "limit_price": 235.0, "stop_price": 235.0, field: "235"}
    assert rejected(**changes).reason == f"{field} must be a number, got '235'"


# time_in_force ---------------------------------------------------------------------------


def test_given_no_time_in_force_then_it_defaults_to_day():
    assert accepted(time_in_force=DROP).time_in_force == "DAY"


@pytest.mark.parametrize("tif", ["DAY", "GTC", "IOC", "gtc"])
def test_given_a_known_time_in_force_then_it_is_kept_upper_case(tif):
    assert accepted(time_in_force=tif).time_in_force == tif.upper()


def test_given_an_unknown_time_in_force_then_it_is_rejected_listing_the_three():
    assert (
        rejected(time_in_force="FOK").reason
        == "time_in_force must be one of 'DAY', 'GTC' or 'IOC', got 'FOK'"
    )


# stop_loss / take_profit -----------------------------------------------------------------

ENTRY_LIMIT = {"order_type": "LIMIT", "limit_price": 235.0}


@pytest.mark.parametrize(
    ("side", "stop_loss", "take_profit"), [("BUY", 230.0, 240.0), ("SELL", 240.0, 230.0)]
)
def test_given_protective_levels_on_the_right_side_of_the_entry_then_they_are_recorded(
    side, stop_loss, take_profit
):
    signal = accepted(side=side, stop_loss=stop_loss, take_profit=take_profit, **ENTRY_LIMIT)
    assert (signal.stop_loss, signal.take_profit) == (stop_loss, take_profit)


@pytest.mark.parametrize(
    ("side", "field", "level", "where"),
    [
        ("BUY", "stop_loss", 236.0, "below"),
        ("BUY", "stop_loss", 235.0, "below"),  # at the entry is not below it
        ("BUY", "take_profit", 234.0, "above"),
        ("BUY", "take_profit", 235.0, "above"),
        ("SELL", "stop_loss", 234.0, "above"),
        ("SELL", "stop_loss", 235.0, "above"),
        ("SELL", "take_profit", 236.0, "below"),
        ("SELL", "take_profit", 235.0, "below"),
    ],
)
def test_given_a_protective_level_on_the_wrong_side_of_the_entry_then_the_reason_says_which(
    side, field, level, where
):
    changes = {"stop_loss": DROP, "take_profit": DROP, **ENTRY_LIMIT, field: level}
    assert (
        rejected(side=side, **changes).reason
        == f"{field} must be {where} the entry price 235 for a {side}, got {level:g}"
    )


@pytest.mark.parametrize(
    ("entry", "expected_entry"),
    [
        ({"order_type": "STOP", "stop_price": 250.0}, "250"),
        ({"order_type": "STOP_LIMIT", "stop_price": 249.0, "limit_price": 250.0}, "250"),
        ({"reference_price": 250.0}, "250"),
    ],
)
def test_given_a_stop_or_reference_price_then_it_is_the_entry_the_levels_are_checked_against(
    entry, expected_entry
):
    reason = rejected(stop_loss=251.0, take_profit=DROP, **entry).reason
    assert reason == f"stop_loss must be below the entry price {expected_entry} for a BUY, got 251"


def test_given_a_market_order_with_no_known_price_then_levels_are_not_checked_against_one():
    assert accepted(stop_loss=500.0, take_profit=1.0).stop_loss == 500.0


# asset_class / product / reference_price / created_at --------------------------------------


@pytest.mark.parametrize("asset_class", ["EQUITY", "OPTION", "FUTURE", "CRYPTO", "FOREX", "option"])
def test_given_a_known_asset_class_then_it_is_accepted(asset_class):
    assert accepted(asset_class=asset_class).asset_class == asset_class.upper()


def test_given_an_unknown_asset_class_then_it_is_rejected_listing_the_five():
    assert rejected(asset_class="BOND").reason == (
        "asset_class must be one of 'EQUITY', 'OPTION', 'FUTURE', 'CRYPTO' or 'FOREX', got 'BOND'"
    )


@pytest.mark.parametrize("product", ["MIS", "NRML", "CNC", "mis"])
def test_given_a_known_zerodha_product_then_it_is_accepted(product):
    assert accepted(product=product).product == product.upper()


def test_given_an_unknown_zerodha_product_then_it_is_rejected_listing_the_three():
    assert (
        rejected(product="BO").reason == "product must be one of 'MIS', 'NRML' or 'CNC', got 'BO'"
    )


def test_given_a_positive_reference_price_then_it_is_kept():
    assert accepted(reference_price=235.15).reference_price == 235.15


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-11-24T10:30:10Z", datetime(2024, 11, 24, 10, 30, 10, tzinfo=UTC)),
        ("2024-11-24T10:30:10.250+00:00", datetime(2024, 11, 24, 10, 30, 10, 250_000, tzinfo=UTC)),
    ],
)
def test_given_an_iso_8601_created_at_then_it_is_parsed(text, expected):
    assert accepted(created_at=text).created_at == expected


@pytest.mark.parametrize("text", ["yesterday", "24/11/2024 10:30", "2024-13-40T99:00:00Z"])
def test_given_a_created_at_that_is_not_iso_8601_then_it_is_rejected_naming_the_format(text):
    assert (
        rejected(created_at=text).reason
        == f"created_at must be an ISO-8601 timestamp, got {text!r}"
    )


@pytest.mark.parametrize(("field", "value"), [("exchange", "SMART"), ("currency", "USD")])
def test_given_routing_hints_then_they_are_kept(field, value):
    assert getattr(accepted(**{field: value}), field) == value


# several problems, unknown fields, unsafe keys -----------------------------------------------


def test_given_several_broken_fields_then_the_reason_names_each_of_them():
    reason = rejected(quantity=0, side="HOLD", symbol=DROP).reason
    assert "symbol is required" in reason
    assert "side must be one of 'BUY' or 'SELL', got 'HOLD'" in reason
    assert "quantity must be > 0, got 0" in reason


def test_given_unknown_fields_then_they_are_kept_as_data_in_extra_fields():
    signal = accepted(confidence=0.87, model={"name": "spx-1d", "tags": ["a", "b"]}, note=None)
    assert signal.extra_fields == {
        "confidence": 0.87,
        "model": {"name": "spx-1d", "tags": ["a", "b"]},
        "note": None,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"$where": "1"},
        {"a.b": 1},
        {"meta": {"$gt": ""}},
        {"meta": {"deep": {"x.y": 1}}},
        {"meta": [{"ok": 1}, {"$set": {"status": "FILLED"}}]},
        {"symbol": {"$ne": None}},
    ],
    ids=["top-dollar", "top-dot", "nested-dollar", "deep-dot", "in-list", "operator-as-value"],
)
def test_given_a_key_starting_with_dollar_or_containing_a_dot_then_it_is_rejected_naming_it(
    changes,
):
    """Given a '$' or '.' key anywhere, then the reason names its whole path."""
    parsed = rejected(**changes)
    path = {"$where": "$where", "a.b": "a.b", "meta": None, "symbol": "symbol.$ne"}
    expected = path[next(iter(changes))] or {
        "nested-dollar": "meta.$gt", "deep-dot": "meta.deep.x.y", "in-list": "meta[1].$set",
    }[next(name for name, c in _KEY_CASES.items() if c == changes)]
    assert parsed.reason == f"field name {expected!r} is not allowed (no '$' prefix, no '.')"


_KEY_CASES = {"nested-dollar": {"meta": {"$gt": ""}}, "deep-dot": {"meta": {"deep": {"x.y": 1}}},
              "in-list": {"meta": [{"ok": 1}, {"$set": {"status": "FILLED"}}]}}


@pytest.mark.parametrize(
    "changes",
    [{"symbol": DROP, "meta": {"k": 1}}, {"quantity": 0}, {"$where": "1"}],
    ids=["invalid", "bad-quantity", "bad-key"],
)
def test_given_a_rejection_then_only_the_plain_known_fields_are_kept_for_the_record(changes):
    parsed = rejected(**changes)
    assert set(parsed.fields) <= {"signal_id", *SPEC_EXAMPLE, "quantity"}
    assert parsed.fields["signal_id"] == SPEC_EXAMPLE["signal_id"]
    assert all(isinstance(v, (str, int, float, bool)) for v in parsed.fields.values())
    assert not any(k.startswith("$") for k in parsed.fields)


# bodies that cannot be recorded ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "start"),
    [
        (b"\xff\xfe{}", "body is not UTF-8"),
        (b'{"signal_id": "s\xe9"}', "body is not UTF-8"),
        (b"", "body is not valid JSON"),
        (b"{not json", "body is not valid JSON"),
        (b'{"signal_id": "sig_1",', "body is not valid JSON"),
        (b"[" * 100_000, "body nests deeper than 32 levels"),
        (b'[{"signal_id": "sig_1"}]', "body must be a JSON object, got list"),
        (b'"sig_1"', "body must be a JSON object, got str"),
        (b"42", "body must be a JSON object, got int"),
        (b"null", "body must be a JSON object, got NoneType"),
    ],
    ids=[
        "not-utf8",
        "latin1",
        "empty",
        "garbage",
        "truncated",
        "too-deep",
        "array",
        "string",
        "number",
        "null",
    ],
)
def test_given_a_body_that_is_not_a_json_object_then_it_is_unusable_with_the_reason(raw, start):
    parsed = parse_signal(raw)
    assert isinstance(parsed, Unusable)
    assert parsed.reason.startswith(start)


# -- accounts (SPEC §2.5) -------------------------------------------------------------------


def test_given_an_unknown_account_then_the_problem_names_the_account():
    assert (
        account_problem(accepted(), None) == "account_id 'acc_abc123' is not a registered account"
    )


def test_given_a_disabled_account_then_the_problem_says_disabled():
    assert (
        account_problem(accepted(), {"_id": "acc_abc123", "enabled": False})
        == "account_id 'acc_abc123' is disabled"
    )


@pytest.mark.parametrize(
    "account",
    [
        {"_id": "acc_abc123", "enabled": True},
        {"_id": "acc_abc123"},
        {"_id": "acc_abc123", "enabled": True, "allowed_symbols": []},
        {"_id": "acc_abc123", "allowed_symbols": None},
    ],
    ids=["enabled", "enabled-by-default", "empty-allowlist", "no-allowlist"],
)
def test_given_an_enabled_account_without_an_allowlist_then_any_symbol_is_allowed(account):
    assert account_problem(accepted(symbol="ANYTHING"), account) is None


@pytest.mark.parametrize(
    ("symbol", "allowed"),
    [("SPY", ["SPY", "QQQ"]), ("spy", ["SPY"]), ("SPY", ["spy"]), ("Qqq", ["sPy", "qQq"])],
)
def test_given_an_allowlist_then_a_listed_symbol_in_any_case_is_allowed(symbol, allowed):
    account = {"_id": "acc_abc123", "enabled": True, "allowed_symbols": allowed}
    assert account_problem(accepted(symbol=symbol), account) is None


def test_given_an_allowlist_then_an_unlisted_symbol_is_refused_naming_symbol_and_account():
    account = {"_id": "acc_abc123", "enabled": True, "allowed_symbols": ["SPY", "QQQ"]}
    assert (
        account_problem(accepted(symbol="TSLA"), account)
        == "symbol 'TSLA' is not in the allowed symbols of account 'acc_abc123' (SPY, QQQ)"
    )


def test_given_a_disabled_account_with_an_allowlist_then_disabled_is_the_reason():
    account = {"_id": "acc_abc123", "enabled": False, "allowed_symbols": ["QQQ"]}
    assert account_problem(accepted(), account) == "account_id 'acc_abc123' is disabled"
