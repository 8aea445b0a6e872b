"""The daemon's doors while the store hangs (issue 13, item 4): with the store thread stuck in
a call, /healthz and every HTTP route still answer from the event loop (503, naming the store),
a Telegram command gets a "store unavailable" reply through the real python-telegram-bot
Application, the loop keeps turning, and what was asked during the hang (an order, a cancel)
is carried out once the store answers, with no restart."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from execution_service.adapters.telegram_commands import TelegramCommands
from execution_service.bootstrap import build_desk
from execution_service.domain.commands import parse_command
from execution_service.errors import StoreUnavailable
from execution_service.service import daemon as daemon_module
from execution_service.service.daemon import ExecutionDaemon
from execution_service.service.operator_desk import OperatorDesk
from execution_service.service.processor import Action
from execution_service.status import status_text
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.served_api import serve, until
from tests.fakes.service_fakes import make_app, order_body

pytestmark = pytest.mark.asyncio
ANSWER_SECONDS = 0.5  # how long a door waits for the store here (the product's is 5 s)
NO_ANSWER = f"store unavailable: no answer within {ANSWER_SECONDS:g}s"
ADMIN = 4242


class _Consumer:
    running = True


class LoopTicks:
    """Counts turns of a task that sleeps on the event loop: it only counts while the loop
    runs."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0.005)

    async def go_on(self) -> None:
        seen = self.count
        await until(lambda: self.count > seen + 5, what="the event loop turning")

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@contextlib.asynccontextmanager
async def store_hanging(app):
    """The store thread stuck in a call until the block ends (a store that never answers)."""
    release = threading.Event()
    stuck = asyncio.ensure_future(app.store_thread.run(release.wait))
    await until(lambda: app.store_thread.stalled_for() > 0, what="the store thread stuck")
    try:
        yield
    finally:
        release.set()
        await stuck


def answers_after_the_hang(app, monkeypatch=None) -> None:
    """Once the store answers again, doors and health wait as long as in the product (a loaded
    machine may take more than ANSWER_SECONDS for a call queued behind others)."""
    app.store_thread.answer_seconds = 30.0
    if monkeypatch is not None:
        monkeypatch.setattr(daemon_module, "STORE_STALL_SECONDS", 30.0)


def status_of(app, signal_id: str = "sig_1") -> str | None:
    return (app.store.get_record(signal_id) or {}).get("status")


async def test_given_a_hanging_store_then_healthz_and_every_route_answer_503_and_the_loop_turns(
        monkeypatch):
    monkeypatch.setattr(daemon_module, "STORE_STALL_SECONDS", 0.0)
    async with serve() as api:
        app = api.app
        app.store_thread.answer_seconds = ANSWER_SECONDS
        daemon = ExecutionDaemon(app, _Consumer(), None, app.clock)
        await app.store_thread.run(daemon.write_heartbeat)
        app.metrics.bind(healthy=daemon.healthy)
        assert (await api.client.get("/healthz")).status_code == 200
        ticks = LoopTicks()
        async with store_hanging(app):
            health = await api.client.get("/healthz")
            assert health.status_code == 503
            assert health.text.startswith("store: a call has been waiting")
            for path in ("/orders", "/orders/sig_1", "/positions", "/confirmations", "/status",
                         "/capabilities"):
                answer = await api.get(path)
                assert answer.status_code == 503, path
                assert answer.json()["detail"].startswith(NO_ANSWER), path
                assert answer.headers["retry-after"] == "1"
            for path, body in (("/orders", order_body()), ("/halt", {"reason": "x"}),
                               ("/orders/sig_1/cancel", {"request_id": "r1"})):
                assert (await api.post(path, body)).status_code == 503, path
            await ticks.go_on()
        await ticks.stop()
        answers_after_the_hang(app, monkeypatch)
        assert (await api.get("/orders")).status_code == 200
        await app.store_thread.run(daemon.write_heartbeat)  # its loop does it in the daemon
        await until(lambda: daemon.healthy()[0], what="healthy again")
        assert (await api.client.get("/healthz")).status_code == 200
        assert app.store.list_halts() == []  # the halt was refused (503), not half-done


