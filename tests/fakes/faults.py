"""Fault injection: a store whose Nth call fails, for each N a test chooses."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable

from execution_service.adapters.store import Store
from execution_service.errors import StoreUnavailable


class Killed(BaseException):
    """The process died here (no `except Exception` in the service can catch it)."""


def unavailable(name: str) -> BaseException:
    return StoreUnavailable(f"store unavailable: injected fault at {name}")


class FaultAtCall(Store):
    """The real Store, counting every call of its methods once `arm`ed; call number `fail_at`
    raises `error(method name)` instead of running (so nothing of it reaches the database)."""

    calls = 0
    fail_at: int | None = None
    error: Callable[[str], BaseException] = staticmethod(unavailable)
    failed: str | None = None

    def arm(self, fail_at: int | None, error: Callable[[str], BaseException] = unavailable):
        self.calls, self.fail_at, self.error, self.failed = 0, fail_at, error, None

    def __getattribute__(self, name):
        attribute = super().__getattribute__(name)
        if name.startswith("_") or name == "arm" or not inspect.ismethod(attribute):
            return attribute

        def counted(*args, **kwargs):
            calls = self.calls + 1
            self.calls = calls
            if calls == self.fail_at:
                self.failed = name
                raise self.error(name)
            return attribute(*args, **kwargs)

        return counted


class OutageSwitch:
    down = False
    hang_seconds = 0.0  # each call blocks this long before it fails (the driver's timeout)


class _FlakyCollection:
    """A collection whose every call raises pymongo's ServerSelectionTimeoutError while the
    switch is down: what the driver raises when the MongoDB server is gone."""

    def __init__(self, collection, switch: OutageSwitch) -> None:
        self._collection, self._switch = collection, switch

    def __getattr__(self, name):
        attribute = getattr(self._collection, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            if self._switch.down:
                from pymongo.errors import ServerSelectionTimeoutError

                time.sleep(self._switch.hang_seconds)
                raise ServerSelectionTimeoutError("injected outage: no server reachable")
            return attribute(*args, **kwargs)

        return call

    def __getitem__(self, name):
        return _FlakyCollection(self._collection[name], self._switch)


class FlakyDatabase:
    """A database (every collection: the store's and the mock broker's ledger) that is
    unreachable while `switch.down` is set."""

    def __init__(self, database, switch: OutageSwitch) -> None:
        self._database, self._switch = database, switch

    def __getitem__(self, name):
        return _FlakyCollection(self._database[name], self._switch)

    def __getattr__(self, name):
        return getattr(self._database, name)
