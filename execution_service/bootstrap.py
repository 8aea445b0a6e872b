"""The one place that builds clients and wires them together."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from brokers.factory import BrokerFactory
from execution_service.account_setup import use_account_credentials
from execution_service.adapters.command_log import CommandLog
from execution_service.adapters.metrics import Metrics
from execution_service.adapters.server_settings import ServerSettings
from execution_service.adapters.store import Store, StoreHandle, open_store
from execution_service.clock import utc_now
from execution_service.config import Settings
from execution_service.credentials import SecretBox
from execution_service.domain.intake import IntakeLimits
from execution_service.domain.notices import AlertKind, ServiceAlert
from execution_service.errors import FatalConfigError, StoreUnavailable
from execution_service.service.brackets import BracketManager
from execution_service.service.broker_sessions import SessionKeeper, with_stored_session
from execution_service.service.commands import CommandHandler
from execution_service.service.desk import Desk
from execution_service.service.journal import Counters, OrderJournal
from execution_service.service.leases import LeaseKeeper, make_owner
from execution_service.service.outbox import ConfirmationOutbox
from execution_service.service.ports import ConfirmationPublisher, Notifier, NullNotifier
from execution_service.service.positions import PositionBook
from execution_service.service.processor import SignalProcessor
from execution_service.service.risk import RiskGate
from execution_service.service.store_thread import StoreThread
from execution_service.service.tracker import OrderTracker, TrackingPolicy
from execution_service.status import read_status

logger = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    handle: StoreHandle
    store: Store
    brokers: BrokerFactory
    journal: OrderJournal
    tracker: OrderTracker
    processor: SignalProcessor
    outbox: ConfirmationOutbox
    leases: LeaseKeeper
    risk: RiskGate
    metrics: Metrics
    notifier: Notifier
    counters: Counters
    clock: Callable[[], datetime]
    store_thread: StoreThread | None = None
    commands: CommandHandler | None = None
    brackets: BracketManager | None = None
    sessions: SessionKeeper | None = None

    def close(self) -> None:
        if self.store_thread is not None:
            self.store_thread.close()
        self.handle.close()


def open_brokers(settings: Settings, store: Store) -> BrokerFactory:
    """The brokers alone, for a command that talks to them without a daemon (reconcile)."""
    brokers = BrokerFactory(with_stored_session(settings, store), store.mock_ledger)
    use_account_credentials(settings, store, brokers)
    return brokers


def open_app_store(settings: Settings) -> tuple[StoreHandle, Store]:
    handle = open_store(settings.MONGODB_URI, settings.MONGODB_DATABASE,
                        settings.embedded_store_path, ServerSettings.from_settings(settings))
    store = Store(handle.database)
    return handle, store


def check_store(settings: Settings) -> None:
    """Before anything else starts: the store MONGODB_URI names answers (one short line if
    not, naming the variable)."""
    variable = "MONGODB_URI" if settings.MONGODB_URI else "DATA_DIR"
    try:
        handle, store = open_app_store(settings)
    except FatalConfigError:
        raise  # already one line naming the variable (a malformed MONGODB_URI)
    except Exception as e:  # noqa: BLE001 - any failure to open is the operator's to fix
        where = settings.embedded_store_path
        what = f"cannot use {where} for the embedded store" if where else "cannot open the store"
        raise FatalConfigError(f"configuration: {variable}: {what} ({_short(e)})") from None
    try:
        store.count_accounts()  # one cheap read: does the store answer?
    except StoreUnavailable as e:
        raise FatalConfigError(f"configuration: {variable}: cannot reach "
                               f"{handle.description} ({_short(e.__cause__ or e)})") from None
    finally:
        handle.close()


def _short(error: BaseException) -> str:
    """The first clause of a driver error, not pymongo's topology dump."""
    text = str(error).split(", Timeout:")[0].split(" (configured timeouts")[0]
    return f"{type(error).__name__}: {text[:200]}"


