"""Text from messages: identifiers that are what they look like, and display text that cannot
forge a line. Pure; reused by signal validation, Telegram texts and log lines.
"""

from __future__ import annotations

import re
import unicodedata

# Unicode categories that are never part of what a human reads: controls (Cc), format
# characters such as U+202E RIGHT-TO-LEFT OVERRIDE or U+200B ZERO WIDTH SPACE (Cf), surrogates,
# private use and unassigned code points, and line/paragraph separators.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

# What venues use in their identifiers, after NFKC normalisation: ASCII letters and digits and
# a few separators (BRK.B, BRK B, M&M, BAJAJ-AUTO, BTC/USD, ES=F, ^GSPC, OSI option symbols
# with spaces). Letters outside ASCII are refused: a Cyrillic "Ѕ" reads as "S".
SYMBOL_CHARS = "A-Z a-z 0-9 space . _ - / & ^ = + # :"
_SYMBOL = re.compile(r"[A-Za-z0-9 ._\-/&^=+#:]+")
ROUTING_CHARS = "A-Z a-z 0-9 . _ -"
_ROUTING = re.compile(r"[A-Za-z0-9._\-]+")
ACCOUNT_CHARS = "A-Z a-z 0-9 . _ - : @"
_ACCOUNT = re.compile(r"[A-Za-z0-9._\-:@]+")
IDENTIFIER_RULES = {"symbol": (_SYMBOL, SYMBOL_CHARS), "exchange": (_ROUTING, ROUTING_CHARS),
                    "currency": (_ROUTING, ROUTING_CHARS),
                    "account_id": (_ACCOUNT, ACCOUNT_CHARS)}


def describe_char(char: str) -> str:
    """`"\\u202e"` -> `U+202E RIGHT-TO-LEFT OVERRIDE`."""
    name = unicodedata.name(char, "")
    if not name and unicodedata.category(char) == "Cc":
        name = _CONTROL_NAMES.get(ord(char), "CONTROL CHARACTER")
    return f"U+{ord(char):04X} {name or 'UNASSIGNED CHARACTER'}".rstrip()


_CONTROL_NAMES = {0x00: "NULL", 0x07: "BELL", 0x08: "BACKSPACE", 0x09: "CHARACTER TABULATION",
                  0x0A: "LINE FEED", 0x0B: "LINE TABULATION", 0x0C: "FORM FEED",
                  0x0D: "CARRIAGE RETURN", 0x1B: "ESCAPE", 0x7F: "DELETE",
                  0x85: "NEXT LINE"}


def first_invisible(text: str) -> str | None:
    """The first control, format or separator character in `text`, or None."""
    if text.isprintable():  # no Other (C*) or Separator (Z*) character but the ASCII space
        return None
    for char in text:
        if unicodedata.category(char) in INVISIBLE_CATEGORIES:
            return char
    return None


def invisible_problem(field: str, text: str) -> str | None:
    """`symbol contains U+202E RIGHT-TO-LEFT OVERRIDE`, or None when `text` has none."""
    char = first_invisible(text)
    return None if char is None else f"{field} contains {describe_char(char)}"


def normalise_identifier(field: str, value: str) -> str:
    """The identifier after NFKC normalisation and trimming; ValueError naming the field and
    the first character a venue would not use."""
    problem = invisible_problem(field, value)
    if problem:
        raise ValueError(problem)
    normal = unicodedata.normalize("NFKC", value).strip()
    if not normal:
        raise ValueError(f"{field} must not be blank")
    pattern, allowed = IDENTIFIER_RULES[field]
    if pattern.fullmatch(normal) is None:
        bad = next(char for char in normal if pattern.fullmatch(char) is None)
        raise ValueError(f"{field} contains {describe_char(bad)} (allowed: {allowed})")
    return normal


def check_free_text(field: str, value: str) -> str:
    """A name (strategy_name): any printable text, never a control or format character."""
    problem = invisible_problem(field, value)
    if problem:
        raise ValueError(problem)
    return value


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069"
                     r"\ufeff\ufff9-\ufffb]")


def single_line(text: str) -> str:
    """`text` as one line that cannot pass for something the service wrote: line breaks,
    ANSI escapes, other controls and bidi/zero-width characters become visible `\\n`,
    `\\x1b`, `\\u202e` escapes. For text that came from a message, before it reaches a
    Telegram message or a log line."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match.group()
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
