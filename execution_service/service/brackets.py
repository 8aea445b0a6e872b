"""Protective exits (SPEC §12): keeps each entry's stop-loss and take-profit in line with what
is filled, one-cancels-other.

The journal tells the manager about every durable change (`after_change`); the manager
re-plans the brackets that change can affect (the entry's, an exit's parent's, and those of
every open exit on the position a fill moved) and acts: claims and hands new exits to the
tracker (a unique signal_id, so a restart or another replica never places one twice), resizes
working ones through the broker's modify, and cancels those with nothing left to protect.
Each bracket is worked by one task at a time, re-run while changes keep coming and retried
with back-off while the store or the broker is down. `resume` re-plans every unsettled bracket
at start, so the rule holds across a restart. At a venue with native brackets (IB) the exits
are the entry's children, claimed here (`claim_children`) and sent with the entry by the
tracker; the manager then only resizes and cancels them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime

from execution_service.domain import orders
from execution_service.domain.backoff import Backoff
from execution_service.domain.brackets import (
    CHILDREN_ORDER,
    BracketView,
    ExitAction,
    ExitRole,
    ExitStep,
    ExitView,
    exit_claim,
    exit_levels,
    exit_signal_id,
    is_exit,
    is_settled,
    plan_exits,
    resize,
)
from execution_service.domain.orders import Change, EventKind
from execution_service.domain.positions import side_for
from execution_service.errors import (
    DuplicateSignal,
    OrderNotFound,
    OrderRejected,
    StoreUnavailable,
    TransientBrokerError,
)
from execution_service.service.journal import RecordConflict
from execution_service.service.order_placement import request_from_record
from execution_service.service.ports import JOURNEY_LOGGER, BracketStore, BrokerSource
from execution_service.service.positions import position_key
from execution_service.service.store_thread import StoreThread

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)
REPLAN_EVENTS = frozenset({EventKind.FILL, EventKind.LATE_FILL, EventKind.COMPLETED})  # fills
CANCEL_SOURCE = "bracket"


class BracketManager:
    def __init__(self, store: BracketStore, journal, tracker, brokers: BrokerSource,
                 clock: Callable[[], datetime], owner: dict | None = None,
                 lease_until: Callable[[], datetime] | None = None,
                 backoff_base: float = 0.5, backoff_cap: float = 10.0,
                 store_thread: StoreThread | None = None):
        self._store = store
        self._store_thread = store_thread or StoreThread(inline=True)  # store calls off the loop
        self._journal = journal
        self._tracker = tracker
        self._brokers = brokers
        self._clock = clock
        self._owner = owner
        self._lease_until = lease_until or (lambda: None)
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._tasks: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # what changed -----------------------------------------------------------------------------

    def after_change(self, doc: dict, events) -> None:
        """A durable change of any record: re-plan the brackets it can affect."""
        if is_exit(doc):
            self.schedule(doc["parent_signal_id"])
        elif exit_levels(doc) and (doc.get("bracket_at_venue")  # modify, cancel: children follow
                                   or any(e.event in REPLAN_EVENTS for e in events)):
            self.schedule(doc["signal_id"])
        if any(e.event in REPLAN_EVENTS for e in events) and doc.get("account_id"):
            key = position_key(doc)
            self._run(f"position:{sorted(key.items())}", lambda: self._sweep_position(key))

    def schedule(self, parent_signal_id: str) -> None:
        self._run(f"bracket:{parent_signal_id}", lambda: self.sync(parent_signal_id))

    async def resume(self) -> int:
        """At start: every bracket that may still need work (raises StoreUnavailable)."""
        entries = await self._store_thread.run(self._store.unsettled_brackets)
        for entry in entries:
            self.schedule(entry["signal_id"])
        return len(entries)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self, key: str, work: Callable[[], Coroutine]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no daemon here (a CLI write): the daemon's resume picks it up
        if key in self._tasks:
            self._again.add(key)
            return
        self._tasks[key] = loop.create_task(self._until_done(key, work), name=key)

    async def _until_done(self, key: str, work: Callable[[], Coroutine]) -> None:
        try:
            await self._repeat(key, work)
        finally:  # at once, so a change arriving from now on starts a new task
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    async def _repeat(self, key: str, work: Callable[[], Coroutine]) -> None:
        failures = 0
        while True:
            self._again.discard(key)
            try:
                await work()
                failures = 0
            except (StoreUnavailable, TransientBrokerError, RecordConflict) as e:
                failures += 1
                wait = self._backoff.after(failures)
                logger.warning("Protective exits %s: %s; retry in %.1fs", key, e, wait)
                await asyncio.sleep(wait)
                self._again.add(key)
            except Exception:
                logger.exception("Protective exits %s failed unexpectedly; re-planned on the "
                                 "next change or start", key)
                return
            if key not in self._again:
                return

    async def _sweep_position(self, key: dict) -> None:
        """A fill moved this position: every open exit on it may protect too much now."""
        for exit_doc in await self._store_thread.run(self._store.open_exits, key):
            self.schedule(exit_doc["parent_signal_id"])

    # one bracket --------------------------------------------------------------------------------

    async def sync(self, parent_signal_id: str) -> None:
        seen = await self._store_thread.run(self._read_bracket, parent_signal_id)
        if seen is None:
            return
        entry, levels, exits, view = seen
        for step in plan_exits(view):
            await self._act(step, entry, exits.get(step.role), view)
        await self._note_on_entry(parent_signal_id, levels)

    def _read_bracket(self, parent_signal_id: str) -> tuple | None:
        """On the store thread: (entry, levels, exits, view), or None when nothing to do."""
        entry = self._store.get_record(parent_signal_id)
        if entry is None or is_exit(entry):
            return None
        levels = exit_levels(entry)
        if not levels or entry.get("exits_settled") is not False:
            return None  # settled, or claimed before exits existed (never protected on upgrade)
        exits = self._exits(entry, levels)
        view = BracketView(levels, float(entry.get("filled_quantity") or 0.0),
                           {role: ExitView.of(doc) for role, doc in exits.items()},
                           self._position_open(entry), bool(entry.get("bracket_at_venue")),
                           float(entry["quantity"]),
                           not orders.OrderStatus(entry["status"]).is_terminal)
        return entry, levels, exits, view

    async def _note_on_entry(self, parent_signal_id: str, levels) -> None:
        """The entry's record lists its exits, and says when its bracket is settled."""
        entry, fields = await self._store_thread.run(self._entry_notes, parent_signal_id, levels)
        if any(entry.get(name) != value for name, value in fields.items()):
            # facts any replica may write (the same whoever does), not the owner's tracking
            await self._journal.apply_off_loop(self._store_thread, entry, Change, fields,
                                               any_owner=True)

    def _entry_notes(self, parent_signal_id: str, levels) -> tuple[dict, dict]:
        entry = self._store.get_record(parent_signal_id)
        exits = self._exits(entry, levels)
        fields = {"exits": sorted(doc["signal_id"] for doc in exits.values())}
        if is_settled(entry, exits):
            fields["exits_settled"] = True
        return entry, fields

    def _exits(self, entry: dict, levels) -> dict[ExitRole, dict]:
        found = {role: self._store.get_record(exit_signal_id(entry["signal_id"], role))
                 for role in levels}
        return {role: doc for role, doc in found.items() if doc is not None}

    def _position_open(self, entry: dict) -> float:
        position = self._store.open_position(position_key(entry))
        if position is None or position.get("side") != side_for(entry["side"]):
            return 0.0
        return float(position["quantity"])

    async def _act(self, step: ExitStep, entry: dict, exit_doc: dict | None,
                   view: BracketView) -> None:
        if step.action is ExitAction.PLACE:
            await self._place(step, entry)
        elif step.action is ExitAction.RESIZE:
            await self._resize(step, exit_doc, view)
        else:
            await self._cancel(step, exit_doc)

    def claim_children(self, entry: dict, broker) -> list[dict]:
        """A native bracket's exit records (store work), in sending order, claimed before the
        bracket is sent: the children go to the venue with the entry, for its quantity, and
        never on their own. Claimed before (a retry, a restart): the stored records."""
        docs = []
        for role in (role for role in CHILDREN_ORDER if role in exit_levels(entry)):
            signal_id = exit_signal_id(entry["signal_id"], role)
            doc = exit_claim(entry, role, float(entry["quantity"]),
                             broker_tag=broker.order_tag(signal_id), at=self._clock(),
                             owner=self._owner, lease_until=self._lease_until(),
                             with_parent=True)
            try:
                self._store.insert_record(doc)
            except DuplicateSignal:
                doc = self._store.get_record(signal_id)
            if doc is not None:
                docs.append(doc)
        return docs

    async def _place(self, step: ExitStep, entry: dict) -> None:
        signal_id = exit_signal_id(entry["signal_id"], step.role)
        broker = self._brokers.create_broker(entry["broker"])
        doc = exit_claim(entry, step.role, step.quantity, broker_tag=broker.order_tag(signal_id),
                         at=self._clock(), owner=self._owner, lease_until=self._lease_until())
        try:
            await self._store_thread.run(self._store.insert_record, doc)
        except DuplicateSignal:  # claimed by another process (or an early cancel): re-plan
            self._again.add(f"bracket:{entry['signal_id']}")
            return
        logger.info("Protective exit %s: %s %g %s %s @ %s [%s]", step.role, doc["side"],
                    step.quantity, doc["symbol"], doc["order_type"],
                    doc["stop_price"] or doc["limit_price"], signal_id)
        self._tracker.track(doc)

    async def _resize(self, step: ExitStep, exit_doc: dict, view: BracketView) -> None:
        reason = f"protects {view.open_quantity:g} still open of the entry"
        request = request_from_record({**exit_doc, "quantity": step.quantity})
        broker = self._brokers.create_broker(exit_doc["broker"])
        try:
            await self._connected(broker)
            await broker.modify_order(exit_doc["order_id"], request)
        except (OrderRejected, OrderNotFound) as e:
            # executing or done at the venue: its fills will show, and bring us back
            logger.warning("Resizing %s to %g refused: %s [%s]", step.role, step.quantity, e,
                           exit_doc["signal_id"])
            return
        now = self._clock()
        await self._journal.apply_off_loop(self._store_thread, exit_doc,
                                           lambda s: resize(s, step.quantity, reason, now))
        self._tracker.nudge(exit_doc["signal_id"])

    async def _cancel(self, step: ExitStep, exit_doc: dict) -> None:
        now = self._clock()
        doc = await self._journal.apply_off_loop(self._store_thread, exit_doc,
                                                 lambda s: orders.request_cancel(
                                                     s, step.reason, now, source=CANCEL_SOURCE))
        journey.info("Cancelling protective exit %s: %s [%s]", step.role, step.reason,
                    doc["signal_id"])
        if doc["status"] == str(orders.OrderStatus.PENDING_CANCEL) and doc.get("order_id"):
            broker = self._brokers.create_broker(doc["broker"])
            try:
                await self._connected(broker)
                await broker.cancel_order(doc["order_id"])
            except (TransientBrokerError, OrderNotFound, OrderRejected) as e:
                logger.warning("Cancel of %s at the broker failed (%s); the tracker sends it "
                               "again", doc["signal_id"], e)
        self._tracker.nudge(doc["signal_id"])

    @staticmethod
    async def _connected(broker) -> None:
        if not broker.is_connected:
            await broker.connect()
