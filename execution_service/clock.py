"""Time, in one place so tests can move it."""

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, UTC, to the millisecond (what BSON dates keep)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
