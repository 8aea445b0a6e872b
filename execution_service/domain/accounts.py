"""Account checks (SPEC §2.5): pure functions over the signal and the account document."""

from __future__ import annotations

from execution_service.domain.signals import Problem, Signal


def account_problem(signal: Signal, account: dict | None) -> str | None:
    """Why this account may not trade this signal, or None when it may."""
    problem = check_account(signal, account)
    return None if problem is None else problem.message


def check_account(signal: Signal, account: dict | None) -> Problem | None:
    """`account_problem` with the field it is about."""
    if account is None:
        return Problem("account_id", f"account_id {signal.account_id!r} is not a registered "
                                     f"account")
    if not account.get("enabled", True):
        return Problem("account_id", f"account_id {signal.account_id!r} is disabled")
    allowed = account.get("allowed_symbols") or []
    if allowed and signal.symbol.upper() not in {symbol.upper() for symbol in allowed}:
        return Problem("symbol", f"symbol {signal.symbol!r} is not in the allowed symbols of "
                                 f"account {signal.account_id!r} ({', '.join(allowed)})")
    return None


def parse_symbols(text: str | None) -> list[str]:
    return [part.strip().upper() for part in (text or "").split(",") if part.strip()]
