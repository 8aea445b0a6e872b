"""TelegramNotifier with the real python-telegram-bot client against the fake Bot API."""

from __future__ import annotations

import inspect
import logging
import threading
from contextlib import asynccontextmanager

import pytest

from execution_service.adapters.telegram import TelegramNotifier
from execution_service.config import load_settings
from execution_service.domain.notices import AlertKind, NoticeKind, OrderNotice, ServiceAlert
from execution_service.domain.telegram_text import compose_message
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.waiting import eventually

TOKEN = "123456:TEST-token-value-not-secret"
CHAT_ID = "4242"


@pytest.fixture
def fake():
    with FakeTelegram() as server:
        yield server


def fill(n: int = 1) -> OrderNotice:
    return OrderNotice(
        kind=NoticeKind.FILLED,
        signal_id=f"sig_{n}",
        strategy_name="S",
        account_id="acc",
        symbol="SPY",
        side="BUY",
        quantity=100.0,
        filled_quantity=100.0,
        avg_fill_price=235.15,
        commission=1.0,
        seconds_to_fill=2.0,
    )


def broker_lost(text: str = "Broker: IBKR", key: str = "broker:IBKR") -> ServiceAlert:
    return ServiceAlert(kind=AlertKind.BROKER_CONNECTION_LOST, text=text, key=key)


def make_notifier(fake: FakeTelegram, **options) -> TelegramNotifier:
    options = {"http_timeout": 0.5, "stop_timeout": 2.0, **options}
    return TelegramNotifier(options.pop("token", TOKEN), CHAT_ID, fake.url, **options)


@asynccontextmanager
async def running(notifier: TelegramNotifier):
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop()


def accounted(stats: dict) -> int:
    return stats["sent"] + stats["failed"] + stats["dropped"] + stats["queued"]


@pytest.mark.asyncio
async def test_given_events_when_notified_then_their_texts_reach_the_configured_chat_only(fake):
    events = [fill(1), broker_lost(), fill(2)]
    async with running(make_notifier(fake)) as notifier:
        for event in events:
            notifier.notify(event)
        await eventually(lambda: notifier.stats()["sent"] == 3)

    assert [m.text for m in fake.sent] == [compose_message(e) for e in events]
    assert {m.chat_id for m in fake.sent} == {CHAT_ID}
    assert {m.token for m in fake.sent} == {TOKEN}
    assert all("parse_mode" not in m.params for m in fake.sent)
    assert notifier.stats() == {
        "enabled": True,
        "sent": 3,
        "failed": 0,
        "dropped": 0,
        "collapsed": 0,
        "queued": 0,
    }


@pytest.mark.asyncio
async def test_given_notices_queued_before_start_when_started_then_they_are_sent(fake):
    notifier = make_notifier(fake)
    notifier.notify(fill(1))

    async with running(notifier):
        await eventually(lambda: notifier.stats()["sent"] == 1)


@pytest.mark.asyncio
async def test_given_a_429_when_sending_then_it_waits_retry_after_and_delivers_once(fake):
    fake.fail_next(1, status=429, retry_after=1)
    async with running(make_notifier(fake)) as notifier:
        notifier.notify(fill(1))
        await eventually(lambda: notifier.stats()["sent"] == 1)

    attempts = fake.calls_to("sendMessage")
    assert len(attempts) == 2
    assert attempts[1].at - attempts[0].at >= 1.0  # retry_after was honoured
    assert [m.text for m in fake.sent] == [compose_message(fill(1))]
    assert notifier.stats()["failed"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [500, 400])
async def test_given_an_error_answer_then_it_counts_as_failed_and_sending_goes_on(fake, status):
    fake.fail_next(1, status=status)
    async with running(make_notifier(fake)) as notifier:
        notifier.notify(fill(1))
        notifier.notify(fill(2))
        await eventually(lambda: notifier.stats()["sent"] == 1)
        notifier.notify(fill(3))
        await eventually(lambda: notifier.stats()["sent"] == 2)

    assert [m.text for m in fake.sent] == [compose_message(fill(2)), compose_message(fill(3))]
    assert notifier.stats()["failed"] == 1


@pytest.mark.asyncio
async def test_given_a_hanging_api_when_many_notices_then_notify_never_waits_and_oldest_drop(
    fake,
):
    fake.hang("sendMessage")
    notifier = make_notifier(fake, queue_size=20)
    assert not inspect.iscoroutinefunction(notifier.notify)
    async with running(notifier):
        notifier.notify(fill(0))
        await eventually(lambda: fake.hung_requests == 1)  # the drain task is stuck on it

        results = [notifier.notify(fill(n)) for n in range(1, 201)]  # no await in between

        assert results == [None] * 200
        assert notifier.stats()["dropped"] == 180
        assert notifier.stats()["queued"] == 20
        fake.stop_hanging()
        await eventually(lambda: notifier.stats()["queued"] == 0 and notifier.stats()["sent"] == 20)

    assert [m.text for m in fake.sent] == [compose_message(fill(n)) for n in range(181, 201)]
    assert notifier.stats()["failed"] == 1  # the one that hung timed out
    assert accounted(notifier.stats()) == 201


