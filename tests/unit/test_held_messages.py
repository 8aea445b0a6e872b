"""While the store cannot take a claim, messages are held (never acked, never nacked) and
handled again, in order, once a probe write succeeds."""

from __future__ import annotations

import asyncio

import pytest

from execution_service.service.held_messages import HeldIntake
from execution_service.service.processor import Action, Outcome

pytestmark = pytest.mark.asyncio


class Message:
    def __init__(self, n: int) -> None:
        self.n = n
        self.nacked = False

    def nack(self) -> None:
        self.nacked = True


class Rig:
    def __init__(self) -> None:
        self.store_up = True
        self.handled: list[int] = []
        self.settled: list[tuple[int, Action]] = []
        self.probes = 0

    def handle(self, message: Message) -> Outcome:
        if not self.store_up:
            return Outcome(Action.HOLD, "store unavailable")
        self.handled.append(message.n)
        return Outcome(Action.ACK)

    def settle(self, message: Message, outcome: Outcome) -> None:
        self.settled.append((message.n, outcome.action))

    def probe(self) -> bool:
        self.probes += 1
        return self.store_up


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_given_outage_when_messages_arrive_then_held_in_order_and_released_after_it():
    rig = Rig()
    intake = HeldIntake(rig.handle, rig.settle, rig.probe, retry_base=0.001, retry_cap=0.01)
    rig.store_up = False
    messages = [Message(n) for n in range(5)]
    for message in messages:
        intake.receive(message)
    await until(lambda: rig.probes >= 3)
    assert intake.holding == 5 and rig.settled == [] and rig.handled == []
    rig.store_up = True
    await until(lambda: intake.holding == 0)
    assert rig.handled == [0, 1, 2, 3, 4]
    assert rig.settled == [(n, Action.ACK) for n in range(5)]
    assert not any(message.nacked for message in messages)


async def test_given_held_messages_when_new_ones_arrive_then_queued_behind_without_the_store():
    rig = Rig()
    intake = HeldIntake(rig.handle, rig.settle, lambda: False, retry_base=0.001)
    rig.store_up = False
    intake.receive(Message(0))
    rig.store_up = True  # the store would take it, but the earlier message waits first
    intake.receive(Message(1))
    assert intake.holding == 2 and rig.handled == []
    await intake.stop()


async def test_given_stop_during_outage_then_held_messages_given_back_to_pubsub():
    rig = Rig()
    intake = HeldIntake(rig.handle, rig.settle, rig.probe, retry_base=0.001)
    rig.store_up = False
    messages = [Message(n) for n in range(3)]
    for message in messages:
        intake.receive(message)
    await intake.stop()
    assert all(message.nacked for message in messages) and intake.holding == 0


async def test_given_store_flapping_when_released_then_unhandled_ones_stay_held():
    rig = Rig()
    intake = HeldIntake(rig.handle, rig.settle, rig.probe, retry_base=0.001, retry_cap=0.01)
    rig.store_up = False
    for n in range(4):
        intake.receive(Message(n))

    original = rig.handle

    def fails_after_two(message):
        outcome = original(message)
        if len(rig.handled) == 2:
            rig.store_up = False  # the store goes again after two claims
        return outcome

    rig.handle = fails_after_two
    intake._handle = fails_after_two
    rig.store_up = True
    await until(lambda: len(rig.handled) == 2)
    assert intake.holding == 2
    rig.store_up = True
    await until(lambda: intake.holding == 0)
    assert rig.handled == [0, 1, 2, 3]


async def test_given_a_probe_that_raises_then_retried_until_it_works():
    rig = Rig()
    calls = []

    def probe() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("probe bug")
        return rig.store_up

    intake = HeldIntake(rig.handle, rig.settle, probe, retry_base=0.001, retry_cap=0.01)
    rig.store_up = False
    intake.receive(Message(0))
    rig.store_up = True
    await until(lambda: intake.holding == 0)
    assert rig.settled == [(0, Action.ACK)] and len(calls) >= 3
