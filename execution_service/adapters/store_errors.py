"""What the store adapters raise: driver failures become StoreUnavailable (the caller nacks or
retries), a second claim of a signal is DuplicateSignal."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from execution_service.errors import DuplicateSignal, StoreUnavailable

T = TypeVar("T")
__all__ = ["DuplicateSignal", "translating"]


def translating(method: Callable[..., T]) -> Callable[..., T]:
    """Turn driver failures into StoreUnavailable so callers nack instead of crashing."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (DuplicateKeyError, DuplicateSignal, StoreUnavailable):
            raise
        except (ConnectionFailure, PyMongoError, OSError) as e:
            raise StoreUnavailable(f"store unavailable: {type(e).__name__}: {e}") from e

    return wrapper
