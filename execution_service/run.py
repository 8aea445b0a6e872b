"""`execution-service run`: local defaults, the transport, and the daemon's lifetime."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

from execution_service.account_setup import seed_accounts, use_account_credentials
from execution_service.adapters import emulator_record, pubsub
from execution_service.adapters.emulator import start_emulator
from execution_service.adapters.logs import setup_logging
from execution_service.adapters.metrics import MetricsServer
from execution_service.adapters.publisher import TopicPublisher, confirmations_publisher
from execution_service.bootstrap import (
    StoreLock,
    build_app,
    build_desk,
    check_brokers,
    check_store,
)
from execution_service.config import Settings
from execution_service.service.daemon import ExecutionDaemon

logger = logging.getLogger(__name__)
# Each signal crosses between the event loop and the store thread several times; a thread
# woken for its turn waits for the GIL up to the switch interval while the other one runs
# (5 ms by default). 1 ms took the daemon's own p99 at 100 signals/s from ~100 to 58-80 ms
# on a loaded machine (benchmarks/README.md), but each forced switch costs CPU: on a quiet
# machine, once the store calls got cheaper, 1 ms gave a spread ratio of 0.21-0.27 against
# 0.27-0.33 with 2 ms, whose p99 stayed within 10 ms of the floor (README, issue 20).
GIL_SWITCH_SECONDS = 0.002


def tune_interpreter() -> None:
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


def settle_heap() -> None:
    """Once started: what start-up made (modules, clients, settings: ~80,000 objects) lives as
    long as the process, so it is collected once and frozen out of the cyclic collector. Every
    later full collection stops all threads; over those objects one took ~60 ms here, and at
    100 signals/s such pauses made the slowest signals of a run (README, issue 20). Whatever
    of them becomes garbage later is freed by reference counting; only cycles among them would
    stay, once."""
    gc.collect()
    gc.freeze()


def make_notifier(settings: Settings):
    if not settings.TELEGRAM_ENABLED:
        return None
    from execution_service.adapters.telegram import TelegramNotifier

    return TelegramNotifier.from_settings(settings)


def make_commands(settings: Settings, app):
    """SPEC §13: the operators' commands over Telegram, when TELEGRAM_COMMANDS=true."""
    if not settings.TELEGRAM_COMMANDS:
        return None
    from execution_service.adapters.telegram_commands import TelegramCommands
    from execution_service.service.operator_desk import OperatorDesk
    from execution_service.status import status_text

    desk = OperatorDesk(app.store, status_text(app.store, settings), app.clock,
                        commands=app.commands, store_thread=app.store_thread)
    return TelegramCommands.from_settings(settings, desk)


