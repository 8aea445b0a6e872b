"""The daemon's Kite session keeper (SPEC §14): one halt however many refusals, the renewed
token handed to the adapter, the halt lifted only once Kite accepts it; store faults."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from execution_service.adapters.store import Store, open_store
from execution_service.config import load_settings
from execution_service.errors import StoreUnavailable, TransientBrokerError
from execution_service.service.broker_sessions import (
    KITE,
    SessionKeeper,
    save_kite_session,
    with_stored_session,
)
from execution_service.service.risk import active_halts
from tests.fakes.service_fakes import RecordingNotifier

NOW = datetime(2026, 11, 30, 3, 45, tzinfo=UTC)


class KiteBroker:
    """Stands in for the Zerodha adapter: records tokens, answers connect as told."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.refuse = False
        self.connects = 0

    def set_access_token(self, token: str) -> None:
        self.tokens.append(token)

    async def connect(self) -> None:
        self.connects += 1
        if self.refuse:
            raise TransientBrokerError("Kite session expired (TokenException)")


class Brokers:
    def __init__(self, broker) -> None:
        self.brokers = {KITE: broker}
        self.settings: dict = {}

    def update_settings(self, **fields) -> None:
        self.settings.update(fields)


class DownHalts:
    """The halt store unreachable."""

    def list_halts(self):
        raise StoreUnavailable("store unavailable: injected fault")

    save_halt = delete_halt = list_halts


@pytest.fixture
def store():
    handle = open_store("mongomock://", "trading", None)
    yield Store(handle.database)
    handle.close()


@pytest.fixture
def keeper(store):
    notifier = RecordingNotifier()
    keeper = SessionKeeper(store, notifier, lambda: NOW, interval=0.01)
    broker = KiteBroker()
    keeper.attach(Brokers(broker))
    return keeper, broker, notifier


def test_given_many_refusals_then_one_halt_of_the_zerodha_accounts(keeper, store):
    keeper, _, notifier = keeper
    for _ in range(5):
        keeper.expired(KITE)
    keeper.expired("IBKR")  # no session to renew there: nothing
    [halt] = active_halts(store)
    assert (halt["_id"], halt["reason"], halt["by"]) == ("broker:ZERODHA",
                                                         "Kite session expired", "kite")
    assert notifier.events == []  # the daemon's halt watcher alerts, once, from the halt


async def test_given_a_login_after_the_halt_then_the_token_is_handed_over_and_the_halt_lifted(
        keeper, store):
    keeper, broker, _ = keeper
    keeper.expired(KITE)
    halt = save_kite_session(store, {"access_token": "tok_2", "user_id": "AB1234"},
                             NOW + timedelta(minutes=1), "cli:ops")
    assert halt["_id"] == "broker:ZERODHA"  # still standing: the daemon lifts it
    await keeper._poll()
    assert broker.tokens == ["tok_2"] and broker.connects == 1
    assert active_halts(store) == []
    await keeper._poll()  # the same session again: nothing more
    assert broker.tokens == ["tok_2"]


async def test_given_kite_still_refusing_the_new_token_then_the_halt_stays(keeper, store):
    keeper, broker, _ = keeper
    keeper.expired(KITE)
    broker.refuse = True
    save_kite_session(store, {"access_token": "tok_bad"}, NOW + timedelta(minutes=1), "cli:ops")
    await keeper._poll()
    assert [h["_id"] for h in active_halts(store)] == ["broker:ZERODHA"]


async def test_given_the_keeper_running_when_a_login_is_saved_then_it_is_used_within_a_poll(
        keeper, store):
    keeper, broker, _ = keeper
    stop = asyncio.Event()
    task = asyncio.create_task(keeper.run(stop))
    save_kite_session(store, {"access_token": "tok_3"}, NOW + timedelta(minutes=2), "cli:ops")
    for _ in range(500):
        if broker.tokens:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert broker.tokens == ["tok_3"]


def test_given_the_store_down_when_the_session_expires_then_one_direct_alert(keeper, store):
    keeper, _, notifier = keeper
    keeper._store = DownHalts()
    keeper.expired(KITE)
    assert [event.key for event in notifier.events] == ["kite-session-expired"]


def test_given_a_stored_session_and_no_fixed_token_then_the_daemon_starts_with_it(store):
    save_kite_session(store, {"access_token": "tok_s"}, NOW, "cli:ops")
    settings = load_settings(environ={"KITE_API_KEY": "k"})
    assert with_stored_session(settings, store).KITE_ACCESS_TOKEN == "tok_s"
    fixed = load_settings(environ={"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "fixed"})
    assert with_stored_session(fixed, store).KITE_ACCESS_TOKEN == "fixed"
    assert "tok_s" not in repr(with_stored_session(settings, store))