def build_app(settings: Settings, publisher: ConfirmationPublisher, *,
              notifier: Notifier | None = None, handle: StoreHandle | None = None,
              clock: Callable[[], datetime] = utc_now, broker_builders: dict | None = None,
              store: Store | None = None, command_log: CommandLog | None = None) -> App:
    """Everything but the transport: tests pass a fake publisher (and a fault-injecting store)
    and get the same wiring."""
    if handle is None:
        handle, opened = open_app_store(settings)
        store = store or opened
    store = store or Store(handle.database)
    store.health.announce = True  # the daemon logs each outage once (store_errors.StoreHealth)
    store.ensure_indexes()
    risk = RiskGate(store, clock, collar_pct=settings.PRICE_COLLAR_PCT,
                    working_orders=store.working_orders)
    metrics = Metrics()
    notifier = notifier or NullNotifier()
    counters = Counters()
    # the embedded store commits the store thread's calls a batch at a time
    batches = getattr(handle, "batches", None)
    if batches is not None:
        batches.on_failure = store.health.failed
        store.health.defer = batches.defer  # an outage ends with a write committed
    store_thread = StoreThread(batches=batches)
    sessions = SessionKeeper(store, notifier, clock, box=SecretBox.from_settings(settings),
                             store_thread=store_thread)
    brokers = BrokerFactory(with_stored_session(settings, store), store.mock_ledger,
                            _connection_alerts(notifier), builders=broker_builders,
                            offload=store_thread.run, session_listener=sessions.expired)
    sessions.attach(brokers)
    outbox = ConfirmationOutbox(store, publisher, clock=clock,
                                rescan_seconds=settings.OUTBOX_RESCAN_SECONDS,
                                store_thread=store_thread)
    owner = make_owner(clock())
    journal = OrderJournal(store, PositionBook(store), outbox, notifier, counters, clock,
                           owner["id"], metrics)
    policy = TrackingPolicy(order_timeout=settings.ORDER_TIMEOUT_SECONDS,
                            max_attempts=settings.MAX_RETRY_ATTEMPTS,
                            backoff_base=settings.RETRY_BACKOFF_SECONDS,
                            poll_interval=settings.ORDER_POLL_SECONDS,
                            late_fill_grace=settings.LATE_FILL_GRACE_SECONDS)
    tracker = OrderTracker(journal, brokers, notifier, policy, clock, risk.halt_for, metrics,
                           store_thread)
    leases = LeaseKeeper(store, tracker, owner, settings.LEASE_SECONDS, clock,
                         settings.SUPERVISE_SECONDS, store_thread)
    outbox.takes_up = leases.publishes
    limits = IntakeLimits(settings.MAX_MESSAGE_BYTES, settings.MAX_MESSAGE_DEPTH)
    processor = SignalProcessor(store, journal, tracker, brokers, clock, owner, leases.lease_until,
                                risk, limits)
    command_log = command_log or CommandLog(handle.database)
    command_log.ensure_indexes()
    commands = CommandHandler(store, command_log, journal, brokers, tracker, outbox, clock,
                              processor.check_order, attempts=settings.MAX_RETRY_ATTEMPTS,
                              backoff_base=settings.RETRY_BACKOFF_SECONDS,
                              store_thread=store_thread)
    processor.commands = commands
    brackets = BracketManager(store, journal, tracker, brokers, clock, owner, leases.lease_until,
                              backoff_base=settings.RETRY_BACKOFF_SECONDS,
                              store_thread=store_thread)
    journal.brackets = tracker.brackets = brackets
    return App(settings, handle, store, brokers, journal, tracker, processor, outbox, leases, risk,
               metrics, notifier, counters, clock, store_thread, commands, brackets, sessions)


def build_desk(app: App) -> Desk:
    """What the HTTP API serves: the app's processor, store and health."""
    return Desk(settings=app.settings, store=app.store, processor=app.processor,
                commands=app.commands, brokers=app.brokers, health=app.metrics.health,
                status_report=lambda at: read_status(app.store, app.settings, at),
                clock=app.clock, features=_optional_features(app.settings),
                store_thread=app.store_thread)


def _optional_features(settings: Settings) -> tuple[str, ...]:
    flags = (("telegram", settings.TELEGRAM_ENABLED),
             ("metrics", settings.METRICS_PORT is not None))
    return tuple(name for name, on in flags if on)


def _connection_alerts(notifier: Notifier):
    def listener(broker: str, connected: bool, detail: str) -> None:
        kind = AlertKind.BROKER_CONNECTION_RESTORED if connected else \
            AlertKind.BROKER_CONNECTION_LOST
        text = f"{broker}: {detail}"
        (logger.info if connected else logger.warning)("Broker connection %s: %s",
                                                       "restored" if connected else "lost", text)
        notifier.notify(ServiceAlert(kind, text, key=f"{kind}:{broker}"))
    return listener


def check_brokers(app: App) -> None:
    """Every enabled account's broker must be buildable now, not at the first order."""
    for account in app.store.list_accounts():
        if account.get("enabled", True):
            name = app.brokers.broker_name_for(account)
            app.brokers.check(name)
            app.brokers.create_broker(name)


class StoreLock:
    """One daemon per embedded store: an exclusive lock file next to the data."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / "daemon.lock"
        self._file = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held for the daemon's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise FatalConfigError(
                f"another daemon (pid {holder}) already uses the embedded store at "
                f"{self.path.parent}; stop it first (the embedded store is single-process: "
                f"run replicas on a real MongoDB)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
