"""Following a placed order (SPEC §4): its broker polled, or woken by the broker's news or a
changed record, until the order is terminal; each snapshot recorded, and a cancelled order
looked at once more for a fill that raced its cancel. A working order is cancelled
ORDER_TIMEOUT_SECONDS after `submitted_at` (protective exits are GTC: no timeout) or when a
halt cancels open orders (order_cancels.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from brokers.base import Broker, BrokerOrder
from execution_service.domain import orders
from execution_service.domain.brackets import is_exit
from execution_service.domain.records import as_utc
from execution_service.errors import OrderNotFound, TransientBrokerError

logger = logging.getLogger(__name__)
PENDING_CANCEL = str(orders.OrderStatus.PENDING_CANCEL)


class OrderFollowing:
    """Mixed into OrderTracker: uses its policy, nudges, holds, broker calls, record steps and
    cancels."""

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
