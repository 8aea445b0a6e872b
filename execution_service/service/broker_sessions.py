"""Broker sessions (SPEC §14): the daily Kite access token, kept in the store encrypted.

Everything that touches the token is here (and in brokers/kite_login.py, which talks to
Kite): `kite login` saves it with `save_kite_session`, sealed with CREDENTIALS_KEY (the
`SecretBox` of credentials.py; the key is never in the store, and `kite login` refuses to run
without it); the running daemon's `SessionKeeper` hands a newly saved token to the Zerodha
adapter within `interval` seconds, and turns the adapter's "session refused" into one halt of
every Zerodha account, which it lifts once a new session works (checked with one call). A
session the daemon cannot decrypt (no key, another key) is one warning line and is not used;
a token left in clear by an older version is sealed at start, or, without a key, removed from
the store and kept in the daemon's memory only. The token is never logged, never in `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from execution_service.credentials import SecretBox
from execution_service.domain.notices import AlertKind, ServiceAlert
from execution_service.errors import ExecutionError, FatalConfigError, StoreUnavailable
from execution_service.redaction import protect
from execution_service.service.risk import clear_halt, get_halt, set_halt
from execution_service.service.store_thread import StoreThread

logger = logging.getLogger(__name__)
KITE = "ZERODHA"
SESSION_EXPIRED_REASON = "Kite session expired"
SEALED = "access_token_encrypted"  # the Fernet token holding {"access_token": ...}
CLEAR = "access_token"  # how versions before the encryption kept it


def save_kite_session(store, session: dict, at: datetime, by: str,
                      box: SecretBox) -> dict | None:
    """Keep a session from `generate_session`, its token sealed; returns the expired-session
    halt if one stands. The daemon lifts it once it has the new token and Kite accepted it
    (lifting it here would let an order through before the daemon has the token)."""
    protect([session["access_token"]])
    store.save_broker_session(KITE, {SEALED: box.seal({CLEAR: session["access_token"]}),
                                     "user_id": session.get("user_id"), "saved_at": at,
                                     "by": by})
    return get_halt(store, broker=KITE)


def session_token(doc: dict | None, box: SecretBox | None) -> str | None:
    """The access token a `broker_sessions` document holds, or None; FatalConfigError (one
    line naming CREDENTIALS_KEY) when it is sealed and cannot be opened with this key."""
    if not doc:
        return None
    if doc.get(CLEAR):  # written in clear by an older version (sealed at the daemon's start)
        protect([doc[CLEAR]])
        return doc[CLEAR]
    if not doc.get(SEALED):
        return None
    if box is None:
        raise FatalConfigError("the stored Kite session is encrypted and CREDENTIALS_KEY is "
                               "not set: set the key `kite login` used, or log in again")
    try:
        return box.open(doc[SEALED], "the stored Kite session")[CLEAR]
    except (FatalConfigError, KeyError):
        raise FatalConfigError("the stored Kite session cannot be decrypted with "
                               "CREDENTIALS_KEY (not the key `kite login` used?): run "
                               "`execution-service kite login` again") from None


def with_stored_session(settings, store):
    """Settings whose KITE_ACCESS_TOKEN is the stored session's when none was given: a fixed
    KITE_ACCESS_TOKEN wins at start; a `kite login` after the start replaces it (see below)."""
    if settings.KITE_ACCESS_TOKEN or not settings.KITE_API_KEY:
        return settings
    try:
        token = session_token(store.get_broker_session(KITE), SecretBox.from_settings(settings))
    except StoreUnavailable:
        return settings
    except FatalConfigError as e:
        logger.warning("Kite session not used: %s", e)
        return settings
    if token is None:
        return settings
    return settings.model_copy(update={"KITE_ACCESS_TOKEN": token})


class SessionKeeper:
    """The daemon's side: new tokens in, expired sessions out as one halt."""

    def __init__(self, store, notifier, clock: Callable[[], datetime], interval: float = 1.0,
                 box: SecretBox | None = None, store_thread: StoreThread | None = None):
        self._store = store
        self._notifier = notifier
        self._clock = clock
        self._interval = interval
        self._box = box  # CREDENTIALS_KEY's: opens the sealed token
        self._run = (store_thread or StoreThread(inline=True)).run  # store calls off the loop
        self._brokers = None
        self._seen: object = None  # saved_at of the session already in use
        self._halting = False
        self._halts: set[asyncio.Task] = set()

    def attach(self, brokers) -> None:
        """The broker factory (built with the stored token: `with_stored_session`); the session
        stored now counts as already in use, and a token found there in clear is sealed."""
        self._brokers = brokers
        with contextlib.suppress(StoreUnavailable):
            doc = self._store.get_broker_session(KITE)
            self._seen = doc.get("saved_at") if doc else None
            if doc and doc.get(CLEAR):
                self._seal_clear_token(doc)

    def _seal_clear_token(self, doc: dict) -> None:
        protect([doc[CLEAR]])
        kept = {key: value for key, value in doc.items() if key not in ("_id", CLEAR)}
        if self._box is not None:
            kept[SEALED] = self._box.seal({CLEAR: doc[CLEAR]})
        self._store.save_broker_session(KITE, kept)
        logger.warning("The stored Kite session held its access token in clear: %s",
                       "now encrypted with CREDENTIALS_KEY" if self._box is not None else
                       "removed from the store (set CREDENTIALS_KEY to keep sessions there, "
                       "encrypted); this daemon keeps it in memory until it stops")

    def expired(self, broker_name: str) -> None:
        """The adapter's session listener (on the event loop): halt every account of this
        broker once, on the store thread; repeats while the halt stands change nothing."""
        if broker_name != KITE or self._halting:
            return
        self._halting = True
        task = asyncio.get_running_loop().create_task(self._halt_expired())
        self._halts.add(task)
        task.add_done_callback(self._halts.discard)

    async def settled(self) -> None:
        """Wait for the session halts being stored now."""
        await asyncio.gather(*self._halts, return_exceptions=True)

    async def _halt_expired(self) -> None:
        try:
            await self._run(self._store_halt)
        except StoreUnavailable as e:
            self._halting = False  # the next refusal tries again
            logger.error("Kite session expired and the halt could not be stored: %s", e)
            self._notifier.notify(ServiceAlert(
                AlertKind.OPERATOR, f"{SESSION_EXPIRED_REASON}: run `execution-service kite "
                "login` (the halt could not be stored)", key="kite-session-expired"))

    def _store_halt(self) -> None:
        if get_halt(self._store, broker=KITE) is None:
            set_halt(self._store, SESSION_EXPIRED_REASON, at=self._clock(), by="kite",
                     broker=KITE)
            logger.warning("Kite session expired: every Zerodha account halted until "
                           "`execution-service kite login`")

    async def run(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            try:
                if first:  # a halt left by an earlier run, and a token renewed meanwhile
                    await self._lift_if_session_works()
                    first = False
                await self._poll()
            except ExecutionError as e:
                logger.warning("Kite session check failed: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def _poll(self) -> None:
        doc = await self._run(self._store.get_broker_session, KITE)
        if doc is None or doc.get("saved_at") == self._seen:
            if self._halting and await self._run(get_halt, self._store, broker=KITE) is None:
                self._halting = False  # lifted by `kite login` (or by hand)
            return
        self._seen = doc.get("saved_at")
        try:
            token = session_token(doc, self._box)
        except FatalConfigError as e:  # once per saved session, not per poll
            logger.warning("Kite session saved %s by %s not used: %s", doc.get("saved_at"),
                           doc.get("by"), e)
            return
        if token is None:
            return
        self._brokers.update_settings(KITE_ACCESS_TOKEN=token)
        broker = self._brokers.brokers.get(KITE)
        if broker is not None:
            broker.set_access_token(token)
        logger.info("Kite session renewed (user %s, saved %s by %s): in use now",
                    doc.get("user_id"), doc.get("saved_at"), doc.get("by"))
        await self._lift_if_session_works()

    async def _lift_if_session_works(self) -> None:
        broker = self._brokers.brokers.get(KITE) if self._brokers is not None else None
        if broker is None or await self._run(get_halt, self._store, broker=KITE) is None:
            self._halting = False
            return
        try:
            await broker.connect()
        except ExecutionError as e:
            logger.info("Kite session still refused (%s): the halt stays", e)
            return
        if await self._run(clear_halt, self._store, broker=KITE) is not None:
            logger.info("Kite session works again: Zerodha accounts resumed")
        self._halting = False
