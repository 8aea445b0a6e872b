"""The order tracker's cancels: its own (the order timeout, a halt that cancels open orders;
a halt never cancels a protective exit), and a cancel the record asks for (a command, or one
resumed after a restart) made sure of at the broker."""

from __future__ import annotations

import asyncio
import logging

from brokers.base import Broker
from execution_service.domain import orders
from execution_service.domain.brackets import is_exit
from execution_service.domain.notices import CancelCause
from execution_service.domain.risk import halt_reason
from execution_service.errors import OrderNotFound, OrderRejected, TransientBrokerError
from execution_service.service.ports import JOURNEY_LOGGER

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)


class OrderCancels:
    """Mixed into OrderTracker: uses its policy, halts, clock, broker calls and record steps."""

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
