"""What a desk or a dashboard can ask of the running daemon (SPEC §15), whatever carries it.

Orders go through the processor's `accept`, the one use case Pub/Sub uses too; reads are the
same store queries the CLI prints; halts are the CLI's. The HTTP API is one adapter over it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from execution_service import __version__
from execution_service.domain.api_keys import key_hash
from execution_service.domain.commands import Command
from execution_service.domain.records import published_confirmations
from execution_service.service.commands import CommandHandler, CommandOutcome
from execution_service.service.ports import BrokerSource
from execution_service.service.processor import Intake, SignalProcessor
from execution_service.service.risk import halt_trading, resume_trading

BASE_FEATURES = ("orders", "positions", "confirmations", "status", "halt", "resume", "cancel",
                 "modify")


def shown_positions(store, include_closed: bool) -> list[dict]:
    """Positions as `positions --json` prints them (open only unless `include_closed`)."""
    rows = store.list_positions(None if include_closed else "OPEN")
    return [{key: value for key, value in row.items() if key != "fill_keys"} for row in rows]


async def _run_here(work: Callable, *args):
    return work(*args)


class DeskSettings(Protocol):
    USE_MOCK_BROKER: bool


class Desk:
    def __init__(self, *, settings: DeskSettings, store, processor: SignalProcessor,
                 commands: CommandHandler, brokers: BrokerSource,
                 health: Callable[[], tuple[bool, str]],
                 status_report: Callable[[datetime], dict],
                 clock: Callable[[], datetime], features: tuple[str, ...] = (),
                 run_on_store_thread: Callable[..., Awaitable] | None = None):
        self._settings = settings
        self._store = store
        self._processor = processor
        self._commands = commands
        self._brokers = brokers
        self._status_report = status_report  # the operators' status, as of a time
        self._clock = clock
        self.health = health
        self._features = BASE_FEATURES + features
        self._run = run_on_store_thread or _run_here

    def authenticate(self, secret: str) -> dict | None:
        """The active key with this secret, or None."""
        return self._store.active_api_key(key_hash(secret))

    async def submit_order(self, body: bytes, by: str) -> Intake:
        """Claimed or rejected on the store thread, like a Pub/Sub message; then handed to the
        tracker (or the rejection made known) on the event loop."""
        intake = await self._run(self._processor.accept, body, by)
        return self._processor.settle(intake)

    async def command(self, command: Command, wait: float) -> CommandOutcome | None:
        """A §11 cancel or modify through the same handler as one from Pub/Sub: kept first
        (raises StoreUnavailable: nothing kept), then carried out. Its outcome, or None when
        it is still being carried out after `wait` seconds (it goes on; the record will say)."""
        earlier = self._commands.receive(command)
        if earlier is not None:
            return earlier
        task = self._commands.start(command)
        done, _ = await asyncio.wait({task}, timeout=wait)
        return task.result() if done else None

    def order(self, signal_id: str) -> dict | None:
        record = self._store.get_record(signal_id)
        if record is None:
            return None
        return {**record, "confirmations": published_confirmations(record)}

    def orders(self, limit: int, status: str | None = None,
               account_id: str | None = None) -> list[dict]:
        return self._store.recent_records(limit, status=status, account_id=account_id)

    def positions(self, include_closed: bool) -> list[dict]:
        return shown_positions(self._store, include_closed)

    def confirmations(self, limit: int) -> list[dict]:
        return self._store.recent_confirmations(limit)

    def status(self) -> dict:
        return self._status_report(self._clock())

    def capabilities(self) -> dict:
        healthy, reason = self.health()
        brokers = self._brokers_in_use()
        lost = "; ".join(f"broker connection lost: {name}: {detail}"
                         for name, detail in sorted(self._brokers.lost.items()))
        degraded = reason if not healthy else (lost or None)
        return {"version": __version__, "brokers": [
                    {"name": name, "connected": connected} for name, connected in brokers.items()],
                "use_mock_broker": self._settings.USE_MOCK_BROKER,
                "features": list(self._features), "degraded_reason": degraded}

    def _brokers_in_use(self) -> dict[str, bool]:
        """Each enabled account's broker, and whether it is connected now (brokers connect at
        their first order)."""
        created = self._brokers.brokers
        names = {self._brokers.broker_name_for(account)
                 for account in self._store.list_accounts() if account.get("enabled", True)}
        return {name: name in created and created[name].is_connected
                for name in sorted(names | set(created))}

    def halt(self, reason: str, account_id: str | None, cancel_open: bool, by: str) -> dict:
        return halt_trading(self._store, reason, account_id, cancel_open, at=self._clock(),
                            by=by)

    def resume(self, account_id: str | None, by: str) -> tuple[dict | None, list[dict]]:
        return resume_trading(self._store, account_id, at=self._clock(), by=by)
