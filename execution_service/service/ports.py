"""The small interfaces the use cases talk to; adapters implement them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from brokers.base import Broker
from execution_service.domain.commands import Command, CommandOutcome
from execution_service.domain.intake import Accepted, Intake
from execution_service.domain.notices import OrderNotice, ServiceAlert

__all__ = ["Accepted", "CommandOutcome", "ConfirmationPublisher", "Intake", "Notifier",
           "NullNotifier", "OrderDesk"]

#: The logger for the lines that tell a signal's journey (logs/signal_processing.log): the
#: service logs them there, the logging adapter routes by this name, never by the text.
JOURNEY_LOGGER = "execution_service.journey"


class Notifier(Protocol):
    """Fire-and-forget: `notify` never blocks and never raises."""

    def notify(self, event: OrderNotice | ServiceAlert) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> dict: ...


class NullNotifier:
    """Used when Telegram is off: counts what it was given, sends nothing."""

    def __init__(self) -> None:
        self.received = 0

    def notify(self, event: OrderNotice | ServiceAlert) -> None:
        self.received += 1

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def stats(self) -> dict:
        return {"enabled": False, "sent": 0, "failed": 0, "dropped": 0, "collapsed": 0,
                "queued": 0}


class BrokerSource(Protocol):
    """Hands out the broker an account trades through (brokers/factory.py builds them)."""

    def broker_name_for(self, account: dict) -> str: ...

    def check(self, name: str) -> None: ...

    def create_broker(self, name: str) -> Broker: ...


class ConfirmationPublisher(Protocol):
    """Publishes one confirmation; raises on failure (the outbox retries). Adapters may also
    offer `send(messages, on_done)`: hand a batch over at once, `on_done(outcomes)` later on
    the event loop (see outbox.sender)."""

    async def publish(self, payload: bytes, attributes: dict[str, str]) -> None: ...


class OrderDesk(Protocol):
    """What the HTTP API asks of the service (service/desk.py implements it). Every method
    but `health` does its store work off the event loop and may raise StoreUnavailable (also
    when the store does not answer in time); `halt` raises UnknownAccount for an unregistered
    account."""

    def health(self) -> tuple[bool, str]: ...

    async def authenticate(self, secret: str) -> dict | None: ...

    async def submit_order(self, body: bytes, by: str) -> Intake: ...

    async def command(self, command: Command, wait: float) -> CommandOutcome | None: ...

    async def order(self, signal_id: str) -> dict | None: ...

    async def orders(self, limit: int, status: str | None = None,
                     account_id: str | None = None) -> list[dict]: ...

    async def positions(self, include_closed: bool) -> list[dict]: ...

    async def confirmations(self, limit: int) -> list[dict]: ...

    async def status(self) -> dict: ...

    async def capabilities(self) -> dict: ...

    async def halt(self, reason: str, account_id: str | None, cancel_open: bool,
                   by: str) -> dict: ...

    async def resume(self, account_id: str | None, by: str) -> tuple[dict | None,
                                                                     list[dict]]: ...


class HaltStore(Protocol):
    """Where halts live (the store's `trading_halts`), for the CLI and the daemon."""

    def save_halt(self, doc: dict) -> None: ...

    def delete_halt(self, halt_id: str) -> dict | None: ...

    def list_halts(self) -> list[dict]: ...

    def save_lifted_halt(self, doc: dict) -> None: ...


class RiskStore(HaltStore, Protocol):
    """What the risk gate reads; every method raises StoreUnavailable when it cannot."""

    def open_positions_for(self, account_id: str, symbol: str) -> list[dict]: ...

    def count_orders_since(self, account_id: str, since: datetime) -> int: ...


# the store, seen from each use case; every method raises StoreUnavailable when it cannot ---------

class RecordStore(Protocol):
    """Execution records, the signal store and the account registry (processor, journal)."""

    def get_account(self, account_id: str) -> dict | None: ...

    def get_record(self, signal_id: str) -> dict | None: ...

    def insert_record(self, doc: dict) -> None: ...  # DuplicateSignal when it exists

    def update_record(self, doc: dict, fields: dict, events: list[dict],
                      confirmations: list[dict]) -> dict | None: ...

    def update_signal(self, signal_id: str, fields: dict, at: datetime) -> None: ...


class LeaseStore(Protocol):
    """Who works which open record (leases)."""

    def open_records(self) -> list[dict]: ...

    def renew_leases(self, signal_ids: list[str], owner_id: str, until: datetime) -> None: ...

    def owned_elsewhere(self, signal_ids: list[str], owner_id: str) -> list[str]: ...

    def cancels_asked(self, signal_ids: list[str]) -> list[str]: ...

    def take_over(self, doc: dict, owner: dict, until: datetime,
                  at: datetime) -> dict | None: ...

    def open_signal_ids_owned_by(self, owner_id: str) -> list[str]: ...

    def get_record(self, signal_id: str) -> dict | None: ...


class OutboxStore(Protocol):
    """Which confirmations are published (outbox)."""

    def records_with_unpublished(self) -> list[dict]: ...

    def mark_published(self, marks: dict[str, int]) -> None: ...

    def update_signal(self, signal_id: str, fields: dict, at: datetime) -> None: ...


class PositionStore(Protocol):
    """Positions by (account, strategy, symbol) (positions)."""

    def open_position(self, key: dict) -> dict | None: ...

    def position_with_fill(self, key: dict, fill_key: str) -> dict | None: ...

    def position_opened_from(self, position_id: str) -> dict | None: ...

    def count_positions(self, key: dict) -> int: ...

    def insert_position(self, doc: dict) -> bool: ...

    def update_position(self, doc: dict, fields: dict, fill_key: str,
                        kept_keys: list[str] | None = None,
                        order_id: str | None = None) -> bool: ...

    def claim_fill(self, fill: dict) -> dict | None: ...  # None: new, else the entry kept

    def fill_applied(self, fill_key: str) -> bool: ...

    def mark_fills_applied(self, fill_keys: list[str], position_id: str, key: dict) -> None: ...

    def when_written(self, callback: Callable[[], None]) -> None: ...  # once committed


class CommandRequests(Protocol):
    """Cancel and modify requests kept until answered (commands)."""

    def receive(self, doc: dict) -> dict | None: ...

    def finish(self, request_id: str, outcome: dict, at: datetime) -> None: ...

    def unfinished(self) -> list[dict]: ...


class ExitClaims(Protocol):
    """Claims a native bracket's exit records before the tracker sends the bracket (§12)."""

    def claim_children(self, entry: dict, broker: Broker) -> list[dict]: ...


class BracketStore(Protocol):
    """What the protective-exit manager (§12) reads and claims; every method raises
    StoreUnavailable when it cannot."""

    def get_record(self, signal_id: str) -> dict | None: ...

    def insert_record(self, doc: dict) -> None: ...

    def open_position(self, key: dict) -> dict | None: ...

    def open_exits(self, key: dict) -> list[dict]: ...

    def unsettled_brackets(self) -> list[dict]: ...


class StoreBatch(Protocol):
    """Calls run now, committed together when the batch closes."""

    def run(self, call: Callable[[], Any]) -> None: ...

    def outcomes(self) -> list[tuple[Any, BaseException | None]]: ...  # once closed


class StoreBatches(Protocol):
    """A store that commits several calls at once (the embedded store, embedded_batch.py):
    a call's outcome is final only once its batch has closed."""

    def batch(self) -> AbstractContextManager[StoreBatch]: ...
