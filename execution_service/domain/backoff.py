"""Back-off between retries: a pure function, so every retry loop waits the same way."""


def compute_backoff(attempt: int, base: float, cap: float = 30.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2·base, 4·base…"""
    if attempt < 1 or base <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(attempt - 1, 60))
