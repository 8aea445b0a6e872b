"""`execution-service kite login` against the fake Kite API, reaching a running daemon without a
restart; an expired session halts every Zerodha account once (SPEC §14, issue 18)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid

import pytest

from execution_service.adapters.emulator import free_port
from execution_service.credentials import SecretBox
from execution_service.service.broker_sessions import session_token
from tests.fakes.daemon import DaemonProcess
from tests.fakes.fake_kite import API_KEY, API_SECRET, FakeKite
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.pubsub_tools import PubSubRig
from tests.fakes.waiting import wait_until

BOT_TOKEN = "123456:kite-session-test-token"
CREDENTIALS_KEY = SecretBox.new_key()




@pytest.fixture
def desk(emulator_host, tmp_path):
    (tmp_path / "accounts.json").write_text(json.dumps([
        {"account_id": "acc_kite", "broker": "ZERODHA"},
        {"account_id": "acc_kite2", "broker": "ZERODHA"},
    ]))
    kite = FakeKite(access_token="not-issued-yet").start()
    telegram = FakeTelegram().start()
    project = f"test-{uuid.uuid4().hex[:10]}"
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
           "ACCOUNTS_FILE": str(tmp_path / "accounts.json"), "USE_MOCK_BROKER": "false",
           "KITE_API_URL": kite.url, "KITE_API_KEY": API_KEY, "KITE_API_SECRET": API_SECRET,
           "KITE_ACCESS_TOKEN": "", "ORDER_POLL_SECONDS": "0.1", "RETRY_BACKOFF_SECONDS": "0.1",
           "TELEGRAM_ENABLED": "true", "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
           "TELEGRAM_CHAT_ID": "42", "TELEGRAM_API_URL": telegram.url,
           "CREDENTIALS_KEY": CREDENTIALS_KEY}
    rig = PubSubRig(project)
    daemon = DaemonProcess(tmp_path, env)
    yield daemon, rig, kite, telegram
    daemon.stop_quietly()
    rig.close()
    kite.stop()
    telegram.stop()


def kite_signal(account_id: str = "acc_kite") -> dict:
    return {"signal_id": f"kite{uuid.uuid4().hex[:12]}", "order_type": "MARKET",
            "symbol": "INFY", "side": "BUY", "quantity": 5, "account_id": account_id,
            "strategy_name": "Nifty Momentum", "reference_price": 1500.0}


def placed(kite: FakeKite, signal_id: str) -> list:
    return [p for p in kite.placements if p.form.get("tag") == signal_id]


def test_given_a_running_daemon_when_the_session_expires_and_kite_login_runs_then_one_halt_one_alert_and_the_new_token_is_used_without_restart(desk):  # noqa: E501
    daemon, rig, kite, telegram = desk
    # given: the morning login, before the daemon starts (no KITE_ACCESS_TOKEN anywhere)
    login = daemon.cli("kite", "login", "--request-token", kite.issue_request_token())
    assert login.returncode == 0, login.stderr
    assert "kite.zerodha.com/connect/login?api_key=fake_api_key" in login.stdout
    first_token = kite.sessions_issued[-1]
    assert first_token not in login.stdout + login.stderr
    daemon.start()
    body = kite_signal()
    rig.publish(body)
    wait_until(lambda: placed(kite, body["signal_id"]), what="first order at Kite")

    # when: Kite expires the session and orders keep coming for both Zerodha accounts
    kite.expire_session()
    expired = [kite_signal("acc_kite"), kite_signal("acc_kite2"), kite_signal("acc_kite")]
    for signal in expired:
        rig.publish(signal)
    outcomes = [rig.wait_for(lambda s=s: rig.terminal(s["signal_id"]), timeout=30,
                             what="rejection") for s in expired]
    assert {outcome["status"] for outcome in outcomes} == {"REJECTED"}
    status = json.loads(daemon.cli("status", "--json").stdout)
    halts = wait_until(lambda: json.loads(daemon.cli("status", "--json").stdout)["risk"]
                       ["halted"], what="the session halt in status", poll=0.3)
    assert list(halts) == ["broker:ZERODHA"]
    assert halts["broker:ZERODHA"]["reason"] == "Kite session expired"
    later = kite_signal("acc_kite2")
    rig.publish(later)
    refused = rig.wait_for(lambda: rig.terminal(later["signal_id"]), what="halted rejection")
    assert refused["reason"] == "trading halted: Kite session expired"
    assert placed(kite, later["signal_id"]) == []
    alerts = wait_until(lambda: [m.text for m in telegram.sent
                                 if "Trading halted for ZERODHA accounts" in m.text],
                        what="the halt alert")
    # status names the secret settings (set/unset, issue 22), never a token's value
    secrets = status.pop("secrets", {})
    assert set(secrets.values()) <= {"set", "unset"}
    assert "token" not in json.dumps(status).lower().replace("tokens", "")
    assert first_token not in json.dumps(secrets)

    # then: a new login reaches the running daemon, lifts the halt, and the new token is used
    login = daemon.cli("kite", "login", "--request-token", kite.issue_request_token())
    assert login.returncode == 0, login.stderr
    assert "a daemon lifts the halt as soon as Kite accepts the new session" in login.stdout
    second_token = kite.sessions_issued[-1]
    assert second_token != first_token
    wait_until(lambda: not json.loads(daemon.cli("status", "--json").stdout)["risk"]["halted"],
               what="the halt lifted by the running daemon", poll=0.3)
    after = kite_signal("acc_kite2")
    rig.publish(after)
    wait_until(lambda: placed(kite, after["signal_id"]), what="order with the new token")
    assert daemon.process.poll() is None  # no restart
    assert len([m for m in telegram.sent if "Trading halted" in m.text]) == len(alerts) == 1
    assert not [m for m in telegram.sent if "connection lost" in m.text.lower()]
    log = (daemon.workdir / "logs" / "execution_service.log").read_text()
    for token in (first_token, second_token, API_SECRET):
        assert token not in log and token not in daemon.read_output()


def test_given_kite_login_listen_when_the_redirect_arrives_then_the_token_is_exchanged_and_kept(
        desk):
    daemon, _, kite, _ = desk
    port = free_port()
    request_token = kite.issue_request_token()
    command = subprocess.Popen([sys.executable, "-m", "execution_service", "kite", "login",
                                "--listen", str(port), "--timeout", "30"],
                               cwd=daemon.workdir, env=daemon.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        def redirect() -> bool:
            url = f"http://127.0.0.1:{port}/?action=login&status=success&request_token="
            try:
                with urllib.request.urlopen(url + request_token, timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        wait_until(redirect, what="the redirect listener")
        out, err = command.communicate(timeout=30)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert command.returncode == 0, err
    assert "Waiting for Kite's redirect on http://127.0.0.1:" in out
    handle, store = daemon.store()
    try:
        saved = store.get_broker_session("ZERODHA")
    finally:
        handle.close()
    assert session_token(saved, SecretBox(CREDENTIALS_KEY)) == kite.sessions_issued[-1]
    assert kite.sessions_issued[-1] not in repr(saved) and saved["user_id"] == "AB1234"
    assert saved["by"].startswith("cli:")


def test_given_a_used_request_token_when_kite_login_then_one_line_and_exit_2(desk):
    daemon, _, kite, _ = desk
    token = kite.issue_request_token()
    assert daemon.cli("kite", "login", "--request-token", token).returncode == 0
    again = daemon.cli("kite", "login", "--request-token", token)
    assert again.returncode == 2
    assert again.stderr.startswith("error: Kite refused the request token (TokenException")
    assert len(again.stderr.strip().splitlines()) == 1
    missing = subprocess.run([sys.executable, "-m", "execution_service", "kite", "login",
                              "--request-token", "x"], cwd=daemon.workdir,
                             env={**daemon.env, "KITE_API_SECRET": ""}, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: kite login needs KITE_API_SECRET"


def test_given_no_credentials_key_when_kite_login_then_one_line_naming_it_and_the_request_token_is_not_spent(desk):  # noqa: E501
    """A desk keeps no broker token in clear: without CREDENTIALS_KEY the login is refused
    before the single-use request token goes to Kite, so it still works once the key is set."""
    daemon, _, kite, _ = desk
    token = kite.issue_request_token()
    refused = subprocess.run([sys.executable, "-m", "execution_service", "kite", "login",
                              "--request-token", token], cwd=daemon.workdir,
                             env={**daemon.env, "CREDENTIALS_KEY": ""}, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: kite login needs CREDENTIALS_KEY (the access "
                                      "token is kept in the store only encrypted)")
    assert kite.sessions_issued == []
    bad_key = subprocess.run([sys.executable, "-m", "execution_service", "kite", "login",
                              "--request-token", token], cwd=daemon.workdir,
                             env={**daemon.env, "CREDENTIALS_KEY": "not-a-fernet-key"},
                             capture_output=True, text=True, timeout=60)
    assert bad_key.returncode == 2 and len(bad_key.stderr.strip().splitlines()) == 1
    assert "CREDENTIALS_KEY" in bad_key.stderr and "not-a-fernet-key" not in bad_key.stderr
    assert daemon.cli("kite", "login", "--request-token", token).returncode == 0
    assert len(kite.sessions_issued) == 1
