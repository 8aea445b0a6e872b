"""The intake's shortcuts for ordinary bodies give the same verdicts as the full checks."""

import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from execution_service.domain.intake import (
    IntakeLimits,
    Invalid,
    Unusable,
    decode_body,
    nesting_depth,
    unsafe_content,
)
from execution_service.domain.text import INVISIBLE_CATEGORIES, first_invisible


def _first_invisible_by_hand(text: str) -> str | None:
    return next((c for c in text if unicodedata.category(c) in INVISIBLE_CATEGORIES), None)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_given_any_text_when_looking_for_invisible_characters_then_the_shortcut_agrees(text):
    assert first_invisible(text) == _first_invisible_by_hand(text)


def test_given_a_printable_text_with_a_format_character_then_it_is_still_found():
    assert first_invisible("SPY\u202e") == "\u202e"
    assert first_invisible("a\u2028b") == "\u2028"
    assert first_invisible("Bench Strategy") is None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                               max_size=3),
    max_leaves=20)


@given(_JSON, st.integers(min_value=0, max_value=6))
def test_given_any_json_when_its_depth_is_limited_then_the_verdict_follows_the_full_count(
        value, max_depth):
    body = json.dumps({"signal_id": "s1", "x": value}).encode()
    outcome = decode_body(body, ("signal_id",), IntakeLimits(max_depth=max_depth))
    too_deep = nesting_depth(body, max_depth) > max_depth
    refused_for_depth = isinstance(outcome, (Invalid, Unusable)) and "nests deeper" in (
        outcome.reason)
    assert refused_for_depth == too_deep


def test_given_brackets_inside_strings_when_counted_then_only_real_nesting_refuses():
    body = json.dumps({"signal_id": "s1", "note": "[[[[{{{{"}).encode()
    assert isinstance(decode_body(body, ("signal_id",), IntakeLimits(max_depth=2)), dict)
    deep = json.dumps({"signal_id": "s1", "x": [[[1]]]}).encode()
    refused = decode_body(deep, ("signal_id",), IntakeLimits(max_depth=3))
    assert isinstance(refused, Invalid) and "MAX_MESSAGE_DEPTH" in refused.reason


def test_given_a_nul_in_a_top_level_or_nested_value_then_its_path_is_named():
    assert unsafe_content({"symbol": "SP\x00Y"}).field == "symbol"
    assert unsafe_content({"a": {"b": ["ok", "x\x00"]}}).field == "a.b[1]"
    assert unsafe_content({"a": {"b": ["ok", 1, None]}}) is None
