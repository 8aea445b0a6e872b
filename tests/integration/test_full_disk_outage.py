"""The embedded store's data directory on a disk that fills up: a real tmpfs we mount, fill
and free. Signals sent into the outage are held (never nacked, never dead-lettered) and all
fill once after it; the heartbeat and the working orders come back by themselves."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from execution_service.adapters.emulator import free_port
from execution_service.adapters.store import Store, open_store
from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.waiting import wait_until

SIGNALS = 50


@contextmanager
def small_disk(path: Path, size: str = "16m"):
    """A tmpfs of its own at `path`; skips the test when this machine does not allow mounts."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses another byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError:
                pass
    return filler


def health(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.read().decode().strip()


def test_given_full_disk_when_50_signals_arrive_then_held_and_all_fill_once_after_it(
        emulator_host, project_id, tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        port = free_port()
        rig = PubSubRig(project_id)
        daemon = DaemonProcess(tmp_path / "work", {
            "PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project_id,
            "MONGODB_URI": f"embedded://{disk / 'data'}", "MOCK_FILL_DELAY_SECONDS": "0.2",
            "ORDER_POLL_SECONDS": "0.1", "HEARTBEAT_SECONDS": "0.5", "ORDER_TIMEOUT_SECONDS": "4",
            "METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1"}).start()
        try:
            first = market_signal({"account_id": "acc_abc123", "strategy_name": "Disk"})
            rig.publish(first)
            rig.wait_for(lambda: rig.terminal(first["signal_id"]), 30, "the first fill")
            # a working order whose timeout falls due during the outage
            resting = market_signal({"account_id": "acc_abc123", "strategy_name": "Disk"},
                                    order_type="LIMIT", limit_price=95.0)
            rig.publish(resting)
            rig.wait_for(lambda: rig.statuses(resting["signal_id"]) == ["SUBMITTED"], 30,
                         "the resting order submitted")
            filler = fill(disk)
            ids = send_into_outage(rig, port, "Disk")
            filler.unlink()
            assert_each_filled_once(rig, port, ids)
            rig.wait_for(lambda: rig.terminal(resting["signal_id"]), 30, "the timeout")
            assert rig.statuses(resting["signal_id"]) == ["SUBMITTED", "CANCELLED"]
            status = json.loads(daemon.cli("status", "--json").stdout)
            assert status["running"] and status["heartbeat_age_seconds"] < 5
            handle, store = _reader(disk)
            try:
                ledger = store.db["mock_broker_orders"]
                assert ledger.count_documents({}) == SIGNALS + 2  # each placed exactly once
                assert store.records.count_documents({"status": "FILLED"}) == SIGNALS + 1
            finally:
                handle.close()
        finally:
            daemon.stop_quietly()
            rig.close()
        log = (tmp_path / "work" / "logs" / "execution_service.log").read_text()
        assert "Traceback" not in log
        assert log.count("Store outage:") == 1, log
        assert log.count("Store outage over after") == 1, log


def send_into_outage(rig: PubSubRig, port: int, strategy: str) -> list[str]:
    """SIGNALS market orders sent while the store is out; returns once every one is held and
    the outage has lasted a few seconds, none dead-lettered."""
    signals = [market_signal({"account_id": "acc_abc123", "strategy_name": strategy})
               for _ in range(SIGNALS)]
    for body in signals:
        rig.publish(body)
    wait_until(lambda: f"{SIGNALS} messages held" in health(port), 90,
               f"the daemon to hold all {SIGNALS} signals")
    wait_until(lambda: outage_seconds(health(port)) >= 3, 60, "a 3 s outage")
    assert f"{SIGNALS} messages held" in health(port)
    assert rig.dead_letters() == []
    return [body["signal_id"] for body in signals]


def assert_each_filled_once(rig: PubSubRig, port: int, ids: list[str]) -> None:
    rig.wait_for(lambda: all(rig.terminal(i) for i in ids), 90, f"all {len(ids)} filled")
    for signal_id in ids:
        assert rig.statuses(signal_id) == ["SUBMITTED", "FILLED"], signal_id
    assert rig.dead_letters() == []
    wait_until(lambda: health(port) == "ok", 60, "healthy again")


def outage_seconds(text: str) -> float:
    prefix = "store cannot be written: store unavailable for "
    if not text.startswith(prefix):
        return 0.0
    return float(text.removeprefix(prefix).split("s", 1)[0])


def _reader(disk: Path) -> tuple[object, Store]:
    handle = open_store(None, "trading", disk / "data")
    return handle, Store(handle.database)
