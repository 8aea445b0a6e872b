"""BrokerFactory: an explicit broker name -> adapter table; an unknown name raises."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from brokers.base import Broker
from execution_service.errors import FatalConfigError


class Settings(Protocol):
    """What the factory reads of the service's settings (each adapter's `from_settings` reads
    its own names)."""

    USE_MOCK_BROKER: bool
    KITE_API_KEY: Any
    KITE_ACCESS_TOKEN: Any
    KITE_API_URL: Any
    KITE_ORDERS_PER_SECOND: float


# (settings, the mock broker's ledger) -> broker; only the mock broker keeps a ledger
BrokerBuilder = Callable[[Settings, object], Broker]
# (broker name, connected, detail): a broker's connection came or went
BrokerConnectionListener = Callable[[str, bool, str], None]


def _build_mock(settings: Settings, ledger) -> Broker:
    from brokers.mock import MockBroker, MockSettings

    return MockBroker(ledger, MockSettings.from_settings(settings))


def _build_zerodha(settings: Settings, ledger) -> Broker:
    if not (settings.KITE_API_KEY and settings.KITE_ACCESS_TOKEN):
        raise FatalConfigError("ZERODHA accounts need KITE_API_KEY and a session: run "
                               "`execution-service kite login` (or set KITE_ACCESS_TOKEN)")
    from brokers.zerodha import ZerodhaBroker

    return ZerodhaBroker(settings.KITE_API_KEY, settings.KITE_ACCESS_TOKEN,
                         root=settings.KITE_API_URL,
                         orders_per_second=settings.KITE_ORDERS_PER_SECOND)


def _build_ibkr(settings: Settings, ledger) -> Broker:
    from brokers.ibkr import IbkrBroker, IbkrSettings

    return IbkrBroker(IbkrSettings.from_settings(settings))


BUILDERS: dict[str, BrokerBuilder] = {
    "IBKR": _build_ibkr,
    "MOCK": _build_mock,
    "ZERODHA": _build_zerodha,
}


class BrokerFactory:
    """Builds one broker per name on first use and hands out the same one afterwards."""

    def __init__(self, settings: Settings, mock_ledger,
                 listener: BrokerConnectionListener | None = None,
                 builders: dict[str, BrokerBuilder] | None = None, offload=None,
                 session_listener: Callable[[str], None] | None = None):
        self._settings = settings
        self._session_listener = session_listener
        self._mock_ledger = mock_ledger
        self._offload = offload  # where a broker that keeps its book in the store runs it
        self._listener = listener
        self._builders = BUILDERS if builders is None else builders
        self._brokers: dict[str, Broker] = {}
        self.lost: dict[str, str] = {}  # broker name -> what its adapter last said on losing it

    def broker_name_for(self, account: dict) -> str:
        """USE_MOCK_BROKER routes every account to the paper broker (SPEC §2.5)."""
        return "MOCK" if self._settings.USE_MOCK_BROKER else str(account.get("broker", "")).upper()

    def check(self, name: str) -> None:
        """Fail at start, not at the first order, when a broker cannot be built."""
        if name not in self._builders:
            known = ", ".join(sorted(self._builders))
            raise FatalConfigError(f"unknown broker {name!r}: use one of {known}")

    def create_broker(self, name: str) -> Broker:
        self.check(name)
        if name not in self._brokers:
            broker = self._builders[name](self._settings, self._mock_ledger)
            offload_store_calls = getattr(broker, "offload_store_calls", None)
            if offload_store_calls is not None and self._offload is not None:
                offload_store_calls(self._offload)
            broker.connection_listener = (
                lambda connected, detail, n=name: self._connection_changed(n, connected, detail))
            if self._session_listener is not None:
                broker.session_listener = lambda n=name: self._session_listener(n)
            self._brokers[name] = broker
        return self._brokers[name]

    def update_settings(self, update: dict | None = None, **fields) -> None:
        """Settings learnt after start-up (a renewed session token, an account's own broker
        credentials), for brokers built from now on."""
        update = {**(update or {}), **fields}
        if update:
            self._settings = self._settings.model_copy(update=update)

    def _connection_changed(self, name: str, connected: bool, detail: str) -> None:
        if connected:
            self.lost.pop(name, None)
        else:
            self.lost[name] = detail
        if self._listener is not None:
            self._listener(name, connected, detail)

    @property
    def brokers(self) -> dict[str, Broker]:
        return dict(self._brokers)

    async def close(self) -> None:
        for broker in self._brokers.values():
            await broker.close()
