"""The running daemon: consume, recover, publish, heartbeat, and stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime

from execution_service import __version__
from execution_service.domain.backoff import Backoff
from execution_service.domain.intake import dead_letter_message
from execution_service.domain.notices import AlertKind, ServiceAlert
from execution_service.errors import ExecutionError, StoreUnavailable
from execution_service.service.processor import Action
from execution_service.service.risk import halt_alert, resume_alert, watch_halts

logger = logging.getLogger(__name__)
STORE_AT_START = Backoff(0.5, 10.0)  # the store not reachable yet when the daemon starts


class ExecutionDaemon:
    def __init__(self, app, consumer, dead_letters, clock: Callable[[], datetime],
                 heartbeat_seconds: float = 2.0, describe: dict | None = None):
        self.app = app
        self._consumer = consumer
        self._dead_letters = dead_letters
        self._clock = clock
        self._heartbeat_seconds = heartbeat_seconds
        self._describe = describe or {}
        self.started_at = clock()
        self.status_id = f"{socket.gethostname()}:{os.getpid()}"
        self._store_ok_at: float | None = None
        self._dead_letters_in_flight: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        app = self.app
        await app.notifier.start()
        loaded, resumed = await self._recover()
        logger.info("Recovery: %d open orders resumed, %d confirmations to publish", resumed,
                    loaded)
        self._consumer.start(asyncio.get_running_loop(), self._on_message)
        heartbeat = asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat")
        leases = asyncio.create_task(self.app.leases.run(stop), name="leases")
        halts = asyncio.create_task(watch_halts(self.app.risk, stop, self._on_halt_change),
                                    name="halts")
        logger.info("Execution service started: consuming %s", self._describe.get("subscription"))
        app.notifier.notify(ServiceAlert(AlertKind.SERVICE_STARTED,
                                         f"Execution service started on {self.status_id}",
                                         key="started"))
        await stop.wait()
        await self._shutdown(heartbeat, leases, halts)

    async def _recover(self) -> tuple[int, int]:
        """Unpublished confirmations and open orders from earlier runs; waits for the store."""
        attempt = 0
        while True:
            try:
                loaded = self.app.outbox.load_unpublished()
                resumed = self.app.leases.sweep()
                commands = self.app.commands.resume_unfinished()
                brackets = self.app.brackets.resume()
                if brackets:
                    logger.info("Recovery: %d brackets with protective exits to re-plan", brackets)
                if commands:
                    logger.info("Recovery: %d cancel/modify requests to finish", commands)
                self.app.outbox.start()
                return loaded, resumed
            except StoreUnavailable as e:
                attempt += 1
                wait = STORE_AT_START.after(attempt)
                logger.warning("Store unavailable at start (%s); retry in %.1fs", e, wait)
                await asyncio.sleep(wait)

    def _on_message(self, message) -> None:
        try:
            outcome = self.app.processor.handle(message.data)
            if outcome.action is Action.DEAD_LETTER:
                task = asyncio.ensure_future(self._dead_letter(message, outcome.reason))
                self._dead_letters_in_flight.add(task)
                task.add_done_callback(self._dead_letters_in_flight.discard)
            elif outcome.action is Action.ACK:
                message.ack()
            else:
                message.nack()
        except Exception:
            logger.exception("Unexpected error on message %s; it will be redelivered",
                             message.message_id)
            message.nack()

    async def _dead_letter(self, message, reason: str) -> None:
        body, attributes = dead_letter_message(message.data, dict(message.attributes), reason,
                                               message.message_id)
        try:
            await self._dead_letters.publish(body, attributes)
            message.ack()
        except Exception as e:
            logger.warning("Dead-letter publish failed (%s); message nacked", e)
            message.nack()

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.write_heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._heartbeat_seconds)

    def write_heartbeat(self, stopped: bool = False) -> None:
        app = self.app
        doc = {
            "_id": self.status_id, "host": socket.gethostname(), "pid": os.getpid(),
            "version": __version__, "started_at": self.started_at,
            "last_heartbeat": self._clock(), "stopped": stopped,
            "consuming": self._consumer.running and not stopped,
            "brokers": {name: {"connected": broker.is_connected}
                        for name, broker in app.brokers.brokers.items()},
            "counters": app.counters.as_dict(), "in_flight": app.tracker.in_flight,
            "outbox_backlog": app.outbox.backlog, "notifier": app.notifier.stats(),
            "risk": app.risk.stats(),
            **self._describe,
        }
        try:
            app.store.write_status(doc)
            self._store_ok_at = time.monotonic()
        except ExecutionError as e:
            logger.warning("Heartbeat not written: %s", e)

    def _on_halt_change(self, changes) -> None:
        for halt in changes.started:
            alert = halt_alert(halt)
            logger.warning("%s", alert.text)
            self.app.notifier.notify(alert)
        for halt in changes.ended:
            alert = resume_alert(halt)
            logger.info("%s", alert.text)
            self.app.notifier.notify(alert)

    def healthy(self) -> tuple[bool, str]:
        """Consuming, and the store took a heartbeat recently. Read from the metrics thread:
        plain attribute reads only."""
        if not self._consumer.running:
            return False, "not consuming trading-orders"
        if self._store_ok_at is None:
            return False, "starting: no heartbeat written yet"
        age = time.monotonic() - self._store_ok_at
        if age > max(3 * self._heartbeat_seconds, 10.0):
            return False, f"store: last heartbeat written {age:.0f}s ago"
        return True, "ok"

    async def _shutdown(self, *tasks: asyncio.Task) -> None:
        app = self.app
        logger.info("Stopping: no new messages; bringing in-flight work to a safe point")
        app.notifier.notify(ServiceAlert(AlertKind.SERVICE_STOPPING,
                                         f"Execution service stopping on {self.status_id}",
                                         key="stopping"))
        await self._consumer.stop(timeout=3.0)
        if self._dead_letters_in_flight:
            await asyncio.wait(self._dead_letters_in_flight, timeout=2.0)
        await app.commands.stop()
        await app.brackets.stop()
        await app.tracker.stop()
        await app.outbox.drain(timeout=2.0)
        await app.outbox.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.write_heartbeat(stopped=True)
        await app.notifier.stop()
        await app.brokers.close()
        logger.info("Execution service stopped")
