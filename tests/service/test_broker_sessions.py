"""The daemon's Kite session keeper (SPEC §14): one halt however many refusals, the renewed
token handed to the adapter, the halt lifted only once Kite accepts it; store faults."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from execution_service.adapters.store import Store, open_store
from execution_service.config import load_settings
from execution_service.credentials import SecretBox
from execution_service.errors import FatalConfigError, StoreUnavailable, TransientBrokerError
from execution_service.service.broker_sessions import (
    KITE,
    SessionKeeper,
    save_kite_session,
    session_token,
    with_stored_session,
)
from execution_service.service.risk import active_halts
from tests.fakes.served_api import until
from tests.fakes.service_fakes import RecordingNotifier

NOW = datetime(2026, 11, 30, 3, 45, tzinfo=UTC)
KEY = SecretBox.new_key()
BOX = SecretBox(KEY)


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
    keeper = SessionKeeper(store, notifier, lambda: NOW, interval=0.01, box=BOX)
    broker = KiteBroker()
    keeper.attach(Brokers(broker))
    return keeper, broker, notifier


async def test_given_many_refusals_then_one_halt_of_the_zerodha_accounts(keeper, store):
    keeper, _, notifier = keeper
    for _ in range(5):
        keeper.expired(KITE)
    keeper.expired("IBKR")  # no session to renew there: nothing
    await keeper.settled()
    [halt] = active_halts(store)
    assert (halt["_id"], halt["reason"], halt["by"]) == ("broker:ZERODHA",
                                                         "Kite session expired", "kite")
    assert notifier.events == []  # the daemon's halt watcher alerts, once, from the halt


async def test_given_a_login_after_the_halt_then_the_token_is_handed_over_and_the_halt_lifted(
        keeper, store):
    keeper, broker, _ = keeper
    keeper.expired(KITE)
    await keeper.settled()
    halt = save_kite_session(store, {"access_token": "tok_2", "user_id": "AB1234"},
                             NOW + timedelta(minutes=1), "cli:ops", BOX)
    assert halt["_id"] == "broker:ZERODHA"  # still standing: the daemon lifts it
    await keeper._poll()
    assert broker.tokens == ["tok_2"] and broker.connects == 1
    assert active_halts(store) == []
    await keeper._poll()  # the same session again: nothing more
    assert broker.tokens == ["tok_2"]


async def test_given_kite_still_refusing_the_new_token_then_the_halt_stays(keeper, store):
    keeper, broker, _ = keeper
    keeper.expired(KITE)
    await keeper.settled()
    broker.refuse = True
    save_kite_session(store, {"access_token": "tok_bad"}, NOW + timedelta(minutes=1), "cli:ops",
                      BOX)
    await keeper._poll()
    assert [h["_id"] for h in active_halts(store)] == ["broker:ZERODHA"]


async def test_given_the_keeper_running_when_a_login_is_saved_then_it_is_used_within_a_poll(
        keeper, store):
    keeper, broker, _ = keeper
    stop = asyncio.Event()
    task = asyncio.create_task(keeper.run(stop))
    save_kite_session(store, {"access_token": "tok_3"}, NOW + timedelta(minutes=2), "cli:ops",
                      BOX)
    await until(lambda: broker.tokens, what="the token handed over")
    stop.set()
    await task
    assert broker.tokens == ["tok_3"]


async def test_given_the_store_down_when_the_session_expires_then_one_direct_alert(keeper,
                                                                                   store):
    keeper, _, notifier = keeper
    keeper._store = DownHalts()
    keeper.expired(KITE)
    await keeper.settled()
    assert [event.key for event in notifier.events] == ["kite-session-expired"]


def test_given_a_stored_session_and_no_fixed_token_then_the_daemon_starts_with_it(store):
    save_kite_session(store, {"access_token": "tok_s"}, NOW, "cli:ops", BOX)
    settings = load_settings(environ={"KITE_API_KEY": "k", "CREDENTIALS_KEY": KEY})
    assert with_stored_session(settings, store).KITE_ACCESS_TOKEN == "tok_s"
    fixed = load_settings(environ={"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "fixed",
                                   "CREDENTIALS_KEY": KEY})
    assert with_stored_session(fixed, store).KITE_ACCESS_TOKEN == "fixed"
    assert "tok_s" not in repr(with_stored_session(settings, store))


# the token at rest (issue 22): sealed with CREDENTIALS_KEY, read back, never in clear ---------

TOKEN = "kite_access_tok_9f3a1c"


def test_given_a_login_then_the_stored_document_holds_no_token_in_clear_and_reads_back(store):
    save_kite_session(store, {"access_token": TOKEN, "user_id": "AB1234"}, NOW, "cli:ops", BOX)
    raw = store.db["broker_sessions"].find_one({"_id": KITE})
    assert TOKEN not in repr(raw) and "access_token" not in raw
    assert session_token(raw, BOX) == TOKEN
    assert (raw["user_id"], raw["by"]) == ("AB1234", "cli:ops")


def test_given_another_key_or_none_then_one_line_naming_credentials_key_and_no_token(store,
                                                                                       caplog):
    """Given a session sealed with one key; when the daemon starts with another key, or none;
    then it starts without the session, saying so in one line (no traceback, no token)."""
    save_kite_session(store, {"access_token": TOKEN}, NOW, "cli:ops", BOX)
    doc = store.get_broker_session(KITE)
    with pytest.raises(FatalConfigError, match="cannot be decrypted with CREDENTIALS_KEY"):
        session_token(doc, SecretBox(SecretBox.new_key()))
    with pytest.raises(FatalConfigError, match="CREDENTIALS_KEY is not set"):
        session_token(doc, None)
    for key in (SecretBox.new_key(), None):
        settings = load_settings(environ={"KITE_API_KEY": "k", **(
            {"CREDENTIALS_KEY": key} if key else {})})
        caplog.clear()
        assert with_stored_session(settings, store).KITE_ACCESS_TOKEN is None
        [line] = [r for r in caplog.records if r.name.endswith("broker_sessions")]
        assert "CREDENTIALS_KEY" in line.getMessage() and line.exc_info is None
        assert TOKEN not in caplog.text


async def test_given_a_login_sealed_with_another_key_then_the_keeper_warns_once_and_keeps_its_token(  # noqa: E501
        keeper, store, caplog):
    keeper, broker, _ = keeper
    save_kite_session(store, {"access_token": TOKEN}, NOW + timedelta(minutes=3), "cli:other",
                      SecretBox(SecretBox.new_key()))
    for _ in range(3):
        await keeper._poll()
    assert broker.tokens == []
    warnings = [r for r in caplog.records if "not used" in r.getMessage()]
    assert len(warnings) == 1 and "CREDENTIALS_KEY" in warnings[0].getMessage()


@pytest.mark.parametrize("with_key", [True, False])
def test_given_a_token_left_in_clear_by_an_older_version_when_the_daemon_starts_then_it_is_sealed_or_removed_and_still_used(  # noqa: E501
        store, with_key, caplog):
    store.save_broker_session(KITE, {"access_token": TOKEN, "user_id": "AB1234",
                                     "saved_at": NOW, "by": "cli:ops"})
    settings = load_settings(environ={"KITE_API_KEY": "k", **(
        {"CREDENTIALS_KEY": KEY} if with_key else {})})
    started = with_stored_session(settings, store)
    keeper = SessionKeeper(store, RecordingNotifier(), lambda: NOW,
                           box=SecretBox.from_settings(settings))
    keeper.attach(Brokers(KiteBroker()))
    assert started.KITE_ACCESS_TOKEN == TOKEN  # this daemon trades with it either way
    raw = store.db["broker_sessions"].find_one({"_id": KITE})
    assert TOKEN not in repr(raw) and raw["saved_at"] is not None
    assert session_token(raw, BOX if with_key else None) == (TOKEN if with_key else None)
    [line] = [r.getMessage() for r in caplog.records if "in clear" in r.getMessage()]
    assert ("now encrypted" in line) is with_key and TOKEN not in caplog.text


async def test_given_the_store_down_when_the_keeper_polls_then_the_check_fails_in_one_line(
        keeper, store, caplog):
    """Given a store that cannot be read; when the keeper's loop runs; then each failed check
    is a warning without a traceback, and a login saved once the store is back is used."""
    keeper, broker, _ = keeper
    keeper._store = DownHalts()
    keeper._store.get_broker_session = DownHalts.list_halts.__get__(keeper._store)
    stop = asyncio.Event()
    task = asyncio.create_task(keeper.run(stop))
    await until(lambda: any("Kite session check failed" in r.getMessage()
                            for r in caplog.records), what="a failed check")
    keeper._store = store
    save_kite_session(store, {"access_token": TOKEN}, NOW + timedelta(minutes=4), "cli:ops", BOX)
    await until(lambda: broker.tokens, what="the token handed over")
    stop.set()
    await task
    assert broker.tokens == [TOKEN]
    assert all(r.exc_info is None for r in caplog.records)