async def test_given_a_hanging_store_when_an_order_and_a_cancel_come_through_the_desk_then_503_and_both_are_carried_out_once_it_answers():  # noqa: E501
    """Given the store thread stuck; when an order is posted and a cancel asked at the desk;
    then both answer StoreUnavailable in time, and once the store answers the order is claimed
    and tracked and the cancel carried out, without a restart."""
    app, publisher = make_app(env={"MOCK_FILL_DELAY_SECONDS": "0.05"})
    app.store_thread.answer_seconds = ANSWER_SECONDS
    desk = build_desk(app)
    resting = order_body(signal_id="sig_rest", order_type="LIMIT", limit_price=230.0)
    assert app.processor.handle(resting).action is Action.ACK
    await until(lambda: status_of(app, "sig_rest") == "SUBMITTED", what="the resting order")
    cancel = parse_command({"action": "CANCEL", "request_id": "req_hang",
                            "signal_id": "sig_rest", "by": "api:desk"})
    async with store_hanging(app):
        with pytest.raises(StoreUnavailable, match=NO_ANSWER):
            await desk.submit_order(order_body(), "api:desk")
        with pytest.raises(StoreUnavailable, match="carried out once kept"):
            await desk.command(cancel, wait=1.0)
    await until(lambda: status_of(app) == "FILLED", what="the order posted during the hang")
    await until(lambda: status_of(app, "sig_rest") == "CANCELLED", what="the cancel")
    await until(lambda: "FILLED" in publisher.statuses("sig_1"), what="its confirmation")
    assert app.store.mock_ledger.count() == 2  # each placed once
    await app.tracker.stop()
    await app.commands.stop()
    await app.outbox.stop()


@pytest.fixture
def telegram():
    with FakeTelegram() as fake:
        yield fake


async def asked(telegram: FakeTelegram, text: str) -> str:
    before = len(telegram.sent_to(ADMIN))
    telegram.push_command(ADMIN, text, "desk")
    await until(lambda: telegram.sent_to(ADMIN)[before:], timeout=30,
                what=f"the answer to {text}")
    return telegram.sent_to(ADMIN)[before]


async def test_given_a_hanging_store_when_telegram_commands_arrive_then_each_gets_a_store_unavailable_reply_and_the_cancel_is_done_after(  # noqa: E501
        telegram):
    app, _ = make_app()
    app.store_thread.answer_seconds = ANSWER_SECONDS
    desk = OperatorDesk(app.store, status_text(app.store, app.settings), app.clock,
                        commands=app.commands, store_thread=app.store_thread)
    bot = TelegramCommands("123456:hang-test-token-not-secret", telegram.url, (ADMIN,), desk,
                           poll_timeout=1.0)
    await bot.start()
    try:
        await until(lambda: bot.polling, timeout=30, what="the bot polling")
        assert app.processor.handle(order_body(order_type="LIMIT", limit_price=230.0)).action \
            is Action.ACK
        await until(lambda: status_of(app) == "SUBMITTED", what="the resting order")
        ticks = LoopTicks()
        async with store_hanging(app):
            for command in ("/status", "/positions", "/orders", "/show sig_1", "/halt stop"):
                name = command.split()[0]
                assert await asked(telegram, command) == f"{name} failed: {NO_ANSWER}"
            cancelled = await asked(telegram, "/cancel sig_1")
            assert cancelled.startswith(f"/cancel failed: {NO_ANSWER} (request telegram-")
            await ticks.go_on()
        await ticks.stop()
        answers_after_the_hang(app)
        await until(lambda: status_of(app) == "CANCELLED", what="the cancel asked in the hang")
        assert (await asked(telegram, "/positions")) == "no open positions"
        assert app.store.list_halts() == []
    finally:
        await bot.stop()
        await app.tracker.stop()
        await app.commands.stop()
        await app.outbox.stop()
