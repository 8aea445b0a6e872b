"""Broker sessions (SPEC §14): the daily Kite access token, kept in the store.

Everything that touches the token is here (and in brokers/kite_login.py, which talks to
Kite): `kite login` saves it with `save_kite_session`; the running daemon's `SessionKeeper`
hands a newly saved token to the Zerodha adapter within `interval` seconds, and turns the
adapter's "session refused" into one halt of every Zerodha account, which it lifts once a new
session works (checked with one call). The token itself is never logged and never part of `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from execution_service.domain.notices import AlertKind, ServiceAlert
from execution_service.errors import ExecutionError, StoreUnavailable
from execution_service.service.risk import clear_halt, get_halt, set_halt

logger = logging.getLogger(__name__)
KITE = "ZERODHA"
SESSION_EXPIRED_REASON = "Kite session expired"


def save_kite_session(store, session: dict, at: datetime, by: str) -> dict | None:
    """Keep a session from `generate_session`; returns the expired-session halt if one stands.
    The daemon lifts it once it has the new token and Kite accepted it (lifting it here would
    let an order through before the daemon has the token)."""
    store.save_broker_session(KITE, {"access_token": session["access_token"],
                                     "user_id": session.get("user_id"), "saved_at": at,
                                     "by": by})
    return get_halt(store, broker=KITE)


def with_stored_session(settings, store):
    """Settings whose KITE_ACCESS_TOKEN is the stored session's when none was given: a fixed
    KITE_ACCESS_TOKEN wins at start; a `kite login` after the start replaces it (see below)."""
    if settings.KITE_ACCESS_TOKEN or not settings.KITE_API_KEY:
        return settings
    try:
        doc = store.get_broker_session(KITE)
    except StoreUnavailable:
        return settings
    if doc is None or not doc.get("access_token"):
        return settings
    return settings.model_copy(update={"KITE_ACCESS_TOKEN": doc["access_token"]})


class SessionKeeper:
    """The daemon's side: new tokens in, expired sessions out as one halt."""

    def __init__(self, store, notifier, clock: Callable[[], datetime], interval: float = 1.0):
        self._store = store
        self._notifier = notifier
        self._clock = clock
        self._interval = interval
        self._brokers = None
        self._seen: object = None  # saved_at of the session already in use
        self._halting = False

    def attach(self, brokers) -> None:
        """The broker factory; the session stored now counts as already in use."""
        self._brokers = brokers
        with contextlib.suppress(StoreUnavailable):
            doc = self._store.get_broker_session(KITE)
            self._seen = doc.get("saved_at") if doc else None

    def expired(self, broker_name: str) -> None:
        """The adapter's session listener (on the event loop): halt every account of this
        broker once; repeats while the halt stands change nothing."""
        if broker_name != KITE or self._halting:
            return
        try:
            if get_halt(self._store, broker=KITE) is None:
                set_halt(self._store, SESSION_EXPIRED_REASON, at=self._clock(),
                         by="kite", broker=KITE)
                logger.warning("Kite session expired: every Zerodha account halted until "
                               "`execution-service kite login`")
            self._halting = True
        except StoreUnavailable as e:
            logger.error("Kite session expired and the halt could not be stored: %s", e)
            self._notifier.notify(ServiceAlert(
                AlertKind.OPERATOR, f"{SESSION_EXPIRED_REASON}: run `execution-service kite "
                "login` (the halt could not be stored)", key="kite-session-expired"))

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
        doc = self._store.get_broker_session(KITE)
        if doc is None or doc.get("saved_at") == self._seen or not doc.get("access_token"):
            if self._halting and get_halt(self._store, broker=KITE) is None:
                self._halting = False  # lifted by `kite login` (or by hand)
            return
        self._seen = doc.get("saved_at")
        self._brokers.update_settings(KITE_ACCESS_TOKEN=doc["access_token"])
        broker = self._brokers.brokers.get(KITE)
        if broker is not None:
            broker.set_access_token(doc["access_token"])
        logger.info("Kite session renewed (user %s, saved %s by %s): in use now",
                    doc.get("user_id"), doc.get("saved_at"), doc.get("by"))
        await self._lift_if_session_works()

    async def _lift_if_session_works(self) -> None:
        broker = self._brokers.brokers.get(KITE) if self._brokers is not None else None
        if broker is None or get_halt(self._store, broker=KITE) is None:
            self._halting = False
            return
        try:
            await broker.connect()
        except ExecutionError as e:
            logger.info("Kite session still refused (%s): the halt stays", e)
            return
        if clear_halt(self._store, broker=KITE) is not None:
            logger.info("Kite session works again: Zerodha accounts resumed")
        self._halting = False
