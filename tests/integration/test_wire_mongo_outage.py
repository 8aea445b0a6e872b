"""The store server killed (SIGKILL) and started again under a running daemon: every order,
claimed before the kill or sent during the outage, ends terminal and placed once, without
restarting the daemon."""

from __future__ import annotations

import json

from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.waiting import wait_until
from tests.fakes.wire_mongo import WireMongo


def test_given_the_store_server_killed_and_restarted_then_every_order_ends_terminal(
        emulator_host, project_id, tmp_path):
    server = WireMongo(tmp_path / "server").start()
    (tmp_path / "accounts.json").write_text(json.dumps([{"account_id": "acc_out",
                                                         "broker": "MOCK"}]))
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project_id,
           "MONGODB_URI": server.uri, "MONGODB_DATABASE": "outage",
           "ACCOUNTS_FILE": str(tmp_path / "accounts.json"), "MOCK_FILL_DELAY_SECONDS": "1",
           "MOCK_FILL_CHUNKS": "2", "ORDER_POLL_SECONDS": "0.1", "ORDER_TIMEOUT_SECONDS": "120",
           "RETRY_BACKOFF_SECONDS": "0.2", "MONGODB_SERVER_SELECTION_TIMEOUT_MS": "1000"}
    rig = PubSubRig(project_id)
    daemon = DaemonProcess(tmp_path / "daemon", env).start()
    before = [f"sig_before_{n}" for n in range(10)]
    during = [f"sig_during_{n}" for n in range(10)]
    try:
        for signal_id in before:
            rig.publish(market_signal({"account_id": "acc_out", "strategy_name": "Outage"},
                                      signal_id=signal_id))
        wait_until(lambda: _claimed(daemon) >= len(before), 60, "every order claimed")
        server.kill()  # orders working, their fills not yet recorded
        for signal_id in during:
            rig.publish(market_signal({"account_id": "acc_out", "strategy_name": "Outage"},
                                      signal_id=signal_id))
        log = daemon.workdir / "logs" / "execution_service.log"
        wait_until(lambda: "store unavailable" in log.read_text().lower(), 60,
               "the daemon to meet the outage")
        server.start()  # same port, same data
        ids = before + during
        rig.wait_for(lambda: all(rig.terminal(i) for i in ids), timeout=90,
                     what="every order terminal after the store came back")
        assert daemon.process.poll() is None  # never restarted
        handle, store = daemon.store()
        try:
            for signal_id in ids:
                assert store.get_record(signal_id)["status"] == "FILLED"
                assert store.mock_ledger.count(signal_id) == 1
        finally:
            handle.close()
        for signal_id in ids:
            assert rig.statuses(signal_id).count("SUBMITTED") == 1
    finally:
        daemon.stop_quietly()
        rig.close()
        server.stop()


def _claimed(daemon: DaemonProcess) -> int:
    handle, store = daemon.store()
    try:
        return sum(store.counts_by_status().values())
    finally:
        handle.close()


