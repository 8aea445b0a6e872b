"""The first look at a message body, before any model sees it: size and nesting limits checked
before parsing, then JSON, then keys and values that could not be stored or shown safely.

Every body ends as a `dict` (go on validating), an `Invalid` (a signal_id could be read: record
it REJECTED with the reason) or an `Unusable` (dead-letter it with the reason). Nothing here
raises for any input. Reused by every kind of message on trading-orders (orders, commands).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from execution_service.domain.text import describe_char, first_invisible

SIGNAL_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
SIGNAL_ID_RULE = "1-128 characters of A-Z a-z 0-9 _ . : -"
# An order is under 2 KB. Bodies over ~4 MB (or several large ones in one response) stall a
# streaming pull on the emulator; 1 MB leaves room for anything an order could carry.
DEFAULT_MAX_BODY_BYTES = 1_000_000
DEFAULT_MAX_DEPTH = 32
DEAD_LETTER_BODY_BYTES = 32_768  # what a dead letter keeps of an oversized body
ATTRIBUTE_VALUE_BYTES = 1024  # Pub/Sub's limit on one attribute value
MAX_ATTRIBUTES = 100  # Pub/Sub's limit per message
_SIGNAL_ID_HINT = re.compile(rb'"signal_id"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"')
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


@dataclass(frozen=True)
class IntakeLimits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


DEFAULT_LIMITS = IntakeLimits()


@dataclass(frozen=True)
class Problem:
    """One reason a message is refused, with the field it is about (None: the whole of it)."""

    field: str | None
    message: str


@dataclass(frozen=True)
class Unusable:
    """A message that cannot even be recorded: no JSON object or no usable signal_id."""

    reason: str
    field: str | None = None  # "signal_id" when that is what is missing or wrong

    @property
    def problems(self) -> tuple[Problem, ...]:
        return (Problem(self.field, self.reason),)


@dataclass(frozen=True)
class Invalid:
    """A message with a usable signal_id whose order is invalid: recorded as REJECTED."""

    signal_id: str
    reason: str
    fields: dict[str, Any]  # what could be kept of the message, safe to store
    problems: tuple[Problem, ...] = ()  # each naming its field; default: the reason, unnamed

    def __post_init__(self) -> None:
        if not self.problems:
            object.__setattr__(self, "problems", (Problem(None, self.reason),))


def decode_body(body: bytes, keep_fields: tuple[str, ...], limits: IntakeLimits = DEFAULT_LIMITS
                ) -> dict[str, Any] | Invalid | Unusable:
    """The message as a JSON object whose keys and values are safe to store, or why not.
    An `Invalid` keeps the plain values of `keep_fields` for its rejection record."""
    problem = _before_parsing(body, limits)
    if problem is not None:
        return _refuse(body, problem)
    try:
        data = json.loads(body.decode("utf-8"), parse_float=_finite_or_text,
                          parse_constant=str)
    except UnicodeDecodeError as e:
        return Unusable(f"body is not UTF-8: {e.reason} at byte {e.start}")
    except (ValueError, RecursionError) as e:
        return Unusable(f"body is not valid JSON: {e}")
    if not isinstance(data, dict):
        return Unusable(f"body must be a JSON object, got {type(data).__name__}")
    signal_id = data.get("signal_id")
    if not isinstance(signal_id, str) or not SIGNAL_ID_PATTERN.match(signal_id):
        shown = "missing" if signal_id is None else f"invalid: {signal_id!r:.80}"
        return Unusable(f"signal_id {shown} (need {SIGNAL_ID_RULE})", "signal_id")
    problem = unsafe_content(data)
    if problem is not None:
        return Invalid(signal_id, problem.message, storable_fields(data, keep_fields),
                       (problem,))
    return data


def _before_parsing(body: bytes, limits: IntakeLimits) -> str | None:
    if len(body) > limits.max_body_bytes:
        return (f"body is {len(body):,} bytes, over the {limits.max_body_bytes:,}-byte limit "
                "(MAX_MESSAGE_BYTES)")
    brackets = body.count(b"{") + body.count(b"[")  # nesting can go no deeper
    if brackets > limits.max_depth and nesting_depth(body, limits.max_depth) > limits.max_depth:
        return (f"body nests deeper than {limits.max_depth} levels (MAX_MESSAGE_DEPTH); "
                "an order is a flat object")
    return None


def _refuse(body: bytes, reason: str) -> Invalid | Unusable:
    """A REJECTED record when a signal_id can be read from the raw bytes, else a dead letter."""
    signal_id = signal_id_hint(body)
    return Invalid(signal_id, reason, {}) if signal_id else Unusable(reason)


def nesting_depth(body: bytes, stop_above: int) -> int:
    """How deep arrays and objects nest outside strings; counting stops past `stop_above`."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if match.group() in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def _finite_or_text(text: str) -> float | str:
    """`1e999` would parse as infinity: keep its text instead, so it is refused as a number
    by validation and kept as data in the audit record."""
    value = float(text)
    return value if math.isfinite(value) else text


