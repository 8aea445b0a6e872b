"""The daemon as a process, through the real emulator and the real client (SPEC §3-§6)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import SIGNALS
from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.waiting import wait_until

ACCOUNTS = [
    {"account_id": "acc_main", "broker": "MOCK", "enabled": True, "display_name": "Main Paper"},
    {"account_id": "acc_off", "broker": "MOCK", "enabled": False},
    {"account_id": "acc_spy_only", "broker": "MOCK", "enabled": True,
     "allowed_symbols": ["SPY"]},
]


def signal(**fields) -> dict:
    return market_signal({"account_id": "acc_main", "strategy_name": "E2E Strategy"}, **fields)


@pytest.fixture(scope="module")
def running(emulator_host, tmp_path_factory):
    """One daemon for the module: embedded store, mock broker, short timeout."""
    workdir = tmp_path_factory.mktemp("daemon")
    accounts = workdir / "accounts.json"
    accounts.write_text(json.dumps(ACCOUNTS))
    project = f"test-{uuid.uuid4().hex[:10]}"
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
           "ACCOUNTS_FILE": str(accounts), "ORDER_TIMEOUT_SECONDS": "2",
           "MOCK_FILL_DELAY_SECONDS": "0.05", "ORDER_POLL_SECONDS": "0.2"}
    rig = PubSubRig(project)
    daemon = DaemonProcess(workdir, env).start()
    yield daemon, rig
    daemon.stop_quietly()
    rig.close()



def test_given_the_sample_signal_when_sent_then_filled_everywhere(running):
    daemon, rig = running
    body = json.loads((SIGNALS / "equity_market_buy.json").read_text())
    body.update(account_id="acc_main", signal_id="sig_sample_e2e")
    rig.publish(body)
    filled = rig.wait_for(lambda: rig.terminal("sig_sample_e2e"), what="sample filled")
    assert filled["status"] == "FILLED"
    assert filled["filled_quantity"] == 100
    assert filled["avg_fill_price"] == 235.15
    assert filled["commission"] == 1.0
    assert rig.statuses("sig_sample_e2e") == ["SUBMITTED", "FILLED"]
    attributes = rig.confirmation_attributes[rig.confirmations.index(filled)]
    assert attributes == {"signal_id": "sig_sample_e2e", "status": "FILLED",
                          "account_id": "acc_main", "sequence": "2"}

    orders = json.loads(daemon.cli("orders", "--json").stdout)
    record = next(o for o in orders if o["signal_id"] == "sig_sample_e2e")
    assert record["status"] == "FILLED" and record["total_value"] == 23515.0
    assert [e["status"] for e in record["events"]] == ["PENDING", "SUBMITTED", "FILLED"]
    assert record["submitted_at"].endswith("Z") and record["broker"] == "MOCK"
    positions = json.loads(daemon.cli("positions", "--json").stdout)
    assert any(p["symbol"] == "SPY" and p["strategy_name"] == "SPX 1-Day Options"
               and p["quantity"] == 100 and p["side"] == "LONG" for p in positions)
    status = daemon.cli("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["running"] is True and report["orders_filled"] >= 1


def test_given_same_signal_twice_when_processed_then_one_broker_order(running):
    daemon, rig = running
    body = signal()
    rig.publish(body)
    rig.publish(body)
    rig.wait_for(lambda: rig.terminal(body["signal_id"]), what="fill")
    log = daemon.workdir / "logs" / "execution_service.log"
    wait_until(lambda: f"Duplicate signal ignored (already recorded): {body['signal_id']}"
               in log.read_text(), what="the second copy judged a duplicate")
    rig.collect_confirmations()
    assert rig.statuses(body["signal_id"]) == ["SUBMITTED", "FILLED"]
    handle, store = daemon.store()
    try:
        assert store.mock_ledger.count(body["signal_id"]) == 1
        assert store.records.count_documents({"signal_id": body["signal_id"]}) == 1
    finally:
        handle.close()


@pytest.mark.parametrize("body,reason_part", [
    (b"not json at all", "not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'{"symbol": "SPY"}', "signal_id missing"),
    (b'{"signal_id": "has spaces in it"}', "signal_id invalid"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_given_unusable_body_then_dead_lettered_with_reason(running, body, reason_part):
    daemon, rig = running
    rig.publish(body)
    letters = rig.wait_for(lambda: [m for m in rig.dead_letters() if m.data == body],
                           what="dead letter")
    assert reason_part in letters[0].attributes["dead_letter_reason"]
    assert daemon.process.poll() is None


@pytest.mark.parametrize("fields,reason", [
    ({"quantity": 0}, "quantity must be > 0, got 0"),
    ({"side": "HOLD"}, "side must be one of 'BUY' or 'SELL', got 'HOLD'"),
    ({"order_type": "LIMIT"}, "limit_price is required for LIMIT orders"),
    ({"account_id": "acc_nobody"}, "account_id 'acc_nobody' is not a registered account"),
    ({"account_id": "acc_off"}, "account_id 'acc_off' is disabled"),
    ({"account_id": "acc_spy_only", "symbol": "TSLA"},
     "symbol 'TSLA' is not in the allowed symbols of account 'acc_spy_only' (SPY)"),
    ({"$where": "1"}, "field name '$where' is not allowed"),
])
def test_given_invalid_order_then_rejected_with_reason_everywhere(running, fields, reason):
    daemon, rig = running
    body = signal(**fields)
    rig.publish(body)
    rejected = rig.wait_for(lambda: rig.terminal(body["signal_id"]), what="rejection")
    assert rejected["status"] == "REJECTED"
    assert reason in rejected["reason"]
    handle, store = daemon.store()
    try:
        record = store.get_record(body["signal_id"])
        assert record["status"] == "REJECTED" and reason in record["reject_reason"]
        assert store.get_signal(body["signal_id"])["execution_status"] == "REJECTED"
        assert store.mock_ledger.count(body["signal_id"]) == 0
    finally:
        handle.close()
    assert reason in (daemon.workdir / "logs" / "execution_service.log").read_text()


def test_given_limit_that_never_fills_then_cancelled_on_timeout(running):
    daemon, rig = running
    body = signal(order_type="LIMIT", limit_price=90.0, reference_price=100.0)
    rig.publish(body)
    cancelled = rig.wait_for(lambda: rig.terminal(body["signal_id"]), timeout=60,
                             what="timeout cancel")
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["reason"].startswith("timeout: not filled within 2s")
    assert cancelled["filled_quantity"] == 0


def test_given_stop_orders_then_trigger_only_through_the_stop(running):
    """Given a BUY stop above the market, when a later signal moves the market through it,
    then it fills; one the market never reaches is cancelled on timeout; one already through
    the market (it would trigger at once) is rejected naming stop_price."""
    daemon, rig = running
    triggered = signal(order_type="STOP", stop_price=101.0, reference_price=100.0,
                       symbol="DIA")
    resting = signal(order_type="STOP", stop_price=101.0, reference_price=100.0,
                     symbol="QQQ")
    through = signal(order_type="STOP", stop_price=99.0, reference_price=100.0)
    rig.publish(triggered)
    rig.publish(resting)
    rig.publish(through)
    rig.wait_for(lambda: "SUBMITTED" in rig.statuses(triggered["signal_id"]), what="stop rests")
    rig.publish(signal(symbol="DIA", reference_price=102.0))  # the market moves through it
    assert rig.wait_for(lambda: rig.terminal(triggered["signal_id"]),
                        what="stop fill")["status"] == "FILLED"
    assert rig.wait_for(lambda: rig.terminal(through["signal_id"]),
                        what="stop rejected")["reason"].startswith("stop_price 99.00 is at or "
                                                                   "below the market")
    assert rig.wait_for(lambda: rig.terminal(resting["signal_id"]), timeout=60,
                        what="stop cancel")["status"] == "CANCELLED"


def test_given_a_long_position_when_sold_then_reduced_with_pnl(running):
    daemon, rig = running
    strategy = f"Reduce {uuid.uuid4().hex[:6]}"
    buy = signal(quantity=100, reference_price=50.0, strategy_name=strategy, symbol="IWM")
    sell = signal(side="SELL", quantity=40, reference_price=55.0, strategy_name=strategy,
                  symbol="IWM")
    rig.publish(buy)
    rig.wait_for(lambda: rig.terminal(buy["signal_id"]), what="buy")
    rig.publish(sell)
    rig.wait_for(lambda: rig.terminal(sell["signal_id"]), what="sell")
    handle, store = daemon.store()
    try:
        position = store.open_position({"account_id": "acc_main", "strategy_name": strategy,
                                        "symbol": "IWM"})
    finally:
        handle.close()
    assert position["side"] == "LONG" and position["quantity"] == 60
    assert position["avg_entry_price"] == 50.0 and position["realized_pnl"] == 200.0


def test_given_sigterm_with_an_order_working_then_exits_zero_without_waiting_for_its_fill(
        emulator_host, project_id, tmp_path):
    """Given an order whose fill is 10 minutes away, when SIGTERM comes, then the daemon exits
    0 well before it (the test waits 60 s at most) and the order stays open for the next
    start to resume."""
    rig = PubSubRig(project_id)
    daemon = DaemonProcess(tmp_path, {"PUBSUB_EMULATOR_HOST": emulator_host,
                                      "GOOGLE_CLOUD_PROJECT": project_id,
                                      "MOCK_FILL_DELAY_SECONDS": "600"}).start()
    try:
        mid_flight = signal(account_id="acc_abc123")  # the demo account, mid-flight at stop
        rig.publish(mid_flight)
        rig.wait_for(lambda: "SUBMITTED" in rig.statuses(mid_flight["signal_id"]),
                     what="the order placed")
        assert daemon.terminate(timeout=60) == 0
        assert "Execution service stopped" in daemon.read_output()
        handle, store = daemon.store()
        try:
            assert store.get_record(mid_flight["signal_id"])["status"] == "SUBMITTED"
        finally:
            handle.close()
    finally:
        daemon.stop_quietly()
        rig.close()
