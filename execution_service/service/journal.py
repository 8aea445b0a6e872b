"""Writes each change of an order to the audit store, then lets the world know.

Order of effects for every change: the record (compare-and-set, with its confirmations: the
outbox) → positions → signal_store → publish queue, notifications, logs, counters. The record
is the truth; everything after it can be redone from it after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from execution_service.domain.notices import (
    AlertKind,
    CancelCause,
    NoticeKind,
    OrderNotice,
    ServiceAlert,
)
from execution_service.domain.orders import (
    Change,
    Event,
    EventKind,
    OrderState,
    OrderStatus,
    RecordedFill,
)
from execution_service.domain.records import (
    FILL_EVENTS,
    ORDER_VALUE_EVENTS,
    as_utc,
    cancel_cause_of,
    confirmation,
    is_confirmed,
    modified_fields,
    state_fields,
    state_of,
)
from execution_service.errors import ExecutionError
from execution_service.service.ports import JOURNEY_LOGGER, Notifier, RecordStore

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)
K = EventKind
MAX_CAS_ATTEMPTS = 5


class RecordConflict(ExecutionError):
    """The record kept changing under us (another process works it)."""


class LeaseLost(RecordConflict):
    """Another process took the record over: stop working it."""


@dataclass
class Counters:
    orders_received: int = 0
    orders_submitted: int = 0
    orders_filled: int = 0
    orders_partially_filled: int = 0
    orders_rejected: int = 0
    orders_cancelled: int = 0
    late_fills: int = 0
    duplicates: int = 0
    commands_received: int = 0
    dead_lettered: int = 0
    held: int = 0  # messages the store could not take when they came: held, not nacked

    def as_dict(self) -> dict:
        return dict(vars(self))


class OrderJournal:
    def __init__(self, store: RecordStore, positions, outbox, notifier: Notifier,
                 counters: Counters,
                 clock: Callable[[], datetime], owner_id: str | None = None, metrics=None):
        self._store = store
        self._positions = positions
        self._outbox = outbox
        self._notifier = notifier
        self.counters = counters
        self._clock = clock
        self._owner_id = owner_id
        self._metrics = metrics
        self.brackets = None  # BracketManager (§12), set by bootstrap

    def apply(self, doc: dict, step: Callable[[OrderState], Change],
              extra_fields: dict | None = None) -> dict:
        """Apply a pure step to the record's state and persist it; returns the new record."""
        updated, events, confirmations = self.persist(doc, step, extra_fields)
        if events or confirmations:
            self.after_write(updated, events, confirmations)
        return updated

    async def apply_off_loop(self, store_thread, doc: dict,
                             step: Callable[[OrderState], Change],
                             extra_fields: dict | None = None, any_owner: bool = False) -> dict:
        """`apply`, its store work on the store thread, what follows on the loop."""
        updated, events, confirmations = await store_thread.run(self.persist, doc, step,
                                                                extra_fields, any_owner)
        if events or confirmations:
            self.after_write(updated, events, confirmations)
        return updated

    def persist(self, doc: dict, step: Callable[[OrderState], Change],
                extra_fields: dict | None = None, any_owner: bool = False
                ) -> tuple[dict, tuple[Event, ...], list[dict]]:
        """Positions, then the record's compare-and-set: store work only (any thread).
        `any_owner`: a write any replica may make (a cancel or modify request), retried on a
        record another process holds instead of LeaseLost."""
        for _ in range(MAX_CAS_ATTEMPTS):
            change = step(state_of(doc))
            if not change.events and not extra_fields:
                return doc, (), []
            self._move_positions({**doc, "order_id": change.state.order_id}, change.events)
            updated, confirmations = self._write(doc, change, extra_fields or {})
            if updated is not None:
                return updated, change.events, confirmations
            fresh = self._store.get_record(doc["signal_id"])
            if fresh is None:
                raise RecordConflict(f"record for {doc['signal_id']} disappeared")
            owner = (fresh.get("owner") or {}).get("id")
            if self._owner_id and owner and owner != self._owner_id and not any_owner:
                raise LeaseLost(f"{doc['signal_id']} was taken over by {owner}")
            doc = fresh
        raise RecordConflict(f"record for {doc['signal_id']} kept changing; gave up this round")

    def _move_positions(self, doc: dict, events: tuple[Event, ...]) -> None:
        """Positions move before the record shows the fill: a crash in between replays the fill
        from the broker, and the position recognises it (see service/positions.py)."""
        for event in events:
            if event.event in FILL_EVENTS:
                detail = event.detail
                self._positions.apply(doc, RecordedFill(detail["exec_id"], detail["quantity"],
                                                        detail["price"], detail["fill_at"]))

    def reload(self, doc: dict) -> dict:
        """The stored record, or `doc` when the store cannot say."""
        try:
            return self._store.get_record(doc["signal_id"]) or doc
        except ExecutionError:
            return doc

    def _write(self, doc: dict, change: Change, extra: dict) -> tuple[dict | None, list[dict]]:
        sequence = doc.get("confirmation_sequence", 0)
        state = state_fields(change.state)
        confirmations = []
        for event in change.events:
            if is_confirmed(event):
                sequence += 1
                confirmations.append(confirmation({**doc, **state}, event, sequence))
        fields = {**state, **extra}
        if any(event.event in ORDER_VALUE_EVENTS for event in change.events):
            fields.update(modified_fields(change.state))
        if confirmations:
            fields.update(confirmation_sequence=sequence, outbox_pending=True)
        updated = self._store.update_record(doc, fields, [e.to_doc() for e in change.events],
                                            confirmations)
        return updated, confirmations

    def after_write(self, doc: dict, events: tuple[Event, ...],
                    confirmations: list[dict]) -> None:
        """Everything that follows a durable change, none of it a store call here: the outbox
        publishes the confirmations and writes signal_store, redoing both from the record
        (`outbox_pending`) until done."""
        self._outbox.enqueue(confirmations, doc)
        for event in events:
            self._tell(doc, event)
            if event.detail.get("overfill"):
                self._notifier.notify(overfill_alert(doc, event.detail))
        if events and self.brackets is not None:
            self.brackets.after_change(doc, events)

    def _tell(self, doc: dict, event: Event) -> None:
        signal_id = doc["signal_id"]
        detail = event.detail
        kind = _NOTICE_FOR.get((event.event, event.status)) or _COMMAND_NOTICES.get(event.event)
        if event.event == K.SUBMITTED:
            self.counters.orders_submitted += 1
            journey.info("Order submitted: %s [%s]", detail.get("order_id"), signal_id)
        elif event.event in (K.FILL, K.COMPLETED) and event.status is OrderStatus.FILLED:
            self.counters.orders_filled += 1
            journey.info("Order filled: %s @ $%s [%s]", _qty(doc["filled_quantity"]),
                        _money(doc["avg_fill_price"]), signal_id)
        elif event.event == K.FILL:
            self.counters.orders_partially_filled += 1
            journey.info("Order partially filled: %s/%s @ $%s [%s]",
                        _qty(detail["filled_quantity"]), _qty(doc["quantity"]),
                        _money(detail["avg_fill_price"]), signal_id)
        elif event.event == K.LATE_FILL:
            self.counters.late_fills += 1
            journey.warning("Late fill after cancel: %s @ $%s [%s]", _qty(detail["quantity"]),
                           _money(detail["price"]), signal_id)
        elif event.event == K.REJECTED:
            self.counters.orders_rejected += 1
            journey.info("Order rejected: %s [%s]", detail.get("reason"), signal_id)
        elif event.event == K.CANCELLED:
            self.counters.orders_cancelled += 1
            journey.info("Order cancelled: %s [%s]", detail.get("reason"), signal_id)
        elif event.event in _COMMAND_EVENTS:
            journey.info("%s (request %s): %s [%s]",
                         str(event.event).replace("_", " ").capitalize(),
                         detail.get("request_id"), detail.get("reason") or detail.get("new"),
                         signal_id)
        if kind is not None:
            self._notifier.notify(order_notice(doc, event, kind))
        if self._metrics is not None and event.event in (K.FILL, K.COMPLETED, K.REJECTED,
                                                         K.CANCELLED) \
                and event.status.is_terminal and doc["status"] == str(event.status):
            self._metrics.record_terminal(doc)


