"""Pre-trade risk gate and the kill switch (issue 9): the reads behind domain.risk.

Halts live in the `trading_halts` collection, one document per scope:
`{_id: "global" | "account:<id>", account_id, reason, cancel_open, halted_at}`. Every replica
reads them at most every `halt_cache_seconds`, so a halt set by the CLI on any host is obeyed
everywhere within a second. Orders per minute are counted from `execution_confirmations`
(received in the last 60 s, not REJECTED), so the count is shared by every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from execution_service.domain.notices import AlertKind, ServiceAlert
from execution_service.domain.records import iso
from execution_service.domain.risk import (
    FLAT,
    MAX_ORDERS_PER_MINUTE,
    MAX_POSITION_NOTIONAL,
    NONE_WORKING,
    RiskBreach,
    RiskSettings,
    WorkingOrders,
    first_breach,
    net_exposure,
    working_orders,
)
from execution_service.domain.signals import Signal
from execution_service.errors import StoreUnavailable, UnknownAccount
from execution_service.service.ports import HaltStore, RiskStore

logger = logging.getLogger(__name__)
HALTS = "trading_halts"
GLOBAL_HALT = "global"
RATE_WINDOW = timedelta(seconds=60)


def halt_id(account_id: str | None, broker: str | None = None) -> str:
    if broker is not None:
        return f"broker:{broker}"
    return GLOBAL_HALT if account_id is None else f"account:{account_id}"


def halt_scope(halt: dict) -> str:
    if halt.get("broker"):
        return f"{halt['broker']} accounts"
    return "all accounts" if halt.get("account_id") is None else f"account {halt['account_id']}"


# halts (CLI and daemon), stored through the store port ---------------------------------------

def set_halt(store: HaltStore, reason: str, account_id: str | None = None,
             cancel_open: bool = False, *, at: datetime, by: str | None = None,
             broker: str | None = None) -> dict:
    """Halt all trading (account_id None), one account's, or every account of one broker;
    replaces an earlier halt there. `by` (who asked) is kept on the halt when given."""
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a halt needs a reason")
    doc = {"_id": halt_id(account_id, broker), "account_id": account_id, "reason": reason,
           "cancel_open": bool(cancel_open), "halted_at": at}
    if by is not None:
        doc["by"] = by
    if broker is not None:
        doc["broker"] = broker
    store.save_halt(doc)
    return doc


def clear_halt(store: HaltStore, account_id: str | None = None, broker: str | None = None,
               *, by: str | None = None, at: datetime | None = None) -> dict | None:
    """Lift the global halt (or one account's, or one broker's); the halt that was lifted,
    None if none was. With `by`, the lifted halt is kept (`trading_halts_lifted`) with who
    lifted it, when."""
    lifted = store.delete_halt(halt_id(account_id, broker))
    if lifted is not None and by is not None:
        store.save_lifted_halt({**lifted, "_id": f"{lifted['_id']}:{iso(at)}", "lifted_by": by,
                                "lifted_at": at})
    return lifted


def get_halt(store: HaltStore, account_id: str | None = None, broker: str | None = None
             ) -> dict | None:
    wanted = halt_id(account_id, broker)
    return next((doc for doc in store.list_halts() if doc["_id"] == wanted), None)


def halt_trading(store, reason: str, account_id: str | None, cancel_open: bool, *,
                 at: datetime, by: str) -> dict:
    """The kill switch as operators use it (CLI, HTTP API): the account must exist."""
    if account_id is not None and store.get_account(account_id) is None:
        raise UnknownAccount(f"no account {account_id!r}")
    doc = set_halt(store, reason, account_id, cancel_open, at=at, by=by)
    logger.warning("Trading halted for %s by %s: %s", account_id or "all accounts", by,
                   doc["reason"])
    return doc


def resume_trading(store, account_id: str | None, *, at: datetime,
                   by: str) -> tuple[dict | None, list[dict]]:
    """Lift a halt; (the halt lifted or None, the halts still active)."""
    lifted = clear_halt(store, account_id, by=by, at=at)
    if lifted is not None:
        logger.info("Trading resumed for %s by %s", account_id or "all accounts", by)
    return lifted, active_halts(store)


def active_halts(store: HaltStore) -> list[dict]:
    """Every active halt, the global one first."""
    return sorted(store.list_halts(), key=lambda doc: (doc["_id"] != GLOBAL_HALT, doc["_id"]))


# the gate ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HaltChanges:
    started: tuple[dict, ...] = ()
    ended: tuple[dict, ...] = ()


class RiskGate:
    """`check(signal, account)` right after the account check, before the claim."""

    def __init__(self, store: RiskStore, clock: Callable[[], datetime],
                 collar_pct: float | None = 10.0, halt_cache_seconds: float = 0.5,
                 timer: Callable[[], float] = time.monotonic,
                 working_orders: Callable[[str, str], list[dict]] | None = None):
        self._store = store
        # the store's working orders of (account, symbol); without it only positions count
        self._working_orders = working_orders
        self._clock = clock
        self._timer = timer  # monotonic seconds, for the halt cache only
        self._settings = RiskSettings(collar_pct)
        self._cache_seconds = halt_cache_seconds
        self._halts: dict[str, dict] = {}
        self._halts_read_at: float | None = None
        self._announced: dict[str, dict] = {}
        self._rejections: Counter[str] = Counter()

    def check(self, signal: Signal, account: dict) -> RiskBreach | None:
        """The first failing control, or None. Raises StoreUnavailable (caller nacks)."""
        halt = self._applicable(self._current_halts(), signal.account_id,
                                str(account.get("broker") or "").upper() or None)
        exposure, recent, working = FLAT, 0, NONE_WORKING
        if halt is None and account.get(MAX_POSITION_NOTIONAL) is not None:
            exposure = net_exposure(self._open_positions(signal.account_id, signal.symbol))
            working = self._working(signal)
        if halt is None and account.get(MAX_ORDERS_PER_MINUTE) is not None:
            recent = self._orders_last_minute(signal.account_id)
        breach = first_breach(signal, account, exposure=exposure, orders_last_minute=recent,
                              halt=halt, settings=self._settings, working=working)
        if breach is not None:
            self._rejections[breach.control] += 1
            logger.info("Risk control %s refused %s: %s", breach.control, signal.signal_id,
                        breach.reason)
        return breach

    def _working(self, signal: Signal) -> WorkingOrders:
        if self._working_orders is None or signal.entry_price is None:
            return NONE_WORKING
        # a MODIFY checks its order as modified: the order's own record must not count twice
        others = [doc for doc in self._working_orders(signal.account_id, signal.symbol)
                  if doc.get("signal_id") != signal.signal_id]
        return working_orders(others, signal.entry_price)

    def halt_for(self, account_id: str, broker: str | None = None) -> dict | None:
        """The active halt covering this account (global first), for the tracker: never raises;
        with the store down it answers from the halts last read."""
        try:
            halts = self._current_halts()
        except StoreUnavailable:
            halts = self._halts
        return self._applicable(halts, account_id, broker)

    @staticmethod
    def _applicable(halts: dict[str, dict], account_id: str, broker: str | None = None
                    ) -> dict | None:
        return halts.get(GLOBAL_HALT) or halts.get(halt_id(account_id)) or (
            halts.get(halt_id(None, broker)) if broker else None)

    def stats(self) -> dict:
        """For the heartbeat: active halts (as last read) and rejections counted by control."""
        try:
            halts = self._current_halts()
        except StoreUnavailable:
            halts = self._halts
        return {"halted": {key: {name: doc.get(name) for name in
                                 ("account_id", "broker", "reason", "cancel_open",
                                  "halted_at", "by")}
                           for key, doc in halts.items()},
                "rejections_by_control": dict(self._rejections)}

    def poll_halts(self) -> HaltChanges:
        """Halts that started or ended since the last poll (a re-halt counts as started)."""
        current = self._current_halts()
        started = tuple(doc for key, doc in current.items()
                        if self._announced.get(key, {}).get("halted_at") != doc.get("halted_at"))
        ended = tuple(doc for key, doc in self._announced.items() if key not in current)
        self._announced = dict(current)
        return HaltChanges(started, ended)

    def unannounce(self, changes: HaltChanges) -> None:
        """Acting on `changes` failed: report them again on the next poll."""
        for doc in changes.started:
            self._announced.pop(doc["_id"], None)
        for doc in changes.ended:
            self._announced.setdefault(doc["_id"], doc)

    def _current_halts(self) -> dict[str, dict]:
        now = self._timer()
        if self._halts_read_at is None or now - self._halts_read_at >= self._cache_seconds \
                or now < self._halts_read_at:
            self._halts = {doc["_id"]: doc for doc in active_halts(self._store)}
            self._halts_read_at = now
        return self._halts

    def _open_positions(self, account_id: str, symbol: str) -> list[dict]:
        """Every strategy's OPEN position: max_position_notional is per account and symbol."""
        return self._store.open_positions_for(account_id, symbol)

    def _orders_last_minute(self, account_id: str) -> int:
        return self._store.count_orders_since(account_id, self._clock() - RATE_WINDOW)


