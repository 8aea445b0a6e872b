"""The order tracker: the one place for retries, polling and timeouts (SPEC §4).

Per order, one task: place it (connect with back-off, up to MAX_RETRY_ATTEMPTS), then follow
the broker until the order is terminal, cancelling it ORDER_TIMEOUT_SECONDS after
`submitted_at` (protective exits are GTC: no timeout, and a halt neither blocks nor cancels
them). An ambiguous placement is resolved by asking the broker for the order tagged
with the signal, never by sending it again blindly.

Whatever fails while an order is tracked, `FAILURE_ACTIONS` says what happens next; no failure
ends the tracking of an order this process still owns.

Here: the tasks, the failure actions and the steps every part uses. The parts, mixed into
`OrderTracker`: placing (order_placement.py), following (order_following.py), cancelling
(order_cancels.py) and a native bracket's children (bracket_children.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from brokers.base import Broker, BrokerOrder
from execution_service.domain import orders
from execution_service.domain.backoff import Backoff
from execution_service.domain.notices import AlertKind, ServiceAlert
from execution_service.domain.reasons import RejectClass
from execution_service.domain.records import as_utc
from execution_service.errors import StoreUnavailable, TransientBrokerError
from execution_service.service.bracket_children import BracketChildren
from execution_service.service.journal import LeaseLost, RecordConflict
from execution_service.service.nudges import Nudges
from execution_service.service.order_cancels import OrderCancels
from execution_service.service.order_following import OrderFollowing
from execution_service.service.order_placement import OrderPlacement
from execution_service.service.ports import JOURNEY_LOGGER, BrokerSource, ExitClaims, Notifier
from execution_service.service.store_thread import StoreThread, on_behalf_of

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)


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


class OrderTracker(OrderPlacement, OrderFollowing, OrderCancels, BracketChildren):
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

    # what every part uses: broker calls, record steps, alerts ---------------------------------

    async def _ensure_connected(self, broker: Broker) -> None:
        if not broker.is_connected:
            await self._timed(broker, "connect", broker.connect())

    async def _timed(self, broker: Broker, call: str, awaitable):
        if self._metrics is None:
            return await awaitable
        with self._metrics.time_broker_call(broker.name, call):
            return await awaitable

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

    def _alert(self, kind: AlertKind, text: str, key: str) -> None:
        logger.warning("Alert: %s", text)
        self._notifier.notify(ServiceAlert(kind, text, key))