_NOTICE_FOR = {
    (K.FILL, OrderStatus.FILLED): NoticeKind.FILLED,
    (K.COMPLETED, OrderStatus.FILLED): NoticeKind.FILLED,
    (K.FILL, OrderStatus.PARTIALLY_FILLED): NoticeKind.PARTIAL_FILL,
    (K.LATE_FILL, OrderStatus.CANCELLED): NoticeKind.LATE_FILL,
    (K.REJECTED, OrderStatus.REJECTED): NoticeKind.REJECTED,
    (K.CANCELLED, OrderStatus.CANCELLED): NoticeKind.CANCELLED,
    (K.FILL, OrderStatus.PENDING_CANCEL): NoticeKind.PARTIAL_FILL,
}
_COMMAND_NOTICES = {K.MODIFIED: NoticeKind.MODIFIED, K.CANCEL_REJECTED: NoticeKind.COMMAND_REFUSED,
                    K.MODIFY_REJECTED: NoticeKind.COMMAND_REFUSED}
_COMMAND_EVENTS = frozenset({K.CANCEL_REQUESTED, K.MODIFIED, K.CANCEL_REJECTED,
                             K.MODIFY_REJECTED})


def overfill_alert(doc: dict, detail: dict) -> ServiceAlert:
    text = (f"Overfill: {doc.get('symbol')} {doc['signal_id']} filled "
            f"{_qty(doc['filled_quantity'])} of {_qty(doc['quantity'])} (venue fill "
            f"{detail['exec_id']}: {_qty(detail['quantity'])} @ {_money(detail['price'])}); "
            f"recorded as the venue reports it, the position follows")
    logger.warning("%s", text)
    return ServiceAlert(AlertKind.OPERATOR, text, key=f"overfill:{doc['signal_id']}:"
                        f"{detail['exec_id']}")


