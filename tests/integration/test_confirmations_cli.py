"""`execution-service confirmations [--json] [--limit N] [--follow]` against a running daemon
(issue 18): the sample signal's two confirmations from the store, and --follow through a
temporary subscription that is removed on exit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid

import pytest
from google.cloud import pubsub_v1

from tests.conftest import SIGNALS
from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.waiting import wait_until


@pytest.fixture(scope="module")
def desk(emulator_host, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("confirmations")
    project = f"test-{uuid.uuid4().hex[:10]}"
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project}
    rig = PubSubRig(project)
    daemon = DaemonProcess(workdir, env).start()
    yield daemon, rig, project
    daemon.stop_quietly()
    rig.close()


def test_given_the_sample_signal_when_confirmations_then_its_two_confirmations_newest_first(
        desk):
    daemon, rig, _ = desk
    sent = daemon.cli("send-test-signal", "--file", str(SIGNALS / "equity_market_buy.json"))
    assert sent.returncode == 0, sent.stderr
    rig.wait_for(lambda: rig.terminal("sig_1732450800_5678"), what="the sample's fill")

    shown = daemon.cli("confirmations")
    lines = [line for line in shown.stdout.splitlines()  # not its exits (…:SL, …:TP)
             if line.split()[1:2] == ["sig_1732450800_5678"]]
    assert [line.split()[2:4] for line in lines] == [["#2", "FILLED"], ["#1", "SUBMITTED"]]
    assert "100/100 SPY @ 235.15" in lines[0]

    rows = [row for row in json.loads(daemon.cli("confirmations", "--json").stdout)
            if row["signal_id"] == "sig_1732450800_5678"]
    assert [(r["signal_id"], r["sequence"], r["status"]) for r in rows] == [
        ("sig_1732450800_5678", 2, "FILLED"), ("sig_1732450800_5678", 1, "SUBMITTED")]
    assert all(row["at"].endswith("Z") for row in rows)
    assert len(json.loads(daemon.cli("confirmations", "--json", "--limit", "1").stdout)) == 1
    assert rows[0]["filled_at"].endswith("Z")


def test_given_follow_when_an_order_fills_then_its_confirmations_print_and_the_subscription_is_removed_on_exit(desk):  # noqa: E501
    daemon, rig, project = desk
    printed = daemon.workdir / "follow.out"
    with open(printed, "wb") as out:
        follower = subprocess.Popen([sys.executable, "-m", "execution_service",
                                     "confirmations", "--follow", "--json"],
                                    cwd=daemon.workdir, env=daemon.env, stdout=out,
                                    stderr=subprocess.PIPE, text=True)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        def follow_subscriptions() -> list[str]:
            return [s.name for s in subscriber.list_subscriptions(
                project=f"projects/{project}") if "confirmations-follow-" in s.name]

        wait_until(follow_subscriptions, what="the temporary subscription")
        body = market_signal({"account_id": "acc_abc123", "strategy_name": "Follow"})
        rig.publish(body)
        rig.wait_for(lambda: rig.terminal(body["signal_id"]), what="the fill")

        def followed() -> list[dict]:
            return [json.loads(line) for line in printed.read_text().splitlines()
                    if line.endswith("}")]

        wait_until(lambda: any(r["status"] == "FILLED" and r["signal_id"] == body["signal_id"]
                               for r in followed()), what="the FILLED line")
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=30)
        rows = followed()
        assert [r["status"] for r in rows if r["signal_id"] == body["signal_id"]] == [
            "SUBMITTED", "FILLED"]
        assert "following projects/" in err
        assert follower.returncode == 0
        assert follow_subscriptions() == []
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        subscriber.close()
