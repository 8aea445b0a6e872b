"""What kind of refusal a reject reason is: a small fixed set, for metrics and dashboards.

The reasons are free text (ours, or the broker's own words), so the class is read from
them by keyword, first match wins in the order of `_RULES`; anything unrecognised is the
broker's word for it.
"""

from __future__ import annotations

import re

VALIDATION = "validation"  # the message itself is wrong (SPEC §3)
ACCOUNT = "account"  # unknown or disabled account, symbol outside its allowlist
RISK = "risk"  # our pre-trade limits and collar; margin, funds, holdings at the venue
BROKER = "broker"  # the broker (or its adapter) refused it for its own reasons
CONNECTION = "connection"  # the broker could not be reached, or its session is gone
HALT = "halt"  # trading halted: kill switch, market closed, circuit breaker
REASON_CLASSES = (VALIDATION, ACCOUNT, RISK, BROKER, CONNECTION, HALT)

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


def reason_class(reason: str | None) -> str:
    """The class of a reject reason (one of REASON_CLASSES)."""
    text = (reason or "").lower()
    for name, pattern in _RULES:
        if pattern.search(text):
            return name
    return BROKER
