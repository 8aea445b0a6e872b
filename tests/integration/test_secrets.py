"""Broker credentials given in ACCOUNTS_FILE trade, and appear in clear nowhere: not in any
collection or file of the store, not in any command's output, not in any log."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.fernet import Fernet

from execution_service.adapters.store import open_store
from tests.fakes.daemon import DaemonProcess
from tests.fakes.fake_kite import FakeKite
from tests.fakes.pubsub_tools import PubSubRig
from tests.integration.test_brokers_end_to_end import placed_order_id

API_SECRET = f"kite-api-secret-{uuid.uuid4().hex}"


def kite_signal() -> dict:
    return {"signal_id": f"kite{uuid.uuid4().hex[:12]}", "order_type": "MARKET",
            "symbol": "INFY", "side": "BUY", "quantity": 5, "account_id": "acc_kite",
            "strategy_name": "Nifty Momentum", "reference_price": 1500.0}


def trade(rig: PubSubRig, kite: FakeKite) -> str:
    """One Kite market order, filled; returns its signal id."""
    body = kite_signal()
    rig.publish(body)
    kite.fill(placed_order_id(kite, body["signal_id"]), 5)
    rig.wait_for(lambda: rig.terminal(body["signal_id"]), 30, "the Kite order")
    assert rig.terminal(body["signal_id"])["status"] == "FILLED"
    return body["signal_id"]


def everything_said(daemon: DaemonProcess, signal_id: str) -> str:
    """The output of every command an operator or auditor may run (the reads side by side)."""
    reads = [["status"], ["status", "--json"], ["orders", "--json"], ["positions", "--json"],
             ["accounts", "list"], ["accounts", "list", "--json"], ["show", signal_id, "--json"],
             ["reconcile", "--json"]]
    writes = [["halt", "--reason", "audit", "--account", "acc_kite"],
              ["accounts", "update", "acc_kite", "--name", "Kite", "--json"]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda command: daemon.cli(*command), reads))
    results += [daemon.cli(*command) for command in writes]
    return "\n".join(f"$ {' '.join(command)} -> {result.returncode}\n{result.stdout}"
                     f"{result.stderr}" for command, result in zip(reads + writes, results,
                                                                   strict=True))


def everything_stored(data_dir: Path) -> str:
    """Every document of every collection, and the raw bytes of every file of the store."""
    handle = open_store(None, "trading", data_dir)
    try:
        docs = [json.dumps(list(handle.database[name].find()), default=str)
                for name in handle.database.list_collection_names()]
    finally:
        handle.close()
    raw = [path.read_bytes().decode("latin-1") for path in data_dir.rglob("*") if path.is_file()]
    return "\n".join(docs + raw)


def everything_logged(workdir: Path, daemon: DaemonProcess) -> str:
    logs = [path.read_text(errors="replace") for path in [*(workdir / "logs").glob("*"),
                                                          *workdir.glob("*.out")]
            if path.is_file()]
    return "\n".join(logs)


def test_given_credentials_in_accounts_file_then_kite_trades_and_no_value_appears_anywhere(
        emulator_host, project_id, tmp_path):
    kite = FakeKite(api_key=f"kitekey{uuid.uuid4().hex[:8]}",
                    access_token=f"kite-token-{uuid.uuid4().hex}").start()
    credentials = [kite.api_key, kite.access_token, API_SECRET]
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([
        {"account_id": "acc_kite", "broker": "ZERODHA", "api_key": kite.api_key,
         "api_secret": API_SECRET, "access_token": kite.access_token},
        {"account_id": "acc_paper", "broker": "MOCK"}]))
    key = Fernet.generate_key().decode()
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"# the key that seals credentials kept in the store\n"
                            f"CREDENTIALS_KEY={key}\n")
    secrets_file.chmod(0o600)
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project_id,
           "ACCOUNTS_FILE": str(accounts), "SECRETS_FILE": str(secrets_file),
           "USE_MOCK_BROKER": "false", "KITE_API_URL": kite.url, "ORDER_POLL_SECONDS": "0.1",
           "KITE_API_KEY": "", "KITE_ACCESS_TOKEN": ""}
    workdir = tmp_path / "work"
    rig = PubSubRig(project_id)
    daemon = DaemonProcess(workdir, env)
    try:
        daemon.start()
        trade(rig, kite)
        assert daemon.terminate() == 0

        # Restarted without the file: the credentials sealed in the store still trade
        del daemon.env["ACCOUNTS_FILE"]
        daemon.read_new_subscription()
        daemon.output = workdir / "daemon-restarted.out"
        daemon.start()
        said = everything_said(daemon, trade(rig, kite))
        assert "credentials: access_token set, api_key set, api_secret set" in said
        assert '"KITE_ACCESS_TOKEN": "unset"' in said and '"CREDENTIALS_KEY": "set"' in said
        reconciled = said[said.index("$ reconcile"):]
        assert '"broker_orders": 2' in reconciled  # it reached Kite with the sealed credentials
        assert daemon.terminate() == 0
    finally:
        daemon.stop_quietly()
        rig.close()
        kite.stop()
    stored = everything_stored(workdir / "data")
    logged = everything_logged(workdir, daemon)
    assert "credentials_encrypted" in stored and "acc_kite" in logged + stored
    for credential in credentials:
        assert credential not in stored, "a credential is in the store"
        assert credential not in said, "a credential is in a command's output"
        assert credential not in logged, "a credential is in a log"
