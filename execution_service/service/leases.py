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

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)


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
                 clock: Callable[[], datetime]):
        self._store = store
        self._tracker = tracker
        self._owner = owner
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = clock

    @property
    def owner(self) -> dict:
        return self._owner

    def lease_until(self) -> datetime:
        return self._clock() + self._lease

    def renew(self) -> None:
        tracked = self._tracker.tracked_ids()
        if not tracked:
            return
        self._store.renew_leases(tracked, self._owner["id"], self.lease_until())
        for signal_id in self._store.owned_elsewhere(tracked, self._owner["id"]):
            logger.info("Stopped tracking %s: another process took it over", signal_id)
            self._tracker.forget(signal_id)
        for signal_id in self._store.cancels_asked(tracked):  # maybe by another replica
            self._tracker.nudge(signal_id)

    def sweep(self) -> int:
        """Take over every open record whose owner is gone; returns how many."""
        now = self._clock()
        taken = 0
        for doc in self._store.open_records():
            if doc["signal_id"] in self._tracker.tracked_ids() or \
                    not claimable(doc, self._owner, now):
                continue
            mine = self._store.take_over(doc, self._owner, self.lease_until(), now)
            if mine is None:
                continue  # another replica was faster
            journey.info("Resuming %s order: %s (was %s)", mine["status"], mine["signal_id"],
                        (doc.get("owner") or {}).get("id", "unowned"))
            self._tracker.track(mine, recovering=True)
            taken += 1
        return taken

    async def run(self, stop: asyncio.Event) -> None:
        period = self._lease.total_seconds() / 3
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), period)
                return
            except TimeoutError:
                pass
            try:
                self.renew()
                self.sweep()
            except ExecutionError as e:
                logger.warning("Lease upkeep failed: %s", e)
