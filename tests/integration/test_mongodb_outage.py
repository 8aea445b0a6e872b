"""A MongoDB server that crashes and comes back (secantusdb, a MongoDB wire-protocol server
run as its own process): signals sent into the outage are held, never dead-lettered, and all
fill once after it."""

from __future__ import annotations

import pymongo
import pytest

from execution_service.adapters.emulator import free_port
from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.wire_mongo import WireMongo, find_server
from tests.integration.test_full_disk_outage import (
    SIGNALS,
    assert_each_filled_once,
    send_into_outage,
)


@pytest.mark.skipif(find_server() is None, reason="secantusdb (the test extra) is not installed")
def test_given_mongodb_down_when_50_signals_arrive_then_held_and_all_fill_once_after_it(
        emulator_host, project_id, tmp_path):
    server = WireMongo(tmp_path / "mongo").start()
    port = free_port()
    rig = PubSubRig(project_id)
    daemon = DaemonProcess(tmp_path / "work", {
        "PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project_id,
        "MONGODB_URI": server.uri, "MOCK_FILL_DELAY_SECONDS": "0.2",
        "ORDER_POLL_SECONDS": "0.1", "HEARTBEAT_SECONDS": "0.5",
        "METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1"})
    try:
        daemon.start()
        first = market_signal({"account_id": "acc_abc123", "strategy_name": "Mongo"})
        rig.publish(first)
        rig.wait_for(lambda: rig.terminal(first["signal_id"]), 30, "the first fill")
        server.kill()  # as a crash would; acknowledged writes are on its disk
        ids = send_into_outage(rig, port, "Mongo")
        server.start()
        assert_each_filled_once(rig, port, ids)
        client = pymongo.MongoClient(server.uri)
        try:
            assert client.trading.mock_broker_orders.count_documents({}) == SIGNALS + 1
        finally:
            client.close()
    finally:
        daemon.stop_quietly()
        rig.close()
        server.stop()
    log = (tmp_path / "work" / "logs" / "execution_service.log").read_text()
    assert "Traceback" not in log
    assert log.count("Store outage:") == 1 and log.count("Store outage over after") == 1, log
