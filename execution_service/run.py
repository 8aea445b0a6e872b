"""`execution-service run`: local defaults, the transport, and the daemon's lifetime."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from contextlib import ExitStack
from pathlib import Path

from execution_service.adapters import pubsub
from execution_service.adapters.emulator import start_emulator
from execution_service.adapters.logs import setup_logging
from execution_service.adapters.metrics import MetricsServer
from execution_service.bootstrap import (
    EMULATOR_HOST_FILE,
    StoreLock,
    build_app,
    build_desk,
    check_brokers,
    seed_accounts,
)
from execution_service.config import Settings
from execution_service.service.daemon import ExecutionDaemon

logger = logging.getLogger(__name__)


def make_notifier(settings: Settings):
    if not settings.TELEGRAM_ENABLED:
        return None
    from execution_service.adapters.telegram import TelegramNotifier

    return TelegramNotifier.from_settings(settings)


def run_daemon(settings: Settings, say=print) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit code."""
    listener = setup_logging(settings.LOG_DIR, settings.LOG_LEVEL)
    with ExitStack() as cleanup:
        cleanup.callback(listener.stop)
        if settings.embedded_store_path is not None:
            lock = StoreLock(settings.embedded_store_path)
            lock.acquire()
            cleanup.callback(lock.release)
        if settings.starts_local_emulator:
            emulator = start_emulator(settings.LOG_DIR / "pubsub-emulator.log")
            cleanup.callback(emulator.stop)
            settings = settings.model_copy(update={"PUBSUB_EMULATOR_HOST": emulator.host})
            host_file = settings.LOG_DIR / EMULATOR_HOST_FILE
            host_file.write_text(emulator.host)
            cleanup.callback(lambda: host_file.unlink(missing_ok=True))
        if settings.PUBSUB_EMULATOR_HOST:
            os.environ["PUBSUB_EMULATOR_HOST"] = settings.PUBSUB_EMULATOR_HOST
        return asyncio.run(_serve(settings, say, cleanup))


async def _serve(settings: Settings, say, cleanup: ExitStack) -> int:
    names = pubsub.PubSubNames(settings)
    publisher = pubsub.make_publisher()
    subscriber = pubsub.pubsub_v1.SubscriberClient()
    if settings.PUBSUB_EMULATOR_HOST:
        pubsub.setup_pubsub(names, publisher, subscriber)
    app = build_app(settings, pubsub.TopicPublisher(publisher, names.confirmations_topic),
                    notifier=make_notifier(settings))
    cleanup.callback(app.close)
    seeded = seed_accounts(settings, app.store)
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
    daemon = ExecutionDaemon(app, consumer, pubsub.TopicPublisher(publisher,
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
    _announce(say, settings, describe, seeded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await daemon.run(stop)
    subscriber.close()
    return 0


def _announce(say, settings: Settings, describe: dict, seeded: list[str]) -> None:
    say(f"Pub/Sub:   {describe['pubsub']} (project {settings.GOOGLE_CLOUD_PROJECT})")
    say(f"Orders in: {describe['subscription']}")
    say(f"Confirmations out: {describe['confirmations_topic']}")
    say(f"Store:     {describe['store']} (database {settings.MONGODB_DATABASE})")
    say("Broker:    " + ("mock paper broker for every account (USE_MOCK_BROKER=true)"
                         if settings.USE_MOCK_BROKER else "per account registration"))
    say(f"Telegram:  {'on' if settings.TELEGRAM_ENABLED else 'off'}")
    say(f"Logs:      {Path(settings.LOG_DIR).absolute()}")
    if "metrics" in describe:
        say(f"Metrics:   {describe['metrics']} (health: {describe['metrics'][:-8]}/healthz)")
    if "api" in describe:
        say(f"HTTP API:  {describe['api']} (OpenAPI: {describe['api']}/openapi.json)")
    if seeded:
        say(f"Accounts registered: {', '.join(seeded)}")
    say("Running. Ctrl-C or SIGTERM stops it.")
