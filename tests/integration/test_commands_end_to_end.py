"""Cancel and modify (SPEC §11) through the real emulator, a real daemon process (mock paper
broker, embedded store) and the operators' CLI."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig, market_signal

ACCOUNTS = [{"account_id": "acc_cmd", "broker": "MOCK"}]


def resting(**fields) -> dict:
    """A BUY 10 SPY LIMIT 95 with the market at 100: it rests at the mock broker."""
    return market_signal({"account_id": "acc_cmd", "strategy_name": "Commands"},
                         order_type="LIMIT", limit_price=95.0, **fields)


def request(action: str, signal_id: str, **fields) -> dict:
    return {"action": action, "request_id": f"req_{uuid.uuid4().hex[:10]}",
            "signal_id": signal_id, **fields}


@pytest.fixture(scope="module")
def desk(emulator_host, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("commands")
    (workdir / "accounts.json").write_text(json.dumps(ACCOUNTS))
    project = f"test-{uuid.uuid4().hex[:10]}"
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
           "ACCOUNTS_FILE": str(workdir / "accounts.json"), "ORDER_TIMEOUT_SECONDS": "120",
           "MOCK_FILL_DELAY_SECONDS": "0.05", "ORDER_POLL_SECONDS": "0.1"}
    rig = PubSubRig(project)
    daemon = DaemonProcess(workdir, env).start()
    yield daemon, rig
    daemon.stop_quietly()
    rig.close()


def of(rig: PubSubRig, signal_id: str) -> list[tuple[dict, dict]]:
    pairs = [(c, a) for c, a in zip(rig.confirmations, rig.confirmation_attributes, strict=True)
             if c["signal_id"] == signal_id]
    return sorted(pairs, key=lambda pair: pair[0]["sequence"])


def events(rig: PubSubRig, signal_id: str) -> list[str]:
    return [c["event"] for c, _ in of(rig, signal_id)]


def wait_event(rig: PubSubRig, signal_id: str, event: str) -> dict:
    return rig.wait_for(lambda: next((c for c, _ in of(rig, signal_id) if c["event"] == event),
                                     None), what=f"{event} of {signal_id}")


def placed_resting(rig: PubSubRig) -> str:
    order = resting()
    rig.publish(order)
    wait_event(rig, order["signal_id"], "SUBMITTED")
    return order["signal_id"]


def test_given_resting_limit_when_upstream_cancel_then_cancelled_naming_the_request(desk):
    daemon, rig = desk
    signal_id = placed_resting(rig)
    cancel = request("CANCEL", signal_id, reason="signal withdrawn")
    rig.publish(cancel)
    cancelled = wait_event(rig, signal_id, "CANCELLED")
    assert cancelled["reason"] == \
        f"cancelled by upstream request {cancel['request_id']}: signal withdrawn"
    assert events(rig, signal_id) == ["SUBMITTED", "CANCEL_REQUESTED", "CANCELLED"]
    for payload, attributes in of(rig, signal_id)[1:]:
        assert payload["request_id"] == attributes["request_id"] == cancel["request_id"]
    assert daemon.process.poll() is None


def test_given_resting_limit_when_cli_cancel_then_one_line_and_cancelled(desk):
    daemon, rig = desk
    signal_id = placed_resting(rig)
    result = daemon.cli("cancel", signal_id, "--reason", "desk call")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 and signal_id in result.stdout
    cancelled = wait_event(rig, signal_id, "CANCELLED")
    assert cancelled["reason"].startswith("cancelled by operator request cli-")
    again = daemon.cli("cancel", signal_id)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: cannot cancel {signal_id}: already terminal " \
                                   f"(CANCELLED)"


def test_given_resting_limit_when_modified_marketable_then_fills_at_new_limit(desk):
    daemon, rig = desk
    signal_id = placed_resting(rig)
    rig.publish(request("MODIFY", signal_id, limit_price=101.0, quantity=8))
    filled = wait_event(rig, signal_id, "FILL")
    assert filled["status"] == "FILLED" and filled["filled_quantity"] == 8
    assert filled["avg_fill_price"] == 101.0
    modified = next(c for c, _ in of(rig, signal_id) if c["event"] == "MODIFIED")
    assert modified["limit_price"] == 101.0 and modified["quantity"] == 8
    by_cli = placed_resting(rig)
    result = daemon.cli("modify", by_cli, "--limit-price", "100.5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"{by_cli} modified: limit_price 100.5")
    assert wait_event(rig, by_cli, "FILL")["avg_fill_price"] == 100.5


def test_given_filled_order_then_cancel_and_modify_refused_with_reasons(desk):
    daemon, rig = desk
    order = market_signal({"account_id": "acc_cmd", "strategy_name": "Commands"})
    rig.publish(order)
    signal_id = order["signal_id"]
    wait_event(rig, signal_id, "FILL")
    rig.publish(request("CANCEL", signal_id))
    rig.publish(request("MODIFY", signal_id, quantity=20))
    refused = {c["event"]: c["reason"] for c in (
        wait_event(rig, signal_id, "CANCEL_REJECTED"),
        wait_event(rig, signal_id, "MODIFY_REJECTED"))}
    assert refused == {"CANCEL_REJECTED": "already filled", "MODIFY_REJECTED": "already filled"}
    result = daemon.cli("modify", signal_id, "--quantity", "5")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: cannot modify {signal_id}: already filled"


def test_given_cancel_published_before_its_order_then_order_never_reaches_the_broker(desk):
    daemon, rig = desk
    order = resting()
    signal_id = order["signal_id"]
    cancel = request("CANCEL", signal_id)
    rig.publish(cancel)
    wait_event(rig, signal_id, "CANCEL_REQUESTED")
    rig.publish(order)
    rejected = wait_event(rig, signal_id, "REJECTED")
    assert rejected["reason"] == \
        f"cancelled by upstream request {cancel['request_id']} before placement"
    handle, store = daemon.store()
    try:
        assert store.db["mock_broker_orders"].count_documents({"signal_id": signal_id}) == 0
        assert store.get_record(signal_id)["symbol"] == "SPY"
    finally:
        handle.close()


def test_given_repeated_request_ids_then_nothing_changes_and_daemon_stays_up(desk):
    daemon, rig = desk
    signal_id = placed_resting(rig)
    modify = request("MODIFY", signal_id, limit_price=96.0)
    rig.publish(modify)
    wait_event(rig, signal_id, "MODIFIED")
    rig.publish(modify)
    rig.publish({**modify, "limit_price": 97.0})  # same request_id, other values: ignored
    duplicate = f"Duplicate MODIFY request {modify['request_id']} ignored"
    rig.wait_for(lambda: daemon.read_output().count(duplicate) >= 2, what="both duplicates")
    rig.publish(request("CANCEL", signal_id))
    wait_event(rig, signal_id, "CANCELLED")
    assert events(rig, signal_id).count("MODIFIED") == 1
    handle, store = daemon.store()
    try:
        record = store.get_record(signal_id)
        assert record["limit_price"] == 96.0
        assert [e["event"] for e in record["events"]
                if e.get("request_id") == modify["request_id"]] == ["MODIFIED"]
    finally:
        handle.close()
    rig.publish(b"{\"action\": \"CANCEL\", \"signal_id\": \"x\"}")
    assert rig.wait_for(lambda: rig.dead_letters(), what="dead letter")
    assert daemon.process.poll() is None
    assert daemon.cli("status").returncode == 0
