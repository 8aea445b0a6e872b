"""Cancel and modify (SPEC §11): one service-level entry point, `handle_command`, for the
Pub/Sub consumer, the CLI (through Pub/Sub), an HTTP route or a Telegram command.

Per request: keep it in `order_commands` (idempotent by `request_id`), decide against the
record, write the outcome to the record (compare-and-set, with its confirmation: the outbox),
and call the broker's own cancel or modify. A request in flight at a crash stays RECEIVED and
is finished after the restart; every step is idempotent, so it is finished once. Store work
runs on the store thread (`receive` and `record_invalid` are called there by the processor),
never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from brokers.base import Broker
from execution_service.domain.backoff import Backoff
from execution_service.domain.commands import (
    REFUSED,
    CancelOrder,
    Command,
    CommandAction,
    CommandEvent,
    CommandOutcome,
    InvalidCommand,
    ModifyOrder,
    already_applied,
    apply_cancel,
    apply_modify,
    early_cancel_record,
    modify_refusal,
    refuse,
)
from execution_service.domain.orders import Event, OrderStatus
from execution_service.domain.records import confirmation, state_of
from execution_service.errors import (
    DuplicateSignal,
    OrderNotFound,
    OrderRejected,
    StoreUnavailable,
    TransientBrokerError,
)
from execution_service.service.journal import RecordConflict
from execution_service.service.order_placement import request_from_record
from execution_service.service.ports import BrokerSource, CommandRequests, RecordStore
from execution_service.service.store_thread import StoreThread

logger = logging.getLogger(__name__)
KEPT = "KEPT"  # a cancel for an order not seen yet: kept, the order is refused when it comes
DUPLICATE = "DUPLICATE"
NOT_RECEIVED = "NOT_RECEIVED"  # the status in a refusal about a signal with no record


class CommandHandler:
    def __init__(self, store: RecordStore, command_log: CommandRequests, journal,
                 brokers: BrokerSource, tracker, outbox,
                 clock: Callable[[], datetime], check_order: Callable[[dict], str | None],
                 attempts: int = 3, backoff_base: float = 0.5,
                 store_thread: StoreThread | None = None):
        self._store = store
        self._log = command_log
        self._journal = journal
        self._brokers = brokers
        self._tracker = tracker
        self._outbox = outbox
        self._clock = clock
        self._check_order = check_order  # §3 validation and risk of an order's fields
        self._attempts = attempts
        self._broker_backoff = Backoff(backoff_base)
        self._store_backoff = Backoff(backoff_base, 10.0)
        self._running: dict[str, asyncio.Task] = {}
        self._store_thread = store_thread or StoreThread(inline=True)
        self._run = self._store_thread.run

    # entry points -----------------------------------------------------------------------------

    async def handle_command(self, command: Command) -> CommandOutcome:
        """Keep, decide, act and answer; the outcome once the request is done."""
        stored = await self._run(self.receive, command)
        if stored is not None:
            return stored
        return await self._finish(command)

    async def submit(self, command: Command, wait: float) -> CommandOutcome | None:
        """For someone waiting at a door (HTTP, Telegram): keep the request, then carry it out
        in the background; its outcome, or None when not done within `wait` seconds (it goes
        on). StoreUnavailable when it could not be kept, or the store did not answer in time:
        then it is carried out if and when the store keeps it."""
        keeping = asyncio.ensure_future(self._run(self.receive, command))
        done, _ = await asyncio.wait({keeping}, timeout=self._store_thread.answer_seconds)
        if not done:
            keeping.add_done_callback(lambda kept: self._start_if_kept(command, kept))
            raise self._store_thread.no_answer(f" (request {command.request_id} is carried "
                                               "out once kept)")
        earlier = keeping.result()
        if earlier is not None:
            return earlier
        task = self.start(command)
        done, _ = await asyncio.wait({task}, timeout=wait)
        return task.result() if done else None

    def _start_if_kept(self, command: Command, keeping: asyncio.Future) -> None:
        if not keeping.cancelled() and keeping.exception() is None and keeping.result() is None:
            self.start(command)

    def receive(self, command: Command) -> CommandOutcome | None:
        """Keep the request durably (raises StoreUnavailable). None: go on and execute it;
        an outcome: it was handled before (same request_id), nothing more to do."""
        doc = {"_id": command.request_id, "request_id": command.request_id,
               "action": str(command.action), "signal_id": command.signal_id,
               "command": command.model_dump(mode="json"), "received_at": self._clock()}
        earlier = self._log.receive(doc)
        if earlier is None or earlier.get("state") != "DONE":
            return None
        logger.info("Duplicate %s request %s ignored (already %s) [%s]", command.action,
                    command.request_id, earlier.get("outcome"), command.signal_id)
        return CommandOutcome(command.request_id, command.signal_id, DUPLICATE,
                              earlier.get("reason"))

    def start(self, command: Command) -> asyncio.Task:
        """Execute a kept request in the background (the Pub/Sub path acks once it is kept);
        the task that does it (the one already running for this request_id, if any)."""
        if command.request_id in self._running:
            return self._running[command.request_id]
        task = asyncio.create_task(self._finish(command), name=f"command-{command.request_id}")
        self._running[command.request_id] = task
        task.add_done_callback(lambda _t: self._running.pop(command.request_id, None))
        return task

    async def resume_unfinished(self) -> int:
        """At start: every request kept and not finished by an earlier run."""
        pending = await self._run(self._log.unfinished)
        for doc in pending:
            self.start(command_from_doc(doc))
        return len(pending)

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    # the work ---------------------------------------------------------------------------------

    async def _finish(self, command: Command) -> CommandOutcome:
        return await self._until_stored(lambda: self._carry_out(command),
                                        f"{command.action} request {command.request_id}")

    async def _carry_out(self, command: Command) -> CommandOutcome:
        if isinstance(command, CancelOrder):
            outcome = await self._cancel(command)
        else:
            outcome = await self._modify(command)
        await self._run(self._log.finish, command.request_id, outcome.as_doc(), self._clock())
        logger.info("%s request %s: %s%s [%s]", command.action, command.request_id,
                    outcome.event, f" ({outcome.reason})" if outcome.reason else "",
                    command.signal_id)
        self._tracker.nudge(command.signal_id)
        return outcome

    async def _until_stored(self, work, what: str):
        """`work()`, again with back-off while the store is unavailable or the record keeps
        changing under it (every step of it is idempotent)."""
        attempt = 0
        while True:
            try:
                return await work()
            except (StoreUnavailable, RecordConflict) as e:
                attempt += 1
                wait = self._store_backoff.after(attempt)
                logger.debug("Store unavailable on %s (%s); retry in %.1fs", what, e, wait)
                await asyncio.sleep(wait)

    async def _cancel(self, command: CancelOrder) -> CommandOutcome:
        doc = await self._run(self._store.get_record, command.signal_id)
        if doc is None:
            kept = early_cancel_record(command, self._clock())
            try:
                await self._run(self._store.insert_record, kept)
                self._journal.after_write(kept, (), kept["confirmations"])
                return self._outcome(command, KEPT, kept["reject_reason"])
            except DuplicateSignal:  # the order was claimed meanwhile: cancel it
                doc = await self._run(self._store.get_record, command.signal_id)
        now = self._clock()
        doc = await self._apply(doc, lambda s: apply_cancel(s, command, now))
        state = state_of(doc)
        refused = _refusal_of(doc, command.request_id)
        if refused is not None:
            return self._outcome(command, CommandEvent.CANCEL_REJECTED, refused)
        if doc.get("awaiting_order") and state.cancel_request_id == command.request_id:
            return self._outcome(command, KEPT, doc["reject_reason"])  # kept before a crash
        if state.status is OrderStatus.PENDING_CANCEL and state.order_id:
            await self._at_broker(doc, "cancel", lambda broker: broker.cancel_order(
                doc["order_id"]))
        return self._outcome(command, CommandEvent.CANCEL_REQUESTED, command.cancel_reason())

    async def _modify(self, command: ModifyOrder) -> CommandOutcome:
        """Held against this process's tracker from before the broker is asked until the
        answer is recorded: the modify's own fill is recorded after its MODIFIED."""
        async with self._tracker.holding(command.signal_id):
            return await self._modify_held(command)

    async def _modify_held(self, command: ModifyOrder) -> CommandOutcome:
        doc = await self._run(self._store.get_record, command.signal_id)
        if doc is None:
            return self._unknown_order(command)
        state = state_of(doc)
        if already_applied(state, command.request_id):
            return self._answered(command, doc)
        changed = {**doc, **command.changes()}
        order_type = str(doc.get("order_type"))
        refusal = modify_refusal(state, order_type, command) or await self._run(
            self._check_order, changed)
        if refusal is None:
            request = request_from_record(changed)
            refusal = await self._at_broker(doc, "modify", lambda broker: broker.modify_order(
                doc["order_id"], request))
        now = self._clock()
        if refusal is None:
            doc = await self._apply(doc, lambda s: apply_modify(s, command, now))
        else:
            doc = await self._apply(doc, lambda s: refuse(
                s, CommandAction.MODIFY, command.request_id, refusal, now))
        return self._answered(command, doc)

    async def _apply(self, doc: dict, step) -> dict:
        """A request is written on the record whichever replica tracks it (its owner acts on
        it: leases.py)."""
        return await self._journal.apply_off_loop(self._store_thread, doc, step, any_owner=True)

    async def _at_broker(self, doc: dict, what: str, call) -> str | None:
        """The broker's own cancel or modify, retried while the venue is unreachable. None when
        it took it; else why not (a cancel left undone is sent again by the tracker)."""
        broker: Broker = self._brokers.create_broker(doc["broker"])
        last = "no attempt made"
        for attempt in range(1, self._attempts + 1):
            try:
                if not broker.is_connected:
                    await broker.connect()
                await call(broker)
                return None
            except OrderRejected as e:
                return f"broker refused: {e.reason}"
            except (TransientBrokerError, OrderNotFound) as e:
                logger.warning("%s of %s at %s failed (attempt %d/%d): %s", what,
                               doc["signal_id"], broker.name, attempt, self._attempts, e)
                if attempt < self._attempts:
                    await asyncio.sleep(self._broker_backoff.after(attempt))
                last = str(e)
        return f"broker unavailable: {last}"

    def _unknown_order(self, command: ModifyOrder) -> CommandOutcome:
        """Answered MODIFY_REJECTED and not kept: there is no record to keep it in."""
        reason = f"no order {command.signal_id} has been received"
        self._publish_unrecorded(command.signal_id, CommandAction.MODIFY, command.request_id,
                                 reason)
        return self._outcome(command, CommandEvent.MODIFY_REJECTED, reason)

    def record_invalid(self, invalid: InvalidCommand) -> tuple[tuple | None, Callable | None]:
        """A command that failed validation, refused: on the store thread (the processor's
        decision, so a store outage holds the message), the refusal written on the record
        and its (record, events, confirmations) for the loop; or, with no record, the
        confirmation to publish from the loop."""
        doc = self._store.get_record(invalid.signal_id)
        if doc is None:
            return None, lambda: self._publish_unrecorded(
                invalid.signal_id, invalid.action, invalid.request_id, invalid.reason)
        now = self._clock()
        written = self._journal.persist(doc, lambda s: refuse(
            s, invalid.action, invalid.request_id, invalid.reason, now), None, True)
        return (written if written[1] or written[2] else None), None

    def _publish_unrecorded(self, signal_id: str, action: CommandAction, request_id: str,
                            reason: str) -> None:
        event = Event(OrderStatus.PENDING, self._clock(), str(REFUSED[action]),
                      {"request_id": request_id, "reason": reason})
        payload = confirmation({"signal_id": signal_id}, event, 0)
        payload["status"] = NOT_RECEIVED
        self._outbox.enqueue([payload])

    def _answered(self, command: ModifyOrder, doc: dict) -> CommandOutcome:
        refused = _refusal_of(doc, command.request_id)
        if refused is not None:
            return self._outcome(command, CommandEvent.MODIFY_REJECTED, refused)
        return self._outcome(command, CommandEvent.MODIFIED, None)

    @staticmethod
    def _outcome(command: Command, event: str, reason: str | None) -> CommandOutcome:
        return CommandOutcome(command.request_id, command.signal_id, event, reason)


def _refusal_of(doc: dict, request_id: str) -> str | None:
    """The reason this request was refused, from the record's events, or None."""
    for event in reversed(doc.get("events") or []):
        if event.get("request_id") == request_id and event.get("event") in (
                CommandEvent.CANCEL_REJECTED, CommandEvent.MODIFY_REJECTED):
            return event.get("reason")
    return None


def command_from_doc(doc: dict) -> Command:
    fields = doc["command"]
    model = CancelOrder if doc["action"] == CommandAction.CANCEL else ModifyOrder
    return model.model_validate(fields)