def order_notice(doc: dict, event: Event, kind: NoticeKind) -> OrderNotice:
    detail = event.detail
    submitted, filled_at = as_utc(doc.get("submitted_at")), as_utc(doc.get("filled_at"))
    seconds = (filled_at - submitted).total_seconds() if submitted and filled_at else None
    reason = detail.get("reason") or doc.get("reject_reason") or doc.get("cancel_reason")
    return OrderNotice(
        kind=kind, signal_id=doc["signal_id"], strategy_name=doc.get("strategy_name") or "",
        account_id=doc.get("account_id") or "", account_name=doc.get("account_name"),
        symbol=str(doc.get("symbol") or ""), side=str(doc.get("side") or ""),
        quantity=_number(doc.get("quantity")),
        filled_quantity=detail.get("filled_quantity", doc.get("filled_quantity") or 0.0),
        avg_fill_price=detail.get("avg_fill_price", doc.get("avg_fill_price")),
        commission=detail.get("commission", doc.get("commission")), seconds_to_fill=seconds,
        reason=reason, cancel_cause=_cancel_cause(doc) if kind is NoticeKind.CANCELLED else None,
        last_fill_quantity=detail.get("quantity"), last_fill_price=detail.get("price"),
        order_id=doc.get("order_id"), request_id=detail.get("request_id"), role=doc.get("role"),
        command="CANCEL" if event.event == K.CANCEL_REJECTED else "MODIFY",
        changes=tuple((name, (detail.get("old") or {}).get(name), new)
                      for name, new in (detail.get("new") or {}).items()),
    )


def _cancel_cause(doc: dict) -> CancelCause:
    """Said by whoever asked for the cancel; the broker's own cancel says nothing."""
    return cancel_cause_of(doc) or CancelCause.BROKER


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _qty(value: float) -> str:
    return f"{value:g}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"
