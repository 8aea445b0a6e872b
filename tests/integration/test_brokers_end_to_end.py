"""The daemon with live-broker accounts: IBKR with no gateway listening, and Zerodha against
a Kite API on loopback, through the real emulator (issues 4 and 5)."""

from __future__ import annotations

import json
import uuid

import pytest

from execution_service.adapters.emulator import free_port
from tests.fakes.daemon import DaemonProcess
from tests.fakes.fake_kite import ACCESS_TOKEN, API_KEY, FakeKite
from tests.fakes.pubsub_tools import PubSubRig
from tests.fakes.waiting import wait_until


@pytest.fixture(scope="module")
def live(emulator_host, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("live")
    (workdir / "accounts.json").write_text(json.dumps([
        {"account_id": "acc_ib", "broker": "IBKR", "broker_account": "DU1234567"},
        {"account_id": "acc_kite", "broker": "ZERODHA"},
    ]))
    kite = FakeKite().start()
    project = f"test-{uuid.uuid4().hex[:10]}"
    closed_port = free_port()  # bound, released: nothing listens there
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
           "ACCOUNTS_FILE": str(workdir / "accounts.json"), "USE_MOCK_BROKER": "false",
           "IBKR_PORT": str(closed_port), "IBKR_CONNECT_TIMEOUT_SECONDS": "1",
           "RETRY_BACKOFF_SECONDS": "0.2", "KITE_API_URL": kite.url, "KITE_API_KEY": API_KEY,
           "KITE_ACCESS_TOKEN": ACCESS_TOKEN, "ORDER_TIMEOUT_SECONDS": "4",
           "ORDER_POLL_SECONDS": "0.1"}
    rig = PubSubRig(project)
    daemon = DaemonProcess(workdir, env).start()
    yield daemon, rig, kite, closed_port
    daemon.stop_quietly()
    rig.close()
    kite.stop()


def kite_signal(**fields) -> dict:
    base = {"signal_id": f"kite{uuid.uuid4().hex[:12]}", "order_type": "MARKET",
            "symbol": "INFY", "side": "BUY", "quantity": 5, "account_id": "acc_kite",
            "strategy_name": "Nifty Momentum", "reference_price": 1500.0}
    base.update(fields)
    return base


def placed_order_id(kite: FakeKite, signal_id: str, timeout: float = 60) -> str:
    return wait_until(lambda: next((p.order_id for p in kite.placements
                                    if p.form.get("tag") == signal_id and p.order_id), None),
                      timeout, f"Kite to receive {signal_id}")


def terminal(rig: PubSubRig, signal_id: str, timeout: float = 20) -> dict:
    return rig.wait_for(lambda: rig.terminal(signal_id), timeout=timeout,
                        what=f"outcome of {signal_id}")


def test_given_ibkr_account_and_no_gateway_then_rejected_naming_the_connection(live):
    daemon, rig, _, port = live
    body = {"signal_id": f"sig_ib_{uuid.uuid4().hex[:8]}", "order_type": "MARKET",
            "symbol": "SPY", "side": "BUY", "quantity": 1, "account_id": "acc_ib",
            "strategy_name": "IB", "reference_price": 500.0}
    rig.publish(body)
    rejected = terminal(rig, body["signal_id"], timeout=60)  # seconds, not minutes
    assert rejected["status"] == "REJECTED"
    assert rejected["reason"].startswith("broker connection failed after 3 attempts: "
                                         f"IBKR 127.0.0.1:{port} unreachable")
    assert daemon.process.poll() is None


def test_given_zerodha_market_order_then_exact_parameters_and_filled(live):
    _, rig, kite, _ = live
    body = kite_signal()
    # filled as it arrives: a fill the test made later could come after the 4 s timeout
    kite.on_arrival(body["signal_id"], lambda order_id: kite.fill(order_id, 5, 1501.5))
    rig.publish(body)
    order_id = placed_order_id(kite, body["signal_id"])
    form = next(p.form for p in kite.placements if p.order_id == order_id)
    assert {k: form[k] for k in ("tradingsymbol", "exchange", "transaction_type", "quantity",
                                 "product", "order_type", "validity", "tag")} == {
        "tradingsymbol": "INFY", "exchange": "NSE", "transaction_type": "BUY",
        "quantity": "5", "product": "CNC", "order_type": "MARKET", "validity": "DAY",
        "tag": body["signal_id"]}
    assert len(form["tag"]) <= 20
    filled = terminal(rig, body["signal_id"])
    assert filled["status"] == "FILLED" and filled["avg_fill_price"] == 1501.5


def test_given_zerodha_rejection_then_rejected_with_kites_message(live):
    _, rig, kite, _ = live
    body = kite_signal(order_type="LIMIT", limit_price=1490.0)
    kite.on_arrival(body["signal_id"], lambda order_id: kite.reject(order_id,
                                                                    "Insufficient funds"))
    rig.publish(body)
    rejected = terminal(rig, body["signal_id"])
    assert rejected["status"] == "REJECTED" and "Insufficient funds" in rejected["reason"]


def test_given_zerodha_partial_fill_then_timeout_cancel_keeps_the_part(live):
    _, rig, kite, _ = live
    body = kite_signal(order_type="LIMIT", limit_price=1495.0, reference_price=1500.0)
    kite.on_arrival(body["signal_id"], lambda order_id: kite.fill(order_id, 2, 1495.0))
    rig.publish(body)
    cancelled = terminal(rig, body["signal_id"], timeout=30)
    assert cancelled["status"] == "CANCELLED" and cancelled["filled_quantity"] == 2
    assert cancelled["reason"].startswith("timeout")
    assert "PARTIALLY_FILLED" in rig.statuses(body["signal_id"])


def test_given_gtc_for_zerodha_then_rejected_and_nothing_sent(live):
    _, rig, kite, _ = live
    body = kite_signal(time_in_force="GTC")
    rejected = (rig.publish(body), terminal(rig, body["signal_id"]))[1]
    assert rejected["status"] == "REJECTED" and "time_in_force" in rejected["reason"]
    assert not [p for p in kite.placements if p.form.get("tag") == body["signal_id"]]


def test_given_same_zerodha_signal_twice_then_placed_once(live):
    daemon, rig, kite, _ = live
    body = kite_signal()
    kite.on_arrival(body["signal_id"], lambda order_id: kite.fill(order_id, 5))
    rig.publish(body)
    rig.publish(body)
    terminal(rig, body["signal_id"])
    wait_until(lambda: f"Duplicate signal ignored (already recorded): {body['signal_id']}"
               in daemon.read_output(), what="the second copy judged a duplicate")
    assert len([p for p in kite.placements if p.form.get("tag") == body["signal_id"]]) == 1
