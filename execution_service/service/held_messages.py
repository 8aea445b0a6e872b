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
from collections.abc import Awaitable, Callable

from execution_service.domain.backoff import Backoff
from execution_service.service.processor import Action, Outcome

logger = logging.getLogger(__name__)


class HeldIntake:
    """`decide(messages) -> outcomes` (async) decides a batch as the consumer does (None: an
    unexpected failure); `settle(message, outcome)` acks, nacks or dead-letters it;
    `probe() -> bool` (async) tries one small write (the heartbeat)."""

    def __init__(self, decide: Callable[[list], Awaitable[list]],
                 settle: Callable[[object, Outcome | None], None],
                 probe: Callable[[], Awaitable[bool]],
                 retry_base: float = 0.1, retry_cap: float = 2.0) -> None:
        self._decide = decide
        self._settle = settle
        self._probe = probe
        self._retry = Backoff(retry_base, retry_cap)
        self._held: deque = deque()
        self._releasing: asyncio.Task | None = None
        self.total_held = 0

    @property
    def holding(self) -> int:
        return len(self._held)

    def hold(self, message) -> None:
        """Keep a message the store could not take (or one that arrived behind such)."""
        self._held.append(message)
        self.total_held += 1
        if self._releasing is None or self._releasing.done():
            self._releasing = asyncio.ensure_future(self._release())

    async def _release(self) -> None:
        attempt = 0
        while self._held:
            attempt += 1
            await asyncio.sleep(self._retry.after(attempt))
            if not await self._store_takes_writes():
                continue
            batch = list(self._held)
            outcomes = await self._decide(batch)
            still_held = [message for message, outcome in zip(batch, outcomes, strict=True)
                          if outcome is not None and outcome.action is Action.HOLD]
            arrived_meanwhile = list(self._held)[len(batch):]
            self._held = deque([*still_held, *arrived_meanwhile])
            for message, outcome in zip(batch, outcomes, strict=True):
                if outcome is None or outcome.action is not Action.HOLD:
                    self._settle(message, outcome)
            released = len(batch) - len(still_held)
            if released:
                logger.info("Store takes writes again: %d held messages handled, %d still held",
                            released, len(self._held))
                attempt = 0

    async def _store_takes_writes(self) -> bool:
        try:
            return await self._probe()
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
