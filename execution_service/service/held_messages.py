"""Messages the store could not take yet: held, unacknowledged, until it takes a write again.

A nack during a store outage would spend one of the subscription's delivery attempts per
redelivery and send the order to the dead letters after a few seconds of outage. Instead the
message stays leased (the Pub/Sub client keeps extending its lease) and, once
PUBSUB_MAX_IN_FLIGHT messages are held, flow control stops the stream from taking more: the
rest wait in the subscription, without spending attempts. When a probe write succeeds, the
held messages are handled again, in the order they arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from execution_service.domain.backoff import compute_backoff
from execution_service.service.processor import Action, Outcome

logger = logging.getLogger(__name__)
HANDLED_PER_TURN = 50  # let the loop's other work run between these while draining


class HeldIntake:
    """`handle(message) -> Outcome` processes one message; `settle(message, outcome)` acks,
    nacks or dead-letters it; `probe() -> bool` tries one small write (the heartbeat)."""

    def __init__(self, handle: Callable[[object], Outcome],
                 settle: Callable[[object, Outcome], None], probe: Callable[[], bool],
                 retry_base: float = 0.1, retry_cap: float = 2.0) -> None:
        self._handle = handle
        self._settle = settle
        self._probe = probe
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._held: deque = deque()
        self._releasing: asyncio.Task | None = None
        self.total_held = 0

    @property
    def holding(self) -> int:
        return len(self._held)

    def receive(self, message) -> None:
        """Handle a message, or hold it while the store cannot take one."""
        if self._held:  # an outage is on: keep the order, leave the store alone
            self._hold(message)
            return
        outcome = self._handle(message)
        if outcome.action is Action.HOLD:
            self._hold(message)
        else:
            self._settle(message, outcome)

    def _hold(self, message) -> None:
        self._held.append(message)
        self.total_held += 1
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.ensure_future(self._release())

    async def _release(self) -> None:
        attempt = 0
        while self._held:
            attempt += 1
            await asyncio.sleep(compute_backoff(attempt, self._retry_base, self._retry_cap))
            if not self._store_takes_writes():
                continue
            released = 0
            while self._held:
                message = self._held.popleft()
                outcome = self._handle(message)
                if outcome.action is Action.HOLD:
                    self._held.appendleft(message)
                    break
                self._settle(message, outcome)
                released += 1
                if released % HANDLED_PER_TURN == 0:
                    await asyncio.sleep(0)
            if released:
                logger.info("Store takes writes again: %d held messages handled, %d still held",
                            released, len(self._held))
                attempt = 0

    def _store_takes_writes(self) -> bool:
        try:
            return self._probe()
        except Exception:  # a bug in the probe must not leave the messages held for good
            logger.exception("Store probe failed unexpectedly; retrying")
            return False

    async def stop(self) -> None:
        """Give held messages back to Pub/Sub (another consumer, or the next start, takes
        them) and stop retrying."""
        if self._releasing is not None:
            self._releasing.cancel()
            await asyncio.gather(self._releasing, return_exceptions=True)
        while self._held:
            self._held.popleft().nack()
