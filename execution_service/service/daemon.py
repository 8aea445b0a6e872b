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
from execution_service.service.held_messages import HeldIntake
from execution_service.service.processor import Action, Outcome
from execution_service.service.risk import halt_alert, resume_alert, watch_halts
from execution_service.service.supervisor import TaskSupervisor

logger = logging.getLogger(__name__)
STORE_AT_START = Backoff(0.5, 10.0)  # the store not reachable yet when the daemon starts
STORE_STALL_SECONDS = 2.0  # a store call running longer than this means the store is in trouble


class ExecutionDaemon:
    def __init__(self, app, consumer, dead_letters, clock: Callable[[], datetime],
                 heartbeat_seconds: float = 2.0, describe: dict | None = None,
                 front_doors: tuple = ()):
        self.app = app
        self._consumer = consumer
        self._dead_letters = dead_letters
        self._clock = clock
        self._heartbeat_seconds = heartbeat_seconds
        self._describe = describe or {}
        self.started_at = clock()
        self.status_id = f"{socket.gethostname()}:{os.getpid()}"
        self._store_ok_at: float | None = None
        self._store_error: str | None = None
        self.supervisor = TaskSupervisor()
        self._inbox: list = []
        self._processing = False
        self._in_flight: set[asyncio.Task] = set()
        # other ways orders come in (the HTTP API): started with the consumer, stopped first
        self._front_doors = front_doors
        self.intake = HeldIntake(self._decide_held, self._settle, self._probe)

    async def run(self, stop: asyncio.Event) -> None:
        app = self.app
        await app.notifier.start()
        loaded, resumed = await self._recover()
        logger.info("Recovery: %d open orders resumed, %d confirmations to publish", resumed,
                    loaded)
        self._consumer.start(asyncio.get_running_loop(), self._on_message)
        for door in self._front_doors:
            await door.start()
        supervise = self.supervisor.start
        supervise("heartbeat", lambda: self._heartbeat_loop(stop))
        supervise("leases", lambda: self.app.leases.run(stop))
        supervise("halts", lambda: watch_halts(self.app.risk, stop, self._on_halt_change,
                                               run=self.app.store_thread.run_background))
        supervise("broker-sessions", lambda: self.app.sessions.run(stop))
        logger.info("Execution service started: consuming %s", self._describe.get("subscription"))
        app.notifier.notify(ServiceAlert(AlertKind.SERVICE_STARTED,
                                         f"Execution service started on {self.status_id}",
                                         key="started"))
        await stop.wait()
        await self._shutdown()

    async def _recover(self) -> tuple[int, int]:
        """Unpublished confirmations and open orders from earlier runs; waits for the store."""
        attempt = 0
        while True:
            try:
                loaded = await self.app.outbox.rescan(everything=True)
                resumed = await self.app.leases.sweep()
                commands = await self.app.commands.resume_unfinished()
                brackets = await self.app.brackets.resume()
                if brackets:
                    logger.info("Recovery: %d brackets with protective exits to re-plan", brackets)
                if commands:
                    logger.info("Recovery: %d cancel/modify requests to finish", commands)
                self.supervisor.start("outbox", self.app.outbox.run)
                return loaded, resumed
            except StoreUnavailable as e:
                attempt += 1
                wait = STORE_AT_START.after(attempt)
                logger.debug("Store unavailable at start (%s); retry in %.1fs", e, wait)
                await asyncio.sleep(wait)

    def _on_message(self, message) -> None:
        """Messages are decided on the store thread, in arrival order, a batch at a time;
        during a store outage they queue behind the held ones (held_messages.py)."""
        if self.intake.holding:
            self.intake.hold(message)
            return
        self._inbox.append(message)
        if not self._processing:
            self._processing = True
            task = asyncio.ensure_future(self._process_inbox())
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _process_inbox(self) -> None:
        try:
            while self._inbox:
                batch, self._inbox = self._inbox, []
                try:
                    outcomes = await self._decide_held(batch)
                except Exception:  # noqa: BLE001 - nacked: Pub/Sub brings them back
                    logger.exception("Deciding %d messages failed; they will be redelivered",
                                     len(batch))
                    outcomes = [None] * len(batch)
                for message, outcome in zip(batch, outcomes, strict=True):
                    self._settle(message, outcome)
        finally:
            self._processing = False

    def _decide_all(self, batch: list) -> list:
        outcomes = []
        for message in batch:
            if outcomes and outcomes[-1] is not None and outcomes[-1].action is Action.HOLD:
                # the store just failed: the rest wait behind, without a call each
                outcomes.append(Outcome(Action.HOLD, outcomes[-1].reason))
                continue
            try:
                outcomes.append(self.app.processor.decide(message.data))
            except Exception:  # noqa: BLE001 - one bad message never holds up the others
                logger.exception("Unexpected error on message %s; it will be redelivered",
                                 message.message_id)
                outcomes.append(None)
        return outcomes

    def _settle(self, message, outcome) -> None:
        try:
            if outcome is None:
                message.nack()
                return
            if outcome.action is Action.HOLD:
                self.intake.hold(message)
                return
            self.app.processor.finish(outcome)
            if outcome.action is Action.DEAD_LETTER:
                task = asyncio.ensure_future(self._dead_letter(message, outcome.reason))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
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
            await self._heartbeat(self._heartbeat_doc(False), background=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._heartbeat_seconds)

    async def _decide_held(self, batch: list) -> list:
        """On the store thread. The embedded store commits a batch of calls at once: when
        that commit fails, every claim of these messages is lost, so all are held."""
        try:
            return await self.app.store_thread.run(self._decide_all, batch)
        except StoreUnavailable as e:
            return [Outcome(Action.HOLD, str(e))] * len(batch)

    async def _probe(self) -> bool:
        """A heartbeat write: the probe that ends an outage."""
        await self._heartbeat(self._heartbeat_doc(False))
        return self._store_error is None

    async def _heartbeat(self, doc: dict, background: bool = False) -> None:
        thread = self.app.store_thread
        try:
            await (thread.run_background if background else thread.run)(self._write_status, doc)
        except StoreUnavailable as e:  # written, then its batch's commit failed (embedded)
            self._store_error = str(e)

    def write_heartbeat(self, stopped: bool = False) -> None:
        self._write_status(self._heartbeat_doc(stopped))

    def _heartbeat_doc(self, stopped: bool) -> dict:
        """What the heartbeat says (on the loop: it reads the loop's objects)."""
        app = self.app
        return {
            "_id": self.status_id, "host": socket.gethostname(), "pid": os.getpid(),
            "version": __version__, "started_at": self.started_at,
            "last_heartbeat": self._clock(), "stopped": stopped,
            "consuming": self._consumer.running and not stopped,
            "brokers": {name: {"connected": broker.is_connected}
                        for name, broker in app.brokers.brokers.items()},
            "counters": app.counters.as_dict(), "in_flight": app.tracker.in_flight,
            "outbox_backlog": app.outbox.backlog, "notifier": app.notifier.stats(),
            "held_messages": self.intake.holding,
            "problems": self.supervisor.problems(),
            "task_restarts": dict(self.supervisor.restarts),
            **self._describe,
        }

    def _write_status(self, doc: dict) -> None:
        """On the store thread."""
        try:
            self.app.store.write_status({**doc, "risk": self.app.risk.stats()})
            self._store_ok_at = time.monotonic()
            self._store_error = None
        except StoreUnavailable as e:
            self._store_error = str(e)  # the outage is logged once, by the store's health
        except ExecutionError as e:
            self._store_error = str(e)
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
        """Consuming, every background task up, and the store took the last heartbeat. Read
        from the metrics thread: plain attribute reads only."""
        if not self._consumer.running:
            return False, "not consuming trading-orders"
        for door in self._front_doors:
            if not door.serving:
                return False, f"{door.name} not serving"
        health = getattr(self.app.store, "health", None)
        if health is not None and health.down:
            return False, (f"store cannot be written: store unavailable for "
                           f"{health.down_for():.0f}s; {self.intake.holding} messages held")
        problems = self.supervisor.problems()
        if problems:
            return False, "; ".join(problems)
        if self._store_error is not None:
            return False, f"store cannot be written: {self._store_error}"
        stalled = self.app.store_thread.stalled_for()
        if stalled > STORE_STALL_SECONDS:
            return False, f"store: a call has been waiting {stalled:.0f}s"
        if self._store_ok_at is None:
            return False, "starting: no heartbeat written yet"
        age = time.monotonic() - self._store_ok_at
        if age > max(3 * self._heartbeat_seconds, 10.0):
            return False, f"store: last heartbeat written {age:.0f}s ago"
        return True, "ok"

    async def _shutdown(self) -> None:
        app = self.app
        logger.info("Stopping: no new messages; bringing in-flight work to a safe point")
        app.notifier.notify(ServiceAlert(AlertKind.SERVICE_STOPPING,
                                         f"Execution service stopping on {self.status_id}",
                                         key="stopping"))
        for door in self._front_doors:
            await door.stop()
        await self._consumer.stop(timeout=3.0)
        await self.intake.stop()
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=2.0)
        await app.commands.stop()
        await app.brackets.stop()
        await app.tracker.stop()
        await app.outbox.drain(timeout=2.0)
        await self.supervisor.stop()
        await self._heartbeat(self._heartbeat_doc(True))
        await app.notifier.stop()
        await app.brokers.close()
        logger.info("Execution service stopped")
