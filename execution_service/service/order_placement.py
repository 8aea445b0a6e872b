"""Placing an order (SPEC §4): sent once, connecting with back-off up to MAX_RETRY_ATTEMPTS;
only what certainly did not reach the broker is sent again. An ambiguous placement is resolved
by asking the broker for the order tagged with the signal, never by sending it again blindly.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from brokers.base import Broker, BrokerOrder, OrderRequest
from execution_service.domain import orders
from execution_service.domain.brackets import is_exit, oca_group, oca_levels
from execution_service.domain.commands import placement_refusal
from execution_service.domain.notices import AlertKind
from execution_service.domain.reasons import RejectClass, reason_class
from execution_service.domain.records import ORDER_FIELDS, as_utc, state_of
from execution_service.domain.risk import halt_reason
from execution_service.errors import OrderRejected, PlacementUncertain, TransientBrokerError
from execution_service.service.ports import JOURNEY_LOGGER

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)


def request_from_record(doc: dict) -> OrderRequest:
    fields = {name: doc.get(name) for name in ORDER_FIELDS if name != "stop_loss"
              and name != "take_profit"}
    fields = {name: value for name, value in fields.items() if value is not None}
    return OrderRequest(signal_id=doc["signal_id"], account_id=doc["account_id"],
                        broker_account=doc.get("broker_account"), oca_group=oca_group(doc),
                        oca_levels=oca_levels(doc),
                        **fields)


class OrderPlacement:
    """Mixed into OrderTracker: uses its policy, halts, clock, broker calls and record steps."""

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
