"""The daemon on a real MongoDB wire-protocol server (`mongodb://`, secantusdb): the sample
signals through the operators' commands, the README's mongosh block pasted into the real
shell, and two replicas sharing one subscription and one store."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter

import pytest

from tests.conftest import SIGNALS
from tests.fakes.daemon import DaemonProcess
from tests.fakes.mongosh import (
    INSTALL_SECONDS,
    MongoshUnavailable,
    find_or_install_mongosh,
    paste,
    readme_mongosh_block,
)
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.waiting import wait_until

BUY, SELL, ZERO = "sig_1732450800_5678", "sig_1732450900_0001", "sig_1732451000_0002"
SAMPLES = {BUY: "equity_market_buy.json", SELL: "equity_limit_sell.json",
           ZERO: "rejected_zero_quantity.json"}


@pytest.fixture(scope="module")
def samples_on_wire(emulator_host, wire_mongo, tmp_path_factory):
    """One daemon on the wire server's `trading` database (the README block's), the three
    sample signals sent with `send-test-signal` and finished."""
    workdir = tmp_path_factory.mktemp("wire-daemon")
    project = f"test-{uuid.uuid4().hex[:10]}"
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
           "MONGODB_URI": wire_mongo.uri, "MONGODB_DATABASE": "trading",
           "MOCK_FILL_DELAY_SECONDS": "0.05", "ORDER_POLL_SECONDS": "0.1"}
    rig = PubSubRig(project)
    daemon = DaemonProcess(workdir, env).start()
    try:
        for signal_id, name in SAMPLES.items():  # in order: the sell reduces the buy
            sent = daemon.cli("send-test-signal", "--file", str(SIGNALS / name))
            assert sent.returncode == 0, sent.stdout + sent.stderr
            rig.wait_for(lambda s=signal_id: rig.terminal(s), what=f"{signal_id} terminal")
        yield daemon, rig, wire_mongo
    finally:
        daemon.stop_quietly()
        rig.close()
        wire_mongo.drop("trading")


def test_given_the_samples_on_mongodb_then_commands_show_fills_position_and_rejection(
        samples_on_wire):
    daemon, rig, _ = samples_on_wire
    assert rig.statuses(BUY) == ["SUBMITTED", "FILLED"]
    assert rig.terminal(SELL)["avg_fill_price"] == 236.0
    assert rig.terminal(ZERO)["reason"] == "quantity must be > 0, got 0"
    orders = {o["signal_id"]: o for o in json.loads(daemon.cli("orders", "--json").stdout)}
    assert orders[BUY]["status"] == "FILLED" and orders[BUY]["total_value"] == 23515.0
    assert orders[BUY]["received_at"].endswith("Z")
    assert orders[ZERO]["status"] == "REJECTED"
    positions = json.loads(daemon.cli("positions", "--json").stdout)
    assert [(p["symbol"], p["side"], p["quantity"], p["realized_pnl"]) for p in positions] == \
        [("SPY", "LONG", 60, 34.0)]  # 100 bought at 235.15, 40 sold at 236
    journey = json.loads(daemon.cli("show", BUY, "--json").stdout)
    assert [e["status"] for e in journey["events"]] == ["PENDING", "SUBMITTED", "FILLED"]
    assert all(c["published"] for c in journey["confirmations"])
    status = daemon.cli("status", "--json")
    report = json.loads(status.stdout)
    assert status.returncode == 0 and report["running"] is True
    assert report["store"]["backend"] == "mongodb"
    assert (report["orders_filled"], report["orders_rejected"]) == (2, 1)


@pytest.mark.timeout(INSTALL_SECONDS + 120)  # the first run installs mongosh with npm
def test_given_a_daemon_run_when_the_readme_mongosh_block_is_pasted_then_it_shows_the_audit(
        samples_on_wire):
    """The block as written in README.md, into the real shell: executions, the rejection
    with its reason, the sample's journey, the open position, the daemon's heartbeat."""
    daemon, _, server = samples_on_wire
    try:
        shell = find_or_install_mongosh()
    except MongoshUnavailable as e:
        pytest.skip(f"mongosh cannot be installed here: {e}")
    block = readme_mongosh_block()
    assert f'"{BUY}"' in block, "the README's journey query names the sample signal"
    output = paste(shell, server.uri, block)
    for failure in ("Error", "Uncaught", "Invalid"):
        assert failure not in output, output
    (switched, executions, rejections, record, moved, signal, open_positions,
     heartbeats) = _answers(output)
    assert switched == "switched to db trading"
    assert executions.index(SELL) < executions.index(BUY)  # newest first
    assert ZERO not in executions and executions.count("status: 'FILLED'") == 2
    assert ZERO in rejections and "reject_reason: 'quantity must be > 0, got 0'" in rejections
    assert BUY not in rejections
    for part in ("event: 'CLAIMED'", "event: 'SUBMITTED'", "exec_id: 'MOCK-",
                 "published_sequence: 2", f"pid: {daemon.process.pid}"):
        assert part in record, (part, record)
    assert "status: 'OPEN'" in moved and "quantity: 60" in moved
    assert "execution_status: 'FILLED'" in signal
    assert "symbol: 'SPY'" in open_positions and "realized_pnl: 34" in open_positions
    assert f"pid: {daemon.process.pid}" in heartbeats and "consuming: true" in heartbeats


def _answers(output: str) -> list[str]:
    """What each statement printed, in order (comments and `var` print nothing)."""
    chunks = [re.sub(r"^(\.\.\. )+", "", chunk.strip()).strip()
              for chunk in re.split(r"\S+ \[[^\]]*\] \w+> ", output)]
    return [chunk for chunk in chunks if chunk]


def test_given_two_replicas_on_one_subscription_and_store_then_both_place_and_each_once(
        emulator_host, wire_mongo, tmp_path):
    """Each signal published twice; the records' owners show both daemons placed orders."""
    database = wire_mongo.fresh_database()
    project = f"test-{uuid.uuid4().hex[:10]}"
    (tmp_path / "accounts.json").write_text(json.dumps([{"account_id": "acc_rep",
                                                         "broker": "MOCK"}]))
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
           "MONGODB_URI": wire_mongo.uri, "MONGODB_DATABASE": database,
           "ACCOUNTS_FILE": str(tmp_path / "accounts.json"), "MOCK_FILL_DELAY_SECONDS": "0.3",
           "ORDER_POLL_SECONDS": "0.1", "PUBSUB_MAX_IN_FLIGHT": "5", "LOG_LEVEL": "WARNING",
           "HEARTBEAT_SECONDS": "0.5"}
    rig = PubSubRig(project)
    replicas = [DaemonProcess(tmp_path / f"replica{n}", env).start() for n in (1, 2)]
    ids = [f"sig_rep_{n:03d}" for n in range(40)]
    try:
        for signal_id in ids:
            body = market_signal({"account_id": "acc_rep", "strategy_name": "Replicas"},
                                 signal_id=signal_id)
            rig.publish(body)
            rig.publish(body)
        rig.wait_for(lambda: all(rig.terminal(i) for i in ids), timeout=90,
                     what="every signal filled")
        handle, store = replicas[0].store()
        try:
            # every second copy reached a replica and was judged a duplicate, never placed
            wait_until(lambda: _duplicates_seen(store) >= len(ids), 90,
                       "every second copy judged a duplicate")
            rig.collect_confirmations()
            owners = Counter(store.get_record(i)["owner"]["pid"] for i in ids)
            assert store.mock_ledger.count() == len(ids)
            assert all(store.mock_ledger.count(i) == 1 for i in ids)
        finally:
            handle.close()
    finally:
        for replica in replicas:
            replica.stop_quietly()
        rig.close()
        wire_mongo.drop(database)
    assert set(owners) == {r.process.pid for r in replicas}, owners
    for signal_id in ids:
        assert rig.statuses(signal_id).count("SUBMITTED") == 1, rig.statuses(signal_id)


def _duplicates_seen(store) -> int:
    """Duplicates counted by every replica, as their heartbeats last reported them."""
    return sum(status["counters"]["duplicates"] for status in store.read_statuses())
