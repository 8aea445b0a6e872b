"""A daemon with risk limits, Telegram on a loopback Bot API and metrics: halt, limits, the
collar, notifications and /metrics, all through the real emulator (issues 3, 8, 9)."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from execution_service.adapters.emulator import free_port
from tests.fakes.daemon import DaemonProcess, daemon_env
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.waiting import wait_until

TOKEN = "123456:TEST-token-value-not-secret"
CHAT = "4242"
ACCOUNTS = [
    {"account_id": "acc_risk", "broker": "MOCK", "display_name": "Risk Desk",
     "max_order_notional": 10000, "max_orders_per_minute": 3},
    {"account_id": "acc_halt", "broker": "MOCK"},
    {"account_id": "acc_free", "broker": "MOCK"},
]


def signal(**fields) -> dict:
    return market_signal({"account_id": "acc_free", "strategy_name": "Ops"}, **fields)


@pytest.fixture(scope="module")
def ops(emulator_host, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ops")
    port = free_port()
    telegram = FakeTelegram().start()
    env = daemon_env(emulator_host, workdir, ACCOUNTS, ORDER_TIMEOUT_SECONDS="1.5",
                     MOCK_FILL_DELAY_SECONDS="0.05", ORDER_POLL_SECONDS="0.1",
                     METRICS_PORT=str(port), METRICS_HOST="127.0.0.1", TELEGRAM_ENABLED="true",
                     TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID=CHAT,
                     TELEGRAM_API_URL=telegram.url)
    rig = PubSubRig(env["GOOGLE_CLOUD_PROJECT"])
    daemon = DaemonProcess(workdir, env).start()
    yield daemon, rig, telegram, port
    daemon.stop_quietly()
    rig.close()
    telegram.stop()



def daemon_log(daemon: DaemonProcess) -> str:
    return (daemon.workdir / "logs" / "execution_service.log").read_text()


def outcome(rig: PubSubRig, body: dict) -> dict:
    rig.publish(body)
    return rig.wait_for(lambda: rig.terminal(body["signal_id"]),
                        what=f"outcome of {body['signal_id']}")


def test_given_halt_then_rejected_without_broker_and_resumed_fills(ops):
    daemon, rig, telegram, _ = ops
    assert daemon.cli("halt", "--reason", "desk review", "--account", "acc_halt").returncode == 0
    wait_until(lambda: "Trading halted for account acc_halt: desk review" in daemon_log(daemon),
               what="the daemon to see the halt")
    halted = signal(account_id="acc_halt")
    rejected = outcome(rig, halted)
    assert rejected["status"] == "REJECTED"
    assert rejected["reason"].startswith("trading halted: desk review")
    handle, store = daemon.store()
    try:
        assert store.mock_ledger.count(halted["signal_id"]) == 0
    finally:
        handle.close()
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert [h["account_id"] for h in status["halts"]] == ["acc_halt"]
    assert daemon.cli("resume", "--account", "acc_halt").returncode == 0
    wait_until(lambda: "Trading resumed for account acc_halt" in daemon_log(daemon),
               what="the daemon to see the resume")
    assert outcome(rig, signal(account_id="acc_halt"))["status"] == "FILLED"


def test_given_limits_then_breaches_name_the_control_and_numbers(ops):
    daemon, rig, _, _ = ops
    too_big = outcome(rig, signal(account_id="acc_risk", quantity=100, reference_price=235.15))
    assert too_big["status"] == "REJECTED"
    assert too_big["reason"] == "order notional 23515.00 exceeds max_order_notional 10000.00"
    results = [outcome(rig, signal(account_id="acc_risk", quantity=1)) for _ in range(4)]
    assert [r["status"] for r in results] == ["FILLED", "FILLED", "FILLED", "REJECTED"]
    assert results[3]["reason"] == ("orders in the last minute 3 reached "
                                    "max_orders_per_minute 3")
    collar = outcome(rig, signal(order_type="LIMIT", limit_price=130.0, reference_price=100.0))
    assert collar["status"] == "REJECTED"
    assert "30.0% above reference_price 100.00 for a BUY" in collar["reason"]


def test_given_telegram_on_then_texts_reach_the_chat_and_the_token_stays_out_of_logs(ops):
    daemon, rig, telegram, _ = ops
    filled = signal(signal_id=f"sig_tg_{uuid.uuid4().hex[:6]}", quantity=100,
                    reference_price=235.15)
    outcome(rig, filled)
    never = signal(order_type="LIMIT", limit_price=95.0, reference_price=100.0)
    assert outcome(rig, never)["status"] == "CANCELLED"
    wait_until(lambda: any(filled["signal_id"] in m.text for m in telegram.sent)
               and any(never["signal_id"] in m.text for m in telegram.sent), 60,
               "both texts in the chat")
    texts = [m.text for m in telegram.sent]
    fill_text = next(t for t in texts if filled["signal_id"] in t)
    assert fill_text.startswith("✅ Order Filled\n\nSignal: " + filled["signal_id"])
    assert "Order: BUY 100 SPY @ $235.15\nTotal: $23,515.00\nCommission: $1.00" in fill_text
    assert any(never["signal_id"] in t for t in texts)
    assert {m.chat_id for m in telegram.sent} == {CHAT}
    logs = "".join(p.read_text() for p in (daemon.workdir / "logs").glob("*.log"))
    assert TOKEN not in logs and TOKEN.split(":")[1] not in logs
    assert TOKEN not in daemon.cli("status", "--json").stdout


def test_given_metrics_port_then_metrics_and_health_answer(ops):
    daemon, rig, _, port = ops
    body = signal()
    outcome(rig, body)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'execution_orders_total{status="FILLED"}' in text
    assert "execution_signal_to_terminal_seconds_bucket" in text
    assert 'execution_broker_call_seconds_count{broker="MOCK",call="place_order"}' in text
    shown = json.loads(daemon.cli("show", body["signal_id"], "--json").stdout)
    assert [e["status"] for e in shown["events"]][:3] == ["PENDING", "SUBMITTED", "FILLED"]
