"""While the store cannot take a claim, messages are held (never acked, never nacked) and
decided again, in order, once a probe write succeeds."""

from __future__ import annotations

import pytest

from execution_service.service.held_messages import HeldIntake
from execution_service.service.processor import Action, Outcome
from tests.fakes.waiting import eventually

pytestmark = pytest.mark.asyncio


class Message:
    def __init__(self, n: int) -> None:
        self.n = n
        self.nacked = False

    def nack(self) -> None:
        self.nacked = True


class Rig:
    """A store that is up or down, deciding messages as the daemon would."""

    def __init__(self) -> None:
        self.store_up = True
        self.down_after: int | None = None  # the store goes after this many claims
        self.handled: list[int] = []
        self.settled: list[tuple[int, Action]] = []
        self.probes = 0

    async def decide(self, batch: list) -> list:
        outcomes = []
        for message in batch:
            if self.down_after is not None and len(self.handled) >= self.down_after:
                self.store_up = False
            if not self.store_up:
                outcomes.append(Outcome(Action.HOLD, "store unavailable"))
                continue
            self.handled.append(message.n)
            outcomes.append(Outcome(Action.ACK))
        return outcomes

    def settle(self, message: Message, outcome: Outcome | None) -> None:
        self.settled.append((message.n, outcome.action))

    async def probe(self) -> bool:
        self.probes += 1
        return self.store_up


def held_in_outage(rig: Rig, count: int, probe=None) -> tuple[HeldIntake, list[Message]]:
    """An intake holding `count` messages that came while the store was down."""
    intake = HeldIntake(rig.decide, rig.settle, probe or rig.probe, retry_base=0.001,
                        retry_cap=0.01)
    rig.store_up = False
    messages = [Message(n) for n in range(count)]
    for message in messages:
        intake.hold(message)
    return intake, messages


async def test_given_outage_when_messages_held_then_released_in_order_after_it():
    rig = Rig()
    intake, messages = held_in_outage(rig, 5)
    await eventually(lambda: rig.probes >= 3)
    assert intake.holding == 5 and rig.settled == [] and rig.handled == []
    rig.store_up = True
    await eventually(lambda: intake.holding == 0)
    assert rig.handled == [0, 1, 2, 3, 4]
    assert rig.settled == [(n, Action.ACK) for n in range(5)]
    assert not any(message.nacked for message in messages)


async def test_given_stop_during_outage_then_held_messages_given_back_to_pubsub():
    rig = Rig()
    intake, messages = held_in_outage(rig, 3)
    await intake.stop()
    assert all(message.nacked for message in messages) and intake.holding == 0


async def test_given_store_flapping_when_released_then_unhandled_ones_stay_held_in_order():
    rig = Rig()
    intake, _ = held_in_outage(rig, 4)
    rig.down_after = 2  # the store goes again after two claims
    rig.store_up = True
    await eventually(lambda: len(rig.handled) == 2)
    assert intake.holding == 2
    rig.down_after = None
    rig.store_up = True
    await eventually(lambda: intake.holding == 0)
    assert rig.handled == [0, 1, 2, 3]


async def test_given_a_probe_that_raises_then_retried_until_it_works():
    rig = Rig()
    calls = []

    async def probe() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("probe bug")
        return rig.store_up

    intake, _ = held_in_outage(rig, 1, probe)
    rig.store_up = True
    await eventually(lambda: intake.holding == 0)
    assert rig.settled == [(0, Action.ACK)] and len(calls) >= 3