def unsafe_content(data: Any, path: str = "") -> Problem | None:
    """The first key that could act as a query operator or cannot be stored (`$` prefix, `.`,
    a control or format character), or string value with a NUL, named by its path."""
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else key
            if key.startswith("$") or "." in key:
                return Problem(where, f"field name {where!r:.120} is not allowed (no '$' "
                                      f"prefix, no '.')")
            char = first_invisible(key)
            if char is not None:
                return Problem(where, f"field name {where!r:.120} contains "
                                      f"{describe_char(char)}")
            found = unsafe_content(value, where)
            if found is not None:
                return found
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found = unsafe_content(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(data, str) and "\x00" in data:
        return Problem(path, f"{path} contains {describe_char(chr(0))}")
    return None


INT64_MAX = 2**63 - 1


def storable(value: Any) -> Any:
    """The value as BSON can hold it: integers beyond 64 bits are kept as their digits."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        return str(value)
    if isinstance(value, dict):
        return {key: storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def storable_fields(data: dict, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields `names` that are plain scalars, kept as data on a rejection record: never a
    NUL or a non-finite number."""
    return {key: storable(data[key]) for key in names
            if isinstance(data.get(key), (str, int, float, bool))
            and not (isinstance(data[key], float) and not math.isfinite(data[key]))
            and not (isinstance(data[key], str) and "\x00" in data[key])}


def signal_id_hint(body: bytes) -> str | None:
    """The signal id in a body that cannot be parsed (or not within limits), read from its
    first 64 KiB."""
    match = _SIGNAL_ID_HINT.search(body[:65_536])
    return match.group(1).decode() if match else None


def dead_letter_message(body: bytes, attributes: dict[str, str], reason: str,
                        message_id: str) -> tuple[bytes, dict[str, str]]:
    """What goes to the dead-letter topic: the body (its head, when it is too big to be read
    back comfortably) and the reason, within Pub/Sub's attribute limits."""
    kept = dict(list(attributes.items())[:MAX_ATTRIBUTES - 4])
    kept.update(dead_letter_reason=_fit(reason, ATTRIBUTE_VALUE_BYTES),
                original_message_id=message_id)
    if len(body) > DEAD_LETTER_BODY_BYTES:
        kept.update(dead_letter_truncated="true", dead_letter_original_bytes=str(len(body)))
        body = body[:DEAD_LETTER_BODY_BYTES]
    return body, kept


def _fit(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit - 3].decode("utf-8", "ignore") + "…"


class Accepted(StrEnum):
    CLAIMED = "CLAIMED"  # recorded PENDING and handed to the tracker
    REJECTED = "REJECTED"  # recorded REJECTED (validation, account or risk control)
    DUPLICATE = "DUPLICATE"  # a record for this signal_id already exists: nothing done
    UNUSABLE = "UNUSABLE"  # no usable signal_id or no JSON object: nothing can be recorded


@dataclass(frozen=True)
class Intake:
    """What became of one order, for whoever sent it."""

    kind: Accepted
    signal_id: str | None = None
    record: dict | None = None  # as stored (CLAIMED, REJECTED)
    problems: tuple[Problem, ...] = ()
    control: str | None = None  # the risk control that refused it
    track: dict | None = None  # a claim to hand to the tracker, on the event loop
    written: tuple | None = None  # (record, events, confirmations), for journal.after_write

    @property
    def reason(self) -> str:
        return "; ".join(problem.message for problem in self.problems)
