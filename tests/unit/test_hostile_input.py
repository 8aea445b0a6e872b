"""Hostile input (issue 14): limits before parsing, identifiers, numbers, text that cannot
forge a Telegram message or a log line, strict JSON. Pure functions, many cases."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execution_service.domain.intake import (
    ATTRIBUTE_VALUE_BYTES,
    DEAD_LETTER_BODY_BYTES,
    IntakeLimits,
    Invalid,
    Unusable,
    dead_letter_message,
    decode_body,
    nesting_depth,
)
from execution_service.domain.notices import NoticeKind, OrderNotice
from execution_service.domain.orders import OrderState, OrderStatus, apply_fills
from execution_service.domain.records import confirmation_message, finite_only, strict_json
from execution_service.domain.signals import Signal, parse_signal
from execution_service.domain.telegram_text import compose_message
from execution_service.domain.text import describe_char, normalise_identifier, single_line
from execution_service.service.ports import JOURNEY_LOGGER
from tests.fakes.service_logging import service_logging

VALID = {"signal_id": "sig_1", "account_id": "acc_1", "strategy_name": "Strat", "symbol": "SPY",
         "side": "BUY", "quantity": 10, "order_type": "MARKET", "reference_price": 100.0}
AT = datetime(2026, 11, 29, tzinfo=UTC)


def parsed(**changes):
    return parse_signal(json.dumps({**VALID, **changes}).encode())


def deep(levels: int, signal_id: str | None = "sig_deep") -> bytes:
    head = f'{{"signal_id": "{signal_id}", "x": '.encode() if signal_id else b'{"x": '
    return head + b"[" * levels + b"]" * levels + b"}"


# -- every body an outcome with a reason -----------------------------------------------------


@pytest.mark.parametrize("levels", [600, 750, 950, 5000])
def test_given_json_nested_600_to_950_deep_with_a_signal_id_then_rejected_with_the_reason(levels):
    """Given the depths that raised RecursionError tracebacks, then a REJECTED outcome names
    the limit, before the parser ever recursed."""
    outcome = parse_signal(deep(levels))
    assert isinstance(outcome, Invalid) and outcome.signal_id == "sig_deep"
    assert outcome.reason.startswith("body nests deeper than 32 levels")


def test_given_a_deep_body_without_a_signal_id_then_it_is_unusable_with_the_reason():
    assert parse_signal(deep(800, None)) == Unusable(
        "body nests deeper than 32 levels (MAX_MESSAGE_DEPTH); an order is a flat object")


def test_given_brackets_inside_strings_then_they_do_not_count_as_nesting():
    body = json.dumps({**VALID, "note": "[[[[{{{{" * 100, "esc": 'a\\"[[[['}).encode()
    assert nesting_depth(body, 32) == 1
    assert isinstance(parse_signal(body), Signal)


def test_given_a_body_over_the_size_limit_then_a_reason_names_size_and_limit():
    body = json.dumps({**VALID, "pad": "x" * 2_000}).encode()
    outcome = parse_signal(body, IntakeLimits(max_body_bytes=1_024))
    assert isinstance(outcome, Invalid) and outcome.signal_id == "sig_1"
    assert outcome.reason == (f"body is {len(body):,} bytes, over the 1,024-byte limit "
                              "(MAX_MESSAGE_BYTES)")
    assert isinstance(parse_signal(b"x" * 2_000, IntakeLimits(max_body_bytes=1_024)), Unusable)


@pytest.mark.parametrize(("body", "reason"), [
    ({**VALID, "k\u0000ey": 1}, "field name 'k\\x00ey' contains U+0000 NULL"),
    ({**VALID, "meta": {"a\u001bb": 1}}, "field name 'meta.a\\x1bb' contains U+001B ESCAPE"),
    ({**VALID, "note": "a\u0000b"}, "note contains U+0000 NULL"),
    ({**VALID, "meta": ["ok", "\u0000"]}, "meta[1] contains U+0000 NULL"),
    ({**VALID, "symbol": {"$gt": ""}}, "field name 'symbol.$gt' is not allowed (no '$' prefix, "
                                       "no '.')"),
])
def test_given_nul_or_control_characters_in_keys_or_values_then_rejected_naming_the_path(body,
                                                                                       reason):
    outcome = parse_signal(json.dumps(body).encode())
    assert isinstance(outcome, Invalid)
    assert outcome.reason == reason
    assert all("\x00" not in str(v) for v in outcome.fields.values())


def test_given_a_non_finite_number_in_an_unknown_field_then_it_is_kept_as_text():
    outcome = parse_signal(json.dumps(VALID).encode()[:-1] + b', "x": 1e999, "y": NaN}')
    assert isinstance(outcome, Signal)
    assert outcome.extra_fields == {"x": "1e999", "y": "NaN"}


@pytest.mark.parametrize("body", [b"", b"\xff", b"[" * 10**6, b'{"a":' * 10**5, b"1e999",
                                  b'"' * 1000, b"{" + b'"a":1,' * 10**5 + b"}"])
def test_given_garbage_then_decode_never_raises(body):
    assert isinstance(decode_body(body, ()), (Invalid, Unusable))


def test_given_an_oversized_body_when_dead_lettered_then_its_head_and_the_reason_fit():
    body = b"x" * 5_000_000
    attributes = {f"a{n}": "v" for n in range(100)}
    data, kept = dead_letter_message(body, attributes, "é" * 2_000, "m1")
    assert len(data) == DEAD_LETTER_BODY_BYTES and len(kept) <= 100
    assert kept["dead_letter_truncated"] == "true"
    assert kept["dead_letter_original_bytes"] == "5000000"
    assert len(kept["dead_letter_reason"].encode()) <= ATTRIBUTE_VALUE_BYTES
    small, plain = dead_letter_message(b"{}", {}, "why", "m2")
    assert small == b"{}" and plain == {"dead_letter_reason": "why", "original_message_id": "m2"}


# -- identifiers that are what they look like -------------------------------------------------


@pytest.mark.parametrize(("symbol", "normal"), [
    ("BRK.B", "BRK.B"), ("BRK B", "BRK B"), ("M&M", "M&M"), ("BAJAJ-AUTO", "BAJAJ-AUTO"),
    ("BTC/USD", "BTC/USD"), ("ES=F", "ES=F"), ("^GSPC", "^GSPC"), ("ＳＰＹ", "SPY"),
    (" SPY ", "SPY"), ("SPY   241129C00600000", "SPY   241129C00600000"),
])
def test_given_symbols_venues_use_then_they_pass_after_nfkc(symbol, normal):
    assert normalise_identifier("symbol", symbol) == normal


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("symbol", "\u202eYPS", "symbol contains U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("symbol", "SP\u200bY", "symbol contains U+200B ZERO WIDTH SPACE"),
    ("symbol", "\u2066SPY\u2069", "symbol contains U+2066 LEFT-TO-RIGHT ISOLATE"),
    ("symbol", "SPY\u2069", "symbol contains U+2069 POP DIRECTIONAL ISOLATE"),
    ("symbol", "\ufeffSPY", "symbol contains U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("account_id", "acc\u202e1", "account_id contains U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("exchange", "NS\u200dE", "exchange contains U+200D ZERO WIDTH JOINER"),
    ("currency", "US\u2028D", "currency contains U+2028 LINE SEPARATOR"),
    ("symbol", "\u0405PY", "symbol contains U+0405 CYRILLIC CAPITAL LETTER DZE (allowed: "),
])
def test_given_format_or_control_characters_then_the_reason_names_field_and_character(
        field, value, reason):
    outcome = parsed(**{field: value})
    assert isinstance(outcome, Invalid)
    assert outcome.reason.startswith(reason)


def test_given_a_strategy_name_with_a_line_break_then_it_is_rejected_naming_it():
    assert parsed(strategy_name="S\n\n✅ Order Filled").reason == \
        "strategy_name contains U+000A LINE FEED"


def test_describe_char_names_controls_that_unicode_leaves_unnamed():
    assert describe_char("\x1b") == "U+001B ESCAPE"
    assert describe_char("\u202e") == "U+202E RIGHT-TO-LEFT OVERRIDE"


# -- numbers a ledger can hold -----------------------------------------------------------------


@pytest.mark.parametrize(("changes", "reason"), [
    ({"quantity": 1e308}, "quantity must be at most 1,000,000,000 for EQUITY, got 1e+308"),
    ({"quantity": 1e-12, "asset_class": "CRYPTO"},
     "quantity 1e-12 is below the CRYPTO minimum increment 0.00000001"),
    ({"quantity": 1e13, "asset_class": "CRYPTO"}, "quantity must be at most"),
    ({"quantity": 0.001, "asset_class": "CRYPTO"}, "quantity 0.001 x price 100 = 0.1 is under "
                                                   "the CRYPTO minimum order value 1"),
    ({"reference_price": 1e300}, "reference_price must be between 0.00000001 and "
                                 "1,000,000,000, got 1e+300"),
    ({"order_type": "LIMIT", "limit_price": 1e-9}, "limit_price must be between"),
    ({"quantity": 900_000_000, "reference_price": 5_000}, "quantity 9e+08 x price 5000 = "
                                                          "4.5e+12 is over the"),
])
def test_given_numbers_no_ledger_should_hold_then_rejected_naming_the_field(changes, reason):
    outcome = parsed(**changes)
    assert isinstance(outcome, Invalid)
    assert outcome.reason.startswith(reason)


def test_given_a_fill_with_nan_or_infinite_numbers_then_it_never_reaches_the_record():
    class Fill:
        def __init__(self, exec_id, quantity, price):
            self.exec_id, self.quantity, self.price = exec_id, quantity, price
            self.at, self.commission = AT, 0.0

    state = OrderState("s1", 10.0, OrderStatus.SUBMITTED, order_id="o1")
    change = apply_fills(state, [Fill("e1", math.nan, 1.0), Fill("e2", 1.0, math.inf),
                                 Fill("e3", math.inf, 1.0), Fill("e4", 2.0, 100.0)], AT)
    assert [f.exec_id for f in change.state.fills] == ["e4"]


def test_given_a_legacy_infinite_value_then_every_json_output_is_strict():
    record = {"total_value": math.inf, "avg_fill_price": math.nan, "fills": [{"p": -math.inf}]}
    text = strict_json(record)
    assert json.loads(text, parse_constant=_refuse) == {"total_value": None,
                                                         "avg_fill_price": None,
                                                         "fills": [{"p": None}]}
    payload, _ = confirmation_message({"signal_id": "s", "status": "FILLED", "sequence": 1,
                                       "avg_fill_price": math.inf})
    assert json.loads(payload, parse_constant=_refuse)["avg_fill_price"] is None


def _refuse(constant: str):
    raise AssertionError(f"not JSON: {constant}")


# -- text that cannot forge ------------------------------------------------------------------

FORGERIES = ["X\n\n✅ Order Filled\n\nSignal: fake\nOrder: SELL 1000000 SPY @ $0.01",
             "X\r\n❌ Order Rejected", "X\x1b[2J\x1b[31mred", "X\u2028✅ Order Filled",
             "X\u0085next", "X\u202eevil"]
TEXT_FIELDS = ("signal_id", "strategy_name", "account_id", "symbol", "side", "reason",
               "account_name", "order_id")


def notice(kind: NoticeKind, **changes) -> OrderNotice:
    base = OrderNotice(kind, "sig_1", "Strat", "acc_1", "SPY", "BUY", 100.0, filled_quantity=50,
                       avg_fill_price=235.15, commission=1.0, seconds_to_fill=2.0,
                       reason="why", account_name="Main", last_fill_quantity=50,
                       last_fill_price=235.15)
    return replace(base, **changes)


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("kind", list(NoticeKind))
@pytest.mark.parametrize("forgery", FORGERIES)
def test_given_a_field_that_tries_to_forge_a_telegram_block_then_the_message_keeps_its_shape(
        field, kind, forgery):
    """Given a message field carrying line breaks, ANSI or bidi characters, when its notice is
    composed, then the message has exactly the lines of a benign one, each with the service's
    own label, and none of those characters."""
    benign = compose_message(notice(kind, **{field: "X"})).split("\n")
    forged = compose_message(notice(kind, **{field: forgery})).split("\n")
    assert len(forged) == len(benign)
    assert [line.split(":")[0] for line in forged] == [line.split(":")[0] for line in benign]
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202e]", "".join(forged))


@pytest.mark.parametrize("forgery", FORGERIES)
def test_given_a_value_that_tries_to_forge_a_log_line_then_each_line_keeps_its_shape(
        tmp_path, forgery):
    """Given a log argument from a message with line breaks or escapes, when logged through
    the service's logging, then both log files hold one line per record, in the service's
    shape, and a traceback still keeps its own lines."""
    with service_logging(tmp_path):
        log, journey = logging.getLogger("forgery"), logging.getLogger(JOURNEY_LOGGER)
        journey.info("Received order: %s", forgery)
        log.warning("Unusable message sent to dead letters: %s", single_line(forgery) + forgery)
        try:
            raise ValueError("boom")
        except ValueError:
            journey.exception("Order failed %s", forgery)
    lines = (tmp_path / "execution_service.log").read_text().splitlines()
    shaped = [line for line in lines if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| "
                                                 r"\[EXECUTION\] \| ", line)]
    assert len(shaped) == 3
    assert lines[3:] == ["Traceback (most recent call last):", *lines[4:-1],
                         "ValueError: boom"]
    assert not re.search(r"[\x1b\u2028\u202e\x85\r]", "\n".join(lines))
    journey = (tmp_path / "signal_processing.log").read_text().splitlines()
    assert journey[0].endswith(f"Received order: {single_line(forgery)}")
    assert journey[1].endswith(f"Order failed {single_line(forgery)}")


_JSON_WITH_ANY_FLOAT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=12)


@given(_JSON_WITH_ANY_FLOAT)
def test_given_any_value_when_written_strictly_then_it_is_what_the_finite_copy_writes(value):
    """Given finite or non-finite numbers anywhere, when strict_json writes them (the copy
    without them only made when one is there), then the text is the finite copy's."""
    expected = json.dumps(finite_only(value), allow_nan=False, separators=(",", ":"))
    assert strict_json(value, separators=(",", ":")) == expected
