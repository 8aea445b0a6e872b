"""Telegram commands (SPEC §13) through the real python-telegram-bot Application inside a real
daemon, against the fake Bot API serving getUpdates (issue 18)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.fakes.daemon import DaemonProcess
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.waiting import wait_until

TOKEN = "123456:commands-test-token-not-secret"
ADMIN = 4242
STRANGER = 666




def start_desk(emulator_host, workdir, telegram: FakeTelegram, wait: bool = True):
    project = f"test-{uuid.uuid4().hex[:10]}"
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
           "TELEGRAM_ENABLED": "true", "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "42",
           "TELEGRAM_API_URL": telegram.url, "TELEGRAM_COMMANDS": "true",
           "TELEGRAM_ADMIN_CHAT_IDS": f"{ADMIN}, 777"}
    rig = PubSubRig(project)
    daemon = DaemonProcess(workdir, env).start()
    return daemon, rig


@pytest.fixture
def telegram():
    with FakeTelegram() as fake:
        yield fake


def ask(telegram: FakeTelegram, text: str, chat: int = ADMIN, username: str = "desk") -> str:
    """Push a command; the bot's next answer to that chat."""
    before = len(telegram.sent_to(chat))
    telegram.push_command(chat, text, username)
    return wait_until(lambda: telegram.sent_to(chat)[before:], what=f"answer to {text}")[0]


def halts(daemon: DaemonProcess) -> list[dict]:
    handle, store = daemon.store()
    try:
        return store.list_halts()
    finally:
        handle.close()


def test_given_admin_and_stranger_chats_when_they_send_commands_then_admins_are_answered_and_obeyed_and_strangers_change_nothing(emulator_host, tmp_path, telegram):  # noqa: E501
    daemon, rig = start_desk(emulator_host, tmp_path, telegram)
    try:
        body = market_signal({"account_id": "acc_abc123", "strategy_name": "Chat"})
        rig.publish(body)
        rig.wait_for(lambda: rig.terminal(body["signal_id"]), what="the first fill")

        assert ask(telegram, "/status").startswith("Running:   yes")
        assert body["signal_id"] in ask(telegram, "/orders 5")
        assert "SPY" in ask(telegram, "/positions")
        shown = ask(telegram, f"/show {body['signal_id']}")
        assert "FILLED" in shown and "Events:" in shown
        assert ask(telegram, "/show nosuchsignal") == "no signal 'nosuchsignal' in the audit store"
        assert ask(telegram, "/orders lots").startswith("usage: /orders [N]")

        # a stranger's halt: no effect, no answer, logged with the chat id
        telegram.push_command(STRANGER, "/halt stop everything", "mallory")
        wait_until(lambda: f"chat {STRANGER}" in daemon.read_output(), what="the refusal log")
        assert halts(daemon) == []

        answer = ask(telegram, "/halt fat finger on desk 3")
        assert answer == "trading halted for all accounts: fat finger on desk 3"
        [halt] = halts(daemon)
        assert halt["by"] == f"telegram:{ADMIN}:desk" and halt["reason"] == "fat finger on desk 3"
        wait_until(lambda: [t for t in telegram.sent_to(42) if "Trading halted for all" in t],
                   what="the daemon's halt alert (it reads halts at most 0.5 s old)")
        refused = market_signal({"account_id": "acc_abc123", "strategy_name": "Chat"})
        rig.publish(refused)
        outcome = rig.wait_for(lambda: rig.terminal(refused["signal_id"]), what="the halt")
        assert outcome["reason"] == "trading halted: fat finger on desk 3"

        assert ask(telegram, "/halt acc_abc123 margin call") == \
            "trading halted for account acc_abc123: margin call"
        telegram.push_command(STRANGER, "/resume", "mallory")
        assert ask(telegram, "/resume") == \
            "trading resumed for all accounts (still halted: account acc_abc123)"
        assert ask(telegram, "/resume acc_abc123") == "trading resumed for account acc_abc123"
        assert halts(daemon) == []
        wait_until(lambda: json.loads(daemon.cli("status", "--json").stdout)["risk"]["halted"]
                   == {}, what="the daemon's heartbeat to show no halt", poll=0.3)
        resting = market_signal({"account_id": "acc_abc123", "strategy_name": "Chat"},
                                order_type="LIMIT", limit_price=95.0)
        rig.publish(resting)
        rig.wait_for(lambda: "SUBMITTED" in rig.statuses(resting["signal_id"]),
                     what="a resting order")
        assert ask(telegram, f"/cancel {resting['signal_id']}").startswith(
            f"cancel of {resting['signal_id']} requested (request telegram-")
        cancelled = rig.wait_for(lambda: rig.terminal(resting["signal_id"]), what="the cancel")
        assert cancelled["status"] == "CANCELLED"
        assert f"telegram:{ADMIN}:desk" in cancelled["reason"]

        assert telegram.sent_to(STRANGER) == []
        assert all(len(text) <= 4096 for text in telegram.sent_to(ADMIN))
        assert TOKEN not in daemon.read_output()
        assert TOKEN.split(":")[1] not in (tmp_path / "logs" / "execution_service.log").read_text()
    finally:
        daemon.stop_quietly()
        rig.close()


def test_given_a_hanging_bot_api_when_orders_arrive_then_they_fill_and_the_daemon_stops_cleanly(
        emulator_host, tmp_path, telegram):
    for method in ("getMe", "getUpdates", "deleteWebhook", "sendMessage"):
        telegram.hang(method)
    daemon, rig = start_desk(emulator_host, tmp_path, telegram)
    try:
        bodies = [market_signal({"account_id": "acc_abc123", "strategy_name": "Slow"})
                  for _ in range(3)]
        for body in bodies:
            rig.publish(body)
        for body in bodies:
            filled = rig.wait_for(lambda b=body: rig.terminal(b["signal_id"]), timeout=60,
                                  what="a fill while the Bot API hangs")
            assert filled["status"] == "FILLED"
        assert daemon.terminate(timeout=30) == 0
        status = json.loads(daemon.cli("status", "--json").stdout)
        assert status["running"] is False and status["reason"] == "stopped cleanly"
        assert status["uptime_seconds"] is None and "brokers" not in status["service"]
    finally:
        daemon.stop_quietly()
        rig.close()
