"""What a desk or a dashboard can ask of the running daemon (SPEC §15), whatever carries it.

Orders go through the processor's `accept`, the one use case Pub/Sub uses too; reads are the
same store queries the CLI prints; halts are the CLI's. The HTTP API is one adapter over it.
Every store call runs on the store thread, never on the event loop, and a store that does not
answer in time (`StoreThread.answer`) is StoreUnavailable (503), not a request left hanging.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
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
from execution_service.service.store_thread import StoreThread

BASE_FEATURES = ("orders", "positions", "confirmations", "status", "halt", "resume", "cancel",
                 "modify")


def shown_positions(store, include_closed: bool) -> list[dict]:
    """Positions as `positions --json` prints them (open only unless `include_closed`)."""
    rows = store.list_positions(None if include_closed else "OPEN")
    return [{key: value for key, value in row.items() if key != "fill_keys"} for row in rows]


class DeskSettings(Protocol):
    USE_MOCK_BROKER: bool


class Desk:
    def __init__(self, *, settings: DeskSettings, store, processor: SignalProcessor,
                 commands: CommandHandler, brokers: BrokerSource,
                 health: Callable[[], tuple[bool, str]],
                 status_report: Callable[[datetime], dict],
                 clock: Callable[[], datetime], features: tuple[str, ...] = (),
                 store_thread: StoreThread | None = None):
        self._settings = settings
        self._store = store
        self._processor = processor
        self._commands = commands
        self._brokers = brokers
        self._status_report = status_report  # the operators' status, as of a time
        self._clock = clock
        self.health = health
        self._features = BASE_FEATURES + features
        self._store_thread = store_thread or StoreThread(inline=True)
        self._answer = self._store_thread.answer

    async def authenticate(self, secret: str) -> dict | None:
        """The active key with this secret, or None."""
        return await self._answer(self._store.active_api_key, key_hash(secret))

    async def submit_order(self, body: bytes, by: str) -> Intake:
        """Claimed or rejected on the store thread, like a Pub/Sub message; then handed to the
        tracker (or the rejection made known) on the event loop. A store that does not answer
        in time is StoreUnavailable, and an order it claims later is still handed over."""
        accepting = asyncio.ensure_future(self._store_thread.run(self._processor.accept, body,
                                                                 by))
        done, _ = await asyncio.wait({accepting}, timeout=self._store_thread.answer_seconds)
        if not done:
            accepting.add_done_callback(self._settle_late)
            raise self._store_thread.no_answer()
        return self._processor.settle(accepting.result())

    def _settle_late(self, accepting: asyncio.Future) -> None:
        if not accepting.cancelled() and accepting.exception() is None:
            self._processor.settle(accepting.result())

    async def command(self, command: Command, wait: float) -> CommandOutcome | None:
        """A §11 cancel or modify through the same handler as one from Pub/Sub: kept first
        (raises StoreUnavailable: not kept, or not yet), then carried out. Its outcome, or None
        when it is still being carried out after `wait` seconds (it goes on; the record will
        say)."""
        return await self._commands.submit(command, wait)

    async def order(self, signal_id: str) -> dict | None:
        record = await self._answer(self._store.get_record, signal_id)
        if record is None:
            return None
        return {**record, "confirmations": published_confirmations(record)}

    async def orders(self, limit: int, status: str | None = None,
                     account_id: str | None = None) -> list[dict]:
        return await self._answer(functools.partial(
            self._store.recent_records, limit, status=status, account_id=account_id))

    async def positions(self, include_closed: bool) -> list[dict]:
        return await self._answer(shown_positions, self._store, include_closed)

    async def confirmations(self, limit: int) -> list[dict]:
        return await self._answer(self._store.recent_confirmations, limit)

    async def status(self) -> dict:
        return await self._answer(self._status_report, self._clock())

    async def capabilities(self) -> dict:
        healthy, reason = self.health()
        brokers = await self._brokers_in_use()
        lost = "; ".join(f"broker connection lost: {name}: {detail}"
                         for name, detail in sorted(self._brokers.lost.items()))
        degraded = reason if not healthy else (lost or None)
        return {"version": __version__, "brokers": [
                    {"name": name, "connected": connected} for name, connected in brokers.items()],
                "use_mock_broker": self._settings.USE_MOCK_BROKER,
                "features": list(self._features), "degraded_reason": degraded}

    async def _brokers_in_use(self) -> dict[str, bool]:
        """Each enabled account's broker, and whether it is connected now (brokers connect at
        their first order)."""
        created = self._brokers.brokers
        accounts = await self._answer(self._store.list_accounts)
        names = {self._brokers.broker_name_for(account)
                 for account in accounts if account.get("enabled", True)}
        return {name: name in created and created[name].is_connected
                for name in sorted(names | set(created))}

    async def halt(self, reason: str, account_id: str | None, cancel_open: bool,
                   by: str) -> dict:
        return await self._answer(functools.partial(
            halt_trading, self._store, reason, account_id, cancel_open, at=self._clock(), by=by))

    async def resume(self, account_id: str | None, by: str) -> tuple[dict | None, list[dict]]:
        return await self._answer(functools.partial(
            resume_trading, self._store, account_id, at=self._clock(), by=by))
