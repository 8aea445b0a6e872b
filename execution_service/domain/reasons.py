"""What kind of refusal a rejection is: a small fixed set, for the record, metrics and
dashboards.

The code that rejects an order knows why and says so with a `RejectClass`, kept on the record
as `reject_class`. Only the broker's own words (a venue's refusal text) and records written
before the class was kept are read by keyword (`reason_class`), first match wins in the order
of `_RULES`; anything unrecognised is the broker's word for it.
"""

from __future__ import annotations

import re
from enum import StrEnum


class RejectClass(StrEnum):
    VALIDATION = "validation"  # the message itself is wrong (SPEC §3)
    ACCOUNT = "account"  # unknown or disabled account, symbol outside its allowlist
    RISK = "risk"  # our pre-trade limits and collar; margin, funds, holdings at the venue
    BROKER = "broker"  # the broker (or its adapter) refused it for its own reasons
    CONNECTION = "connection"  # the broker could not be reached, or its session is gone
    HALT = "halt"  # trading halted: kill switch, market closed, circuit breaker
    REQUEST = "request"  # a cancel request for it came first: never placed (SPEC §11)


VALIDATION, ACCOUNT, RISK, BROKER, CONNECTION, HALT, REQUEST = RejectClass
REASON_CLASSES = tuple(RejectClass)

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        (HALT, r"halt|kill[ -]?switch|circuit breaker|markets? (is |are )?closed"
               r"|trading (is )?(disabled|paused|suspended)"),
        (CONNECTION, r"connect|unreachable|network|timed out|session expired|socket"),
        (ACCOUNT, r"not a registered account|account_id .* is disabled|allowed symbols"
                  r"|unknown account|account (is )?(disabled|not found)"),
        (RISK, r"margin|insufficient|funds|buying power|risk|exceed|position limit"
               r"|notional|holding|\bmax_\w+|per minute|price collar"),
        (BROKER, r"\bibkr\b|\bib error\b|zerodha|kite|broker|rejected by|not supported"),
        (VALIDATION, r"must be|must not|is required|is not allowed|not a known field"
                     r"|whole number|iso-8601|invalid|json"),
    )
)


def reason_class(reason: str | None) -> RejectClass:
    """The class of a reject reason whose source did not say: the broker's own words."""
    text = (reason or "").lower()
    for name, pattern in _RULES:
        if pattern.search(text):
            return name
    return BROKER
