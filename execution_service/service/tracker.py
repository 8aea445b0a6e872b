"""The order tracker: the one place for retries, polling and timeouts (SPEC §4).

Per order, one task: place it (connect with back-off, up to MAX_RETRY_ATTEMPTS), then follow
the broker until the order is terminal, cancelling it ORDER_TIMEOUT_SECONDS after
`submitted_at` (protective exits are GTC: no timeout, and a halt neither blocks nor cancels
them). An ambiguous placement is resolved by asking the broker for the order tagged
with the signal, never by sending it again blindly.

Whatever fails while an order is tracked, `FAILURE_ACTIONS` says what happens next; no failure
ends the tracking of an order this process still owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from brokers.base import Broker, BrokerOrder, OrderRequest
from execution_service.domain import orders
from execution_service.domain.backoff import Backoff
from execution_service.domain.brackets import is_exit, oca_group, oca_levels
from execution_service.domain.commands import placement_refusal
from execution_service.domain.notices import AlertKind, CancelCause, ServiceAlert
from execution_service.domain.reasons import RejectClass, reason_class
from execution_service.domain.records import ORDER_FIELDS, as_utc, state_of
from execution_service.domain.risk import halt_reason
from execution_service.errors import (
    OrderNotFound,
    OrderRejected,
    PlacementUncertain,
    StoreUnavailable,
    TransientBrokerError,
)
from execution_service.service.bracket_children import BracketChildren
from execution_service.service.journal import LeaseLost, RecordConflict
from execution_service.service.nudges import Nudges
from execution_service.service.ports import JOURNEY_LOGGER, BrokerSource, ExitClaims, Notifier
from execution_service.service.store_thread import StoreThread, on_behalf_of

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)
PENDING_CANCEL = str(orders.OrderStatus.PENDING_CANCEL)


@dataclass(frozen=True)
class TrackingPolicy:
    order_timeout: float = 60.0
    max_attempts: int = 3
    backoff_base: float = 0.5
    poll_interval: float = 0.5
    store_retry_cap: float = 5.0
    late_fill_grace: float = 1.0  # after a cancel, look once more for a fill that raced it

    @property
    def broker_backoff(self) -> Backoff:
        return Backoff(self.backoff_base)

    @property
    def store_backoff(self) -> Backoff:
        return Backoff(self.backoff_base, self.store_retry_cap)


class FailureAction(StrEnum):
    STOP = "stop"  # another process owns the record now and tracks it
    RETRY = "retry"  # back off, reload the record, go on (a PENDING one is looked up by tag)
    RETRY_AND_ALERT = "retry_and_alert"  # the same, and the operator hears of it once


# What tracking does when a call fails, by failure class, first match wins. A rejection
# (OrderRejected) and an uncertain placement (PlacementUncertain) are answered where the order
# is placed: the record is rejected with the broker's reason, or the order is looked up by its
# tag until found or until the order's timeout.
FAILURE_ACTIONS: tuple[tuple[type[BaseException], FailureAction], ...] = (
    (LeaseLost, FailureAction.STOP),
    (RecordConflict, FailureAction.RETRY),
    (StoreUnavailable, FailureAction.RETRY),
    (TransientBrokerError, FailureAction.RETRY),
    (Exception, FailureAction.RETRY_AND_ALERT),
)


def failure_action(error: BaseException) -> FailureAction:
    return next(action for kind, action in FAILURE_ACTIONS if isinstance(error, kind))


def request_from_record(doc: dict) -> OrderRequest:
    fields = {name: doc.get(name) for name in ORDER_FIELDS if name != "stop_loss"
              and name != "take_profit"}
    fields = {name: value for name, value in fields.items() if value is not None}
    return OrderRequest(signal_id=doc["signal_id"], account_id=doc["account_id"],
                        broker_account=doc.get("broker_account"), oca_group=oca_group(doc),
                        oca_levels=oca_levels(doc),
                        **fields)


class OrderTracker(BracketChildren):
    def __init__(self, journal, brokers: BrokerSource, notifier: Notifier,
                 policy: TrackingPolicy,
                 clock: Callable[[], datetime],
                 halts: Callable[..., dict | None] | None = None, metrics=None,
                 store_thread: StoreThread | None = None):
        self._journal = journal
        self._store_thread = store_thread or StoreThread(inline=True)
        self._brokers = brokers
        self._notifier = notifier
        self._policy = policy
        self._clock = clock
        self._halts = halts or (lambda _account_id, _broker=None: None)
        self._metrics = metrics
        self._tasks: dict[str, asyncio.Task] = {}
        self._nudges = Nudges()
        # signal_id: (modifies at its broker not yet recorded, set when none is left)
        self._holds: dict[str, tuple[int, asyncio.Event]] = {}
        self.brackets: ExitClaims | None = None  # claims a native bracket's exits (§12)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def tracked_ids(self) -> list[str]:
        return list(self._tasks)

    def nudge(self, signal_id: str) -> None:
        """The stored record changed under the tracker (a cancel or modify was recorded): if
        this process tracks the order, it reads the record again now instead of at its next
        write. (Another replica's tracker learns it from its next compare-and-set.)"""
        if signal_id in self._tasks:
            self._nudges.nudge(signal_id)

    @contextlib.asynccontextmanager
    async def holding(self, signal_id: str):
        """While a modify of this order is at its broker and not yet recorded, this process's
        tracker records none of the order's broker news: a marketable modify fills at once,
        and its fill (of the new quantity, at the new limit) is recorded after its MODIFIED,
        as a reader of the confirmations needs. (A modify carried out by another replica is
        still recorded, values and all, if its fill was recorded first: commands.py.)"""
        count, released = self._holds.get(signal_id, (0, asyncio.Event()))
        self._holds[signal_id] = (count + 1, released)
        try:
            yield
        finally:
            count, released = self._holds.pop(signal_id)
            if count > 1:
                self._holds[signal_id] = (count - 1, released)
            else:
                released.set()

    async def _unheld(self, signal_id: str) -> None:
        while signal_id in self._holds:
            await self._holds[signal_id][1].wait()

    async def _take_nudge(self, doc: dict) -> dict:
        if not self._nudges.take(doc["signal_id"]):
            return doc
        return await self._store_thread.run(self._journal.reload, doc)

    def forget(self, signal_id: str) -> None:
        """Stop tracking one order (another process owns it now)."""
        task = self._tasks.get(signal_id)
        if task is not None:
            task.cancel()

    def track(self, doc: dict, *, recovering: bool = False) -> None:
        """Place (if still PENDING) and follow this record's order in the background.

        `recovering`: the record comes from an earlier run, so a PENDING one may have reached
        the broker already; it is looked up by its tag before anything is sent.
        """
        signal_id = doc["signal_id"]
        if signal_id in self._tasks:
            return
        task = asyncio.create_task(self._run(doc, recovering), name=f"track-{signal_id}")
        self._tasks[signal_id] = task
        task.add_done_callback(lambda _t: self._done(signal_id))

    def _done(self, signal_id: str) -> None:
        self._tasks.pop(signal_id, None)
        self._nudges.forget(signal_id)

    async def stop(self) -> None:
        """Stop tracking; every record stays as stored and is resumed on the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, doc: dict, recovering: bool) -> None:
        claimed_at = as_utc(doc.get("received_at"))
        if claimed_at is not None:
            on_behalf_of(claimed_at.timestamp())  # the store thread: oldest signal first
        failures = 0
        while True:
            try:
                await self._work(doc, recovering)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - FAILURE_ACTIONS decides, nothing escapes
                action = failure_action(e)
                if action is FailureAction.STOP:
                    logger.info("Stopped tracking %s: %s", doc["signal_id"], e)
                    return
                failures += 1
                wait = self._policy.store_backoff.after(failures)
                if action is FailureAction.RETRY_AND_ALERT:
                    journey.exception("Tracking %s failed unexpectedly; retry in %.1fs",
                                      doc["signal_id"], wait)
                    if failures == 1:
                        self._alert(AlertKind.OPERATOR, f"Tracking {doc['signal_id']} failed: "
                                    f"{type(e).__name__}: {e}; retrying",
                                    key=f"tracking:{doc['signal_id']}")
                else:
                    logger.warning("Tracking %s: %s: %s; retry in %.1fs", doc["signal_id"],
                                   type(e).__name__, e, wait)
                await asyncio.sleep(wait)
                doc, recovering = await self._store_thread.run(self._journal.reload, doc), True

    async def _work(self, doc: dict, recovering: bool) -> None:
        broker = self._brokers.create_broker(doc["broker"])
        if doc["status"] == "PENDING" and doc.get("placed_with_parent"):
            doc = await self._await_parent(broker, doc)
        elif doc["status"] == "PENDING" and doc.get("placement_uncertain_at"):
            doc = await self._resolve_uncertain(broker, doc)
        elif doc["status"] == "PENDING":
            doc = await self._place(broker, doc, look_first=recovering)
            self._nudge_children(doc)
        if doc["order_id"] and not orders.OrderStatus(doc["status"]).is_terminal:
            await self._follow(broker, doc)

    # placing ----------------------------------------------------------------------------------

    async def _place(self, broker: Broker, doc: dict, look_first: bool) -> dict:
        """Send the order once; retry only what certainly did not reach the broker."""
        found = await self._lookup(broker, doc) if look_first else None
        if found is not None:
            return await self._follow_snapshot(doc, found)
        request = request_from_record(doc)
        journey.info("Placing order: %s %g %s %s [%s]", request.side, request.quantity,
                    request.symbol, request.order_type, request.signal_id)
        last_error: Exception | None = None
        children: list[dict] | None = None
        for attempt in range(1, self._policy.max_attempts + 1):
            doc = await self._take_nudge(doc)
            refusal = self._refusal(doc)
            if refusal is not None:  # nothing can have reached the broker yet
                return await self._reject(doc, *refusal)
            if children is None and self._native_bracket(broker, doc):
                doc, children = await self._claim_children(broker, doc)
            try:
                await self._ensure_connected(broker)
                placed = await self._send(broker, request, children)
                return await self._follow_snapshot(doc, placed)
            except TransientBrokerError as e:
                last_error = e
                logger.warning("Broker %s unavailable for %s (attempt %d/%d): %s", broker.name,
                               request.signal_id, attempt, self._policy.max_attempts, e)
                if attempt < self._policy.max_attempts:
                    await asyncio.sleep(self._policy.broker_backoff.after(attempt))
            except OrderRejected as e:
                if e.alert:
                    self._alert(AlertKind.OPERATOR, e.alert, key=e.alert)
                return await self._reject(doc, e.reason, reason_class(e.reason))  # its words
            except PlacementUncertain as e:
                logger.warning("Placement of %s uncertain (%s): looking it up by its tag",
                               request.signal_id, e)
                return await self._resolve_uncertain(broker, doc)
        reason = (f"broker connection failed after {self._policy.max_attempts} attempts: "
                  f"{last_error}")
        self._alert(AlertKind.BROKER_CONNECTION_LOST, f"{broker.name}: {last_error}",
                    key=f"lost:{broker.name}")
        return await self._reject(doc, reason, RejectClass.CONNECTION)

    def _refusal(self, doc: dict) -> tuple[str, RejectClass] | None:
        refusal = placement_refusal(state_of(doc))
        if refusal is not None:
            return refusal, RejectClass.REQUEST
        halt = None if is_exit(doc) else self._halts(doc["account_id"], doc.get("broker"))
        return None if halt is None else (halt_reason(halt), RejectClass.HALT)

    async def _send(self, broker: Broker, request: OrderRequest,
                    children: list[dict] | None) -> BrokerOrder:
        if children is None:
            return await self._timed(broker, "place_order", broker.place_order(request))
        if any(child.get("order_id") for child in children):
            raise PlacementUncertain(f"the bracket of {request.signal_id} reached "
                                     f"{broker.name} before a restart")
        exits = [request_from_record(child) for child in children if child["status"] == "PENDING"]
        entry, _ = await self._timed(broker, "place_bracket",
                                     broker.place_bracket(request, exits))
        return entry

    async def _ensure_connected(self, broker: Broker) -> None:
        if not broker.is_connected:
            await self._timed(broker, "connect", broker.connect())

    async def _timed(self, broker: Broker, call: str, awaitable):
        if self._metrics is None:
            return await awaitable
        with self._metrics.time_broker_call(broker.name, call):
            return await awaitable

    async def _resolve_uncertain(self, broker: Broker, doc: dict) -> dict:
        """Look the order up by its tag until the broker shows it; never send it again. The
        record says so first, so a retry or another process does the same. Not found within
        the order timeout: rejected with the reason, and the operator is alerted."""
        if not doc.get("placement_uncertain_at"):
            doc = await self._apply(doc, lambda s: orders.Change(s),
                                    {"placement_uncertain_at": self._clock()})
        deadline = as_utc(doc["placement_uncertain_at"]) + \
            timedelta(seconds=self._policy.order_timeout)
        attempt = 0
        while True:
            found = await self._lookup(broker, doc)
            if found is not None:
                return await self._follow_snapshot(doc, found)
            if self._clock() >= deadline:
                break
            attempt += 1
            await asyncio.sleep(self._policy.store_backoff.after(attempt))
        reason = (f"placement uncertain: {broker.name} shows no order tagged "
                  f"{doc['signal_id']} {self._policy.order_timeout:g}s after it was sent")
        self._alert(AlertKind.OPERATOR, f"{reason}: rejected here; check the broker",
                    key=f"uncertain:{doc['signal_id']}")
        return await self._reject(doc, reason, RejectClass.BROKER)

    async def _lookup(self, broker: Broker, doc: dict) -> BrokerOrder | None:
        for attempt in range(1, self._policy.max_attempts + 1):
            try:
                await self._ensure_connected(broker)
                return await self._timed(broker, "find_order",
                                         broker.find_order(doc["signal_id"]))
            except TransientBrokerError as e:
                logger.warning("Looking up %s failed: %s", doc["signal_id"], e)
                await asyncio.sleep(self._policy.broker_backoff.after(attempt))
        raise TransientBrokerError(f"could not look up {doc['signal_id']} at {broker.name}")

    async def _apply(self, doc: dict, step, extra_fields: dict | None = None) -> dict:
        return await self._journal.apply_off_loop(self._store_thread, doc, step, extra_fields)

    async def _reject(self, doc: dict, reason: str, kind: RejectClass) -> dict:
        return await self._apply(doc, lambda s: orders.reject(s, reason, self._clock(), kind))

    async def _follow_snapshot(self, doc: dict, snapshot: BrokerOrder,
                               cancel_reason: str | None = None) -> dict:
        now = self._clock()
        return await self._apply(doc, lambda s: orders.follow_broker(
            s, order_id=snapshot.order_id, broker_status=str(snapshot.status),
            fills=snapshot.fills, reason=snapshot.reason, at=now, cancel_reason=cancel_reason,
            commission_total=snapshot.extra.get("commission")))

    # following --------------------------------------------------------------------------------

    async def _follow(self, broker: Broker, doc: dict) -> None:
        policy = self._policy
        deadline = None if is_exit(doc) else \
            as_utc(doc["submitted_at"]) + timedelta(seconds=policy.order_timeout)
        failures = 0
        poll_id = doc["order_id"]
        cancel_sent = False
        while not orders.OrderStatus(doc["status"]).is_terminal:
            doc = await self._take_nudge(doc)
            if doc["status"] == PENDING_CANCEL and not cancel_sent:
                doc, cancel_sent = await self._send_cancel(broker, doc)
                continue
            try:
                await self._ensure_connected(broker)
                snapshot = await self._snapshot(broker, poll_id, doc)
                poll_id = snapshot.order_id
                failures = 0
            except TransientBrokerError as e:
                failures += 1
                wait = policy.store_backoff.after(failures)
                logger.warning("Polling %s failed (%s); retry in %.1fs", doc["signal_id"], e,
                               wait)
                await asyncio.sleep(wait)
                continue
            if doc["signal_id"] in self._holds:
                await self._unheld(doc["signal_id"])
                doc = await self._store_thread.run(self._journal.reload, doc)
            doc = await self._follow_snapshot(doc, snapshot, doc.get("cancel_requested_reason"))
            if doc["status"] == "CANCELLED":
                await self._watch_for_late_fill(broker, doc)
            if orders.OrderStatus(doc["status"]).is_terminal:
                return
            now = self._clock()
            pending_cancel = doc["status"] == PENDING_CANCEL
            timed_out = deadline is not None and now >= deadline
            why = None if pending_cancel else self._cancel_reason(doc, timed_out)
            if why is not None:
                doc = await self._request_cancel(broker, doc, *why)
                cancel_sent = doc["status"] == PENDING_CANCEL
                continue
            wait = policy.poll_interval if pending_cancel or deadline is None else \
                min(policy.poll_interval, (deadline - now).total_seconds())
            await self._nudges.wait(doc["signal_id"],
                                    broker.wait_for_update(poll_id, max(wait, 0.001)))

    async def _snapshot(self, broker: Broker, order_id: str, doc: dict) -> BrokerOrder:
        """The order by its id; a broker that no longer knows the id is asked by signal tag
        ("order not found" is never a rejection)."""
        try:
            return await self._timed(broker, "get_order", broker.get_order(order_id))
        except OrderNotFound as e:
            found = await self._timed(broker, "find_order", broker.find_order(doc["signal_id"]))
            if found is None:
                raise TransientBrokerError(f"{broker.name} does not know {order_id} "
                                           f"or any order tagged {doc['signal_id']}") from e
            return found

    async def _watch_for_late_fill(self, broker: Broker, doc: dict) -> None:
        """A cancel can race a fill at the venue: the broker's fills are the truth."""
        await asyncio.sleep(self._policy.late_fill_grace)
        try:
            snapshot = await self._snapshot(broker, doc["order_id"], doc)
        except TransientBrokerError as e:
            logger.warning("Late-fill check of %s failed: %s", doc["signal_id"], e)
            return
        await self._follow_snapshot(doc, snapshot)

    def _cancel_reason(self, doc: dict, timed_out: bool) -> tuple[str, CancelCause] | None:
        """Why this working order must be cancelled now, if it must: a halt that cancels open
        orders (the operator's), or the timeout."""
        halt = None if is_exit(doc) else self._halts(doc["account_id"], doc.get("broker"))
        if halt is not None and halt.get("cancel_open"):
            return halt_reason(halt), CancelCause.OPERATOR
        if timed_out:
            return (f"timeout: not filled within {self._policy.order_timeout:g}s of "
                    f"submission (filled {doc['filled_quantity']:g}/{doc['quantity']:g})",
                    CancelCause.TIMEOUT)
        return None

    async def _request_cancel(self, broker: Broker, doc: dict, reason: str,
                              cause: CancelCause) -> dict:
        """The service's own cancel (timeout, halt): sent, then PENDING_CANCEL until the broker
        confirms."""
        journey.info("Cancelling %s: %s [%s]", doc["order_id"], reason, doc["signal_id"])
        if not await self._cancel_at_broker(broker, doc):
            return doc
        now = self._clock()
        return await self._apply(doc, lambda s: orders.request_cancel(s, reason, now,
                                                                      cause=cause))

    async def _send_cancel(self, broker: Broker, doc: dict) -> tuple[dict, bool]:
        """A PENDING_CANCEL record (a command, or an order accepted while its cancel was
        asked for, or one resumed after a restart): make sure the broker has the cancel."""
        logger.info("Sending cancel of %s: %s [%s]", doc["order_id"],
                    doc.get("cancel_requested_reason"), doc["signal_id"])
        try:
            sent = await self._cancel_at_broker(broker, doc)
        except OrderRejected as e:
            now, why = self._clock(), f"broker refused: {e.reason}"
            return await self._apply(doc, lambda s: orders.refuse_cancel(s, why, now)), False
        return doc, sent

    async def _cancel_at_broker(self, broker: Broker, doc: dict) -> bool:
        try:
            await self._ensure_connected(broker)
            await self._timed(broker, "cancel_order", broker.cancel_order(doc["order_id"]))
            return True
        except (TransientBrokerError, OrderNotFound) as e:
            logger.warning("Cancel of %s failed (%s); retrying", doc["signal_id"], e)
            await asyncio.sleep(self._policy.poll_interval)
            return False

    def _alert(self, kind: AlertKind, text: str, key: str) -> None:
        logger.warning("Alert: %s", text)
        self._notifier.notify(ServiceAlert(kind, text, key))