def run_daemon(settings: Settings, say=print) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit code. A stop during start-up unwinds
    everything started so far (the emulator first of all)."""
    signal.signal(signal.SIGTERM, _interrupt)
    listener = setup_logging(settings.LOG_DIR, settings.LOG_LEVEL)
    tune_interpreter()
    try:
        with ExitStack() as cleanup:
            cleanup.callback(listener.stop)
            check_store(settings)
            if settings.embedded_store_path is not None:
                lock = StoreLock(settings.embedded_store_path)
                lock.acquire()
                cleanup.callback(lock.release)
            emulator_log = None
            if settings.starts_local_emulator:
                emulator_log = Path(settings.LOG_DIR).absolute() / "pubsub-emulator.log"
                settings = _start_emulator(settings, say, cleanup, emulator_log)
            if settings.PUBSUB_EMULATOR_HOST:
                os.environ["PUBSUB_EMULATOR_HOST"] = settings.PUBSUB_EMULATOR_HOST
            try:
                return asyncio.run(_serve(settings, say, cleanup, emulator_log))
            finally:
                _ignore_stops()  # let the clean-up finish: it is bounded by its own timeouts
    except KeyboardInterrupt:
        say("Stopped during start-up; everything it had started is stopped.")
        return 0


def _start_emulator(settings: Settings, say, cleanup: ExitStack, log: Path) -> Settings:
    log_dir = Path(settings.LOG_DIR)
    left = emulator_record.stop_leftover(log_dir)
    if left:
        say(left)
    say(f"Starting the Pub/Sub emulator (log: {log}) ...")
    cleanup.callback(emulator_record.remove_record, log_dir)
    emulator = start_emulator(log, on_spawn=lambda e: (
        cleanup.callback(e.stop), emulator_record.write_record(log_dir, e)))
    return settings.model_copy(update={"PUBSUB_EMULATOR_HOST": emulator.host})


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM during start-up: unwind like Ctrl-C


def _ignore_stops() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


async def _serve(settings: Settings, say, cleanup: ExitStack, emulator_log: Path | None) -> int:
    names = pubsub.PubSubNames(settings)
    publisher = pubsub.make_publisher()
    subscriber = pubsub.pubsub_v1.SubscriberClient()
    if settings.PUBSUB_EMULATOR_HOST:
        pubsub.setup_pubsub(names, publisher, subscriber)
    _check_subscription(names, subscriber)
    app = build_app(settings, confirmations_publisher(publisher, names.confirmations_topic),
                    notifier=make_notifier(settings))
    cleanup.callback(app.close)
    seeded = seed_accounts(settings, app.store)
    use_account_credentials(settings, app.store, app.brokers)
    check_brokers(app)
    consumer = pubsub.OrderConsumer(subscriber, names.orders_subscription,
                                    settings.PUBSUB_MAX_IN_FLIGHT, settings.PUBSUB_STREAMS)
    describe = {"subscription": names.orders_subscription,
                "confirmations_topic": names.confirmations_topic,
                "pubsub": settings.PUBSUB_EMULATOR_HOST or "Google Cloud Pub/Sub",
                "store": app.handle.description, "use_mock_broker": settings.USE_MOCK_BROKER}
    front_doors = ()
    if settings.API_PORT is not None:
        from execution_service.adapters.http_api import ApiServer, create_api

        api = ApiServer(create_api(build_desk(app), settings.MAX_MESSAGE_BYTES), settings.API_HOST,
                        settings.API_PORT).bind()
        front_doors = (api,)
        describe["api"] = api.url
    daemon = ExecutionDaemon(app, consumer, TopicPublisher(publisher,
                                                                  names.dead_letter_topic),
                             app.clock, settings.HEARTBEAT_SECONDS, describe, front_doors)
    app.metrics.bind(in_flight=lambda: app.tracker.in_flight,
                     outbox_backlog=lambda: app.outbox.backlog,
                     telegram_dropped=lambda: app.notifier.stats().get("dropped", 0),
                     healthy=daemon.healthy)
    if settings.METRICS_PORT is not None:
        server = MetricsServer(app.metrics, settings.METRICS_PORT, settings.METRICS_HOST).start()
        cleanup.callback(server.stop)
        describe["metrics"] = f"{server.url}/metrics"
    if emulator_log is not None:
        describe["emulator_log"] = str(emulator_log)
    settle_heap()  # before "Running.": what waits for that line finds the daemon as before
    _announce(say, settings, describe, seeded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    commands = make_commands(settings, app)
    if commands is not None:
        await commands.start()
    try:
        await daemon.run(stop)
    finally:
        if commands is not None:
            await commands.stop()
    subscriber.close()
    return 0


def _check_subscription(names, subscriber) -> None:
    """One warning per setting where the subscription and the daemon disagree (a subscription
    made by hand): a store outage could then still end in the dead letters."""
    try:
        problems = pubsub.subscription_disagreements(names, subscriber)
    except Exception as e:  # no permission to read it, say: the daemon works all the same
        logger.info("Could not read %s's settings: %s", names.orders_subscription, e)
        return
    for problem in problems:
        logger.warning("Subscription %s: %s (see README, Store outages)",
                       names.orders_subscription, problem)


def _announce(say, settings: Settings, describe: dict, seeded: list[str]) -> None:
    emulator_log = f"; emulator log {describe['emulator_log']}" if "emulator_log" in describe \
        else ""
    say(f"Pub/Sub:   {describe['pubsub']} (project {settings.GOOGLE_CLOUD_PROJECT}"
        f"{emulator_log})")
    say(f"Orders in: {describe['subscription']}")
    say(f"Confirmations out: {describe['confirmations_topic']}")
    say(f"Store:     {describe['store']} (database {settings.MONGODB_DATABASE})")
    say("Broker:    " + ("mock paper broker for every account (USE_MOCK_BROKER=true)"
                         if settings.USE_MOCK_BROKER else "per account registration"))
    say(f"Telegram:  {'on' if settings.TELEGRAM_ENABLED else 'off'}"
        + (f", commands from chats {settings.TELEGRAM_ADMIN_CHAT_IDS}"
           if settings.TELEGRAM_COMMANDS else ""))
    say(f"Logs:      {Path(settings.LOG_DIR).absolute()}")
    if "metrics" in describe:
        say(f"Metrics:   {describe['metrics']} (health: {describe['metrics'][:-8]}/healthz)")
    if "api" in describe:
        say(f"HTTP API:  {describe['api']} (OpenAPI: {describe['api']}/openapi.json)")
    if seeded:
        say(f"Accounts registered: {', '.join(seeded)}")
    say("Running. Ctrl-C or SIGTERM stops it.")
