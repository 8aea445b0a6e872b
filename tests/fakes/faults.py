"""Fault injection: a store whose Nth call fails, for each N a test chooses."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from execution_service.adapters.store import Store
from execution_service.errors import StoreUnavailable


class Killed(BaseException):
    """The process died here (no `except Exception` in the service can catch it)."""


def unavailable(name: str) -> BaseException:
    return StoreUnavailable(f"store unavailable: injected fault at {name}")


class FaultAtCall(Store):
    """The real Store, counting every call of its methods once `arm`ed; call number `fail_at`
    raises `error(method name)` instead of running (so nothing of it reaches the database), or,
    armed with `lands=True`, after running (the write landed, its answer was lost)."""

    calls = 0
    fail_at: int | None = None
    error: Callable[[str], BaseException] = staticmethod(unavailable)
    failed: str | None = None
    lands = False

    def arm(self, fail_at: int | None, error: Callable[[str], BaseException] = unavailable,
            lands: bool = False):
        self.calls, self.fail_at, self.error, self.failed = 0, fail_at, error, None
        self.lands = lands

    def __getattribute__(self, name):
        attribute = super().__getattribute__(name)
        if name.startswith("_") or name == "arm" or not inspect.ismethod(attribute):
            return attribute

        def counted(*args, **kwargs):
            calls = self.calls + 1
            self.calls = calls
            if calls == self.fail_at:
                self.failed = name
                if self.lands:
                    attribute(*args, **kwargs)
                raise self.error(name)
            return attribute(*args, **kwargs)

        return counted

