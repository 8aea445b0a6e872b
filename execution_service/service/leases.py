"""Claims with leases: one process works a signal at a time, and a dead one's work is taken
over once its lease has expired (or at once, when it ran on this host and is gone)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from execution_service.domain.records import as_utc
from execution_service.errors import ExecutionError
from execution_service.service.ports import JOURNEY_LOGGER, LeaseStore
from execution_service.service.store_thread import StoreThread

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)
ORPHAN_SECONDS = 30.0


def make_owner(started_at: datetime) -> dict:
    host, pid = socket.gethostname(), os.getpid()
    return {"id": f"{host}:{pid}:{int(started_at.timestamp() * 1000)}", "host": host, "pid": pid,
            "started_at": started_at}


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claimable(doc: dict, owner: dict, now: datetime,
              alive: Callable[[int | None], bool] = pid_alive) -> bool:
    """May `owner` take over this non-terminal record now?"""
    current = doc.get("owner") or {}
    if current.get("id") == owner["id"]:
        return False
    expires = as_utc(doc.get("lease_expires_at"))
    if expires is None or expires <= now:
        return True
    return current.get("host") == owner["host"] and not alive(current.get("pid"))


class LeaseKeeper:
    def __init__(self, store: LeaseStore, tracker, owner: dict, lease_seconds: float,
                 clock: Callable[[], datetime], supervise_seconds: float = 2.0,
                 store_thread: StoreThread | None = None):
        self._store = store
        self._store_thread = store_thread or StoreThread(inline=True)
        self._tracker = tracker
        self._owner = owner
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = clock
        self._supervise_seconds = supervise_seconds

    def publishes(self, doc: dict) -> bool:
        """Whether this process takes up what a record left unpublished: its own, one whose
        owner is gone, or one no process owns (a rejection) once ORPHAN_SECONDS old."""
        owner = doc.get("owner") or {}
        if owner.get("id") == self._owner["id"]:
            return True
        now = self._clock()
        if not owner:
            received = as_utc(doc.get("received_at"))
            return received is None or (now - received).total_seconds() > ORPHAN_SECONDS
        return claimable(doc, self._owner, now)

    @property
    def owner(self) -> dict:
        return self._owner

    def lease_until(self) -> datetime:
        return self._clock() + self._lease

    async def renew(self) -> None:
        tracked = self._tracker.tracked_ids()
        if not tracked:
            return
        lost, cancels = await self._store_thread.run_background(self._renew, tracked)
        for signal_id in lost:
            logger.info("Stopped tracking %s: another process took it over", signal_id)
            self._tracker.forget(signal_id)
        for signal_id in cancels:  # maybe asked by another replica
            self._tracker.nudge(signal_id)

    def _renew(self, tracked: list[str]) -> tuple[list[str], list[str]]:
        """(the records another process owns now, those with a cancel asked)."""
        self._store.renew_leases(tracked, self._owner["id"], self.lease_until())
        return (self._store.owned_elsewhere(tracked, self._owner["id"]),
                self._store.cancels_asked(tracked))

    async def sweep(self) -> int:
        """Take over every open record whose owner is gone; returns how many."""
        taken = await self._store_thread.run_background(self._take_over_orphans,
                                                        set(self._tracker.tracked_ids()))
        for mine, previous in taken:
            journey.info("Resuming %s order: %s (was %s)", mine["status"], mine["signal_id"],
                         previous)
            self._tracker.track(mine, recovering=True)
        return len(taken)

    def _take_over_orphans(self, tracked: set[str]) -> list[tuple[dict, str]]:
        now = self._clock()
        taken = []
        for doc in self._store.open_records():
            if doc["signal_id"] in tracked or not claimable(doc, self._owner, now):
                continue
            mine = self._store.take_over(doc, self._owner, self.lease_until(), now)
            if mine is not None:  # else another replica was faster
                taken.append((mine, (doc.get("owner") or {}).get("id", "unowned")))
        return taken

    async def retrack(self) -> int:
        """Track again every open record this process owns and no task follows (whatever
        ended its task); returns how many."""
        docs = await self._store_thread.run_background(self._untracked_own,
                                                       set(self._tracker.tracked_ids()))
        resumed = 0
        for doc in docs:
            if doc["signal_id"] in self._tracker.tracked_ids():
                continue
            logger.warning("Open order %s (%s) had no tracking task: tracking it again",
                           doc["signal_id"], doc["status"])
            self._tracker.track(doc, recovering=True)
            resumed += 1
        return resumed

    def _untracked_own(self, tracked: set[str]) -> list[dict]:
        docs = []
        for signal_id in self._store.open_signal_ids_owned_by(self._owner["id"]):
            if signal_id in tracked:
                continue
            doc = self._store.get_record(signal_id)
            if doc is not None and (doc.get("owner") or {}).get("id") == self._owner["id"]:
                docs.append(doc)
        return docs

    async def run(self, stop: asyncio.Event) -> None:
        """Every few seconds: untracked own records are tracked again; every third of a
        lease: leases renewed and dead owners' records taken over. Store failures are logged
        and retried on the next round; anything else ends the task (its supervisor restarts
        it)."""
        lease_period = self._lease.total_seconds() / 3
        period = min(self._supervise_seconds, lease_period)
        loop = asyncio.get_running_loop()
        next_lease = loop.time() + lease_period
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), period)
                return
            except TimeoutError:
                pass
            try:
                if loop.time() >= next_lease:
                    next_lease = loop.time() + lease_period
                    await self.renew()
                    await self.sweep()
                await self.retrack()
            except ExecutionError as e:
                logger.warning("Lease upkeep failed: %s", e)