# the daemon's side: alerts and a watcher that acts on new halts -----------------------------------

def halt_alert(halt: dict) -> ServiceAlert:
    text = f"Trading halted for {halt_scope(halt)}: {halt.get('reason')}"
    if halt.get("cancel_open"):
        text += " (cancelling open orders)"
    if halt.get("by"):
        text += f" by {halt['by']}"
    return ServiceAlert(AlertKind.OPERATOR, text,
                        key=f"halt:{halt['_id']}:{iso(halt.get('halted_at'))}")


def resume_alert(halt: dict) -> ServiceAlert:
    return ServiceAlert(AlertKind.OPERATOR, f"Trading resumed for {halt_scope(halt)}",
                        key=f"resume:{halt['_id']}:{iso(halt.get('halted_at'))}")


async def watch_halts(gate: RiskGate, stop: asyncio.Event,
                      on_change: Callable[[HaltChanges], object], interval: float = 0.5,
                      run=None) -> None:
    """Poll for halt changes until `stop`; `on_change` gets each non-empty change (it may be a
    coroutine function). A store outage is logged and the poll tried again. `run`: where the
    poll's store read runs (the store thread), in place when not given."""
    while not stop.is_set():
        try:
            changes = await run(gate.poll_halts) if run is not None else gate.poll_halts()
        except StoreUnavailable as e:
            logger.debug("Halt poll failed (%s); retrying", e)
            changes = HaltChanges()
        if changes.started or changes.ended:
            try:
                result = on_change(changes)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                gate.unannounce(changes)
                logger.exception("Acting on a halt change failed; retrying on the next poll")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
