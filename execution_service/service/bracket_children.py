"""The order tracker's part in a native bracket (SPEC §12, IB): the entry's exits are claimed
before the entry is sent, go to the venue with it as its children, and are then followed like
any order; a child is found at the venue by its tag, never sent on its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from brokers.base import Broker
from execution_service.domain import orders
from execution_service.domain.brackets import exit_levels, exit_signal_id, is_exit
from execution_service.domain.notices import AlertKind
from execution_service.domain.reasons import reason_class
from execution_service.domain.records import as_utc


class BracketChildren:
    """Mixed into OrderTracker: uses its journal, store thread, nudges and tracking steps."""

    def _native_bracket(self, broker: Broker, doc: dict) -> bool:
        """An entry with exit levels, claimed since exits exist (`exits_settled` false; one
        from before an upgrade is not protected), for a venue that keeps brackets."""
        return broker.native_brackets and self.brackets is not None and not is_exit(doc) \
            and bool(exit_levels(doc)) and doc.get("exits_settled") is False

    async def _claim_children(self, broker: Broker, doc: dict) -> tuple[dict, list[dict]]:
        """The entry says its exits live at the venue, then the exits are claimed (both before
        anything is sent) and followed; each finds its order by its tag once the entry is
        placed, and is never sent on its own."""
        if not doc.get("bracket_at_venue"):
            doc = await self._apply(doc, lambda s: orders.Change(s), {"bracket_at_venue": True})
        children = await self._store_thread.run(self.brackets.claim_children, doc, broker)
        for child in children:  # one owned elsewhere (a dead daemon's) comes with the sweep
            if _owner_id(child) == _owner_id(doc) and \
                    not orders.OrderStatus(child["status"]).is_terminal:
                self.track(child)
        return doc, children

    def _nudge_children(self, doc: dict) -> None:
        if doc.get("bracket_at_venue"):
            for role in exit_levels(doc):
                self.nudge(exit_signal_id(doc["signal_id"], role))

    async def _await_parent(self, broker: Broker, doc: dict) -> dict:
        """A native bracket's child: found at the venue by its tag once its entry has an order
        there, never sent on its own. Rejected when its entry ended without reaching the
        venue, or when the venue shows no such child an order timeout after the entry's."""
        attempt = 0
        while True:
            doc = await self._store_thread.run(self._journal.reload, doc)
            if doc["status"] != "PENDING":
                return doc
            parent = await self._store_thread.run(
                self._journal.reload, {"signal_id": doc["parent_signal_id"]})
            if parent.get("order_id"):
                found = await self._lookup(broker, doc)
                if found is not None:
                    return await self._follow_snapshot(doc, found)
            why = self._child_missing(parent)
            if why is not None:
                return await self._reject(doc, why, reason_class(why))
            attempt += 1
            await self._nudges.wait(doc["signal_id"], asyncio.sleep(
                self._policy.store_backoff.after(attempt)))

    def _child_missing(self, parent: dict) -> str | None:
        status = parent.get("status")
        if status and orders.OrderStatus(status).is_terminal and not parent.get("order_id"):
            return (f"its entry {parent['signal_id']} ended {status} before reaching the broker"
                    f": {parent.get('reject_reason') or parent.get('cancel_reason')}")
        placed_at = parent.get("submitted_at")
        if placed_at and self._clock() >= as_utc(placed_at) + \
                timedelta(seconds=self._policy.order_timeout):
            reason = (f"its entry {parent['signal_id']} was placed but the broker shows no "
                      f"child order tagged for it {self._policy.order_timeout:g}s later")
            self._alert(AlertKind.OPERATOR, f"{reason}: check the broker",
                        key=f"child:{parent['signal_id']}")
            return reason
        return None


def _owner_id(doc: dict) -> str | None:
    return (doc.get("owner") or {}).get("id")