@pytest.mark.asyncio
async def test_given_an_api_hanging_at_start_then_start_and_stop_stay_short(fake):
    fake.hang("getMe")
    fake.hang("sendMessage")
    notifier = make_notifier(fake, stop_timeout=0.2)

    async with running(notifier):
        notifier.notify(fill(1))
        notifier.notify(fill(2))

    assert notifier.stats()["sent"] == 0
    assert accounted(notifier.stats()) == 2


@pytest.mark.asyncio
async def test_given_notices_just_queued_when_stopped_then_they_are_sent_first(fake):
    async with running(make_notifier(fake)) as notifier:
        for n in range(5):
            notifier.notify(fill(n))

    assert notifier.stats()["sent"] == 5
    assert len(fake.sent) == 5


@pytest.mark.asyncio
async def test_given_a_stopped_notifier_when_notified_then_it_is_counted_as_dropped(fake):
    async with running(make_notifier(fake)) as notifier:
        pass
    notifier.notify(fill(1))

    assert notifier.stats()["dropped"] == 1
    assert fake.sent == []


@pytest.mark.asyncio
async def test_given_a_notice_from_another_thread_then_it_is_delivered(fake):
    async with running(make_notifier(fake)) as notifier:
        thread = threading.Thread(target=notifier.notify, args=(fill(1),))
        thread.start()
        thread.join()
        await eventually(lambda: notifier.stats()["sent"] == 1)


@pytest.mark.asyncio
async def test_given_repeated_alerts_with_one_key_in_the_window_then_they_collapse(fake):
    now = [1000.0]
    notifier = make_notifier(fake, alert_window=60.0, clock=lambda: now[0])
    async with running(notifier):
        for second in range(0, 50, 10):  # t = 0, 10, 20, 30, 40 s: one sent, four collapsed
            now[0] = 1000.0 + second
            notifier.notify(broker_lost())
        notifier.notify(broker_lost(text="Broker: ZERODHA", key="broker:ZERODHA"))
        notifier.notify(fill(1))
        notifier.notify(fill(1))  # order notices never collapse
        now[0] = 1000.0 + 61
        notifier.notify(broker_lost())  # window over: sent, saying how many were collapsed
        await eventually(lambda: notifier.stats()["sent"] == 5)

    texts = [m.text for m in fake.sent]
    assert texts[0] == compose_message(broker_lost())
    assert texts[1] == compose_message(broker_lost("Broker: ZERODHA", "broker:ZERODHA"))
    assert texts[4] == compose_message(broker_lost()) + "\nCollapsed: 4 repeats since the last one"
    assert notifier.stats()["collapsed"] == 4


@pytest.mark.asyncio
async def test_given_failures_of_every_kind_then_the_token_is_in_no_log_record(fake, caplog):
    caplog.set_level(logging.DEBUG)
    async with running(make_notifier(fake, max_retries=1)) as notifier:
        notifier.notify(fill(1))
        fake.fail_next(2, status=429, retry_after=1)  # one retry, then given up
        notifier.notify(fill(2))
        fake.fail_next(1, status=500)
        notifier.notify(fill(3))
        await eventually(lambda: notifier.stats()["sent"] + notifier.stats()["failed"] == 3)
        fake.hang("sendMessage")
        notifier.notify(fill(4))
        await eventually(lambda: notifier.stats()["failed"] == 3)
    await _run_with_a_rejected_token(fake)

    logged = caplog.text + "".join(_record_text(r) for r in caplog.records)
    assert "/bot[REDACTED]/sendMessage" in logged  # httpx did log the URL, redacted
    assert "The token `[REDACTED]` was rejected" in logged  # PTB puts the token in it
    assert TOKEN not in logged
    assert TOKEN.partition(":")[2] not in logged
    assert TOKEN not in repr(notifier.stats()) and TOKEN not in repr(notifier)


async def _run_with_a_rejected_token(fake: FakeTelegram) -> None:
    fake.stop_hanging()
    fake.valid_token = "999:another-token-entirely"
    async with running(make_notifier(fake)) as notifier:
        notifier.notify(fill(5))
        await eventually(lambda: notifier.stats()["failed"] == 1)


def _record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), record.exc_text or ""]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def test_given_settings_with_telegram_enabled_then_from_settings_builds_the_notifier():
    settings = load_settings(
        environ={
            "TELEGRAM_ENABLED": "true",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_CHAT_ID": CHAT_ID,
            "TELEGRAM_API_URL": "http://127.0.0.1:1/",
        }
    )

    notifier = TelegramNotifier.from_settings(settings)

    assert repr(notifier) == "TelegramNotifier(chat_id='4242', api_url='http://127.0.0.1:1')"
    assert notifier.stats()["enabled"] is True
