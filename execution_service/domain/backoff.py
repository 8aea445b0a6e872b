"""Back-off between retries: one policy, so every retry loop (the store, the broker, publishing)
waits the same way."""

from __future__ import annotations

from dataclasses import dataclass


def compute_backoff(attempt: int, base: float, cap: float = 30.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2·base, 4·base…"""
    if attempt < 1 or base <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(attempt - 1, 60))


@dataclass(frozen=True)
class Backoff:
    """Doubling waits from `base` seconds, never longer than `cap`."""

    base: float
    cap: float = 30.0

    def after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return compute_backoff(attempt, self.base, self.cap)
