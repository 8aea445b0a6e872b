"""Broker credentials given in ACCOUNTS_FILE, and the Kite session `kite login` keeps, trade,
and appear in clear nowhere: not in any collection or file of the store, not in any command's
output, not in any log."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.fernet import Fernet

from execution_service.adapters.store import open_store
from tests.fakes.daemon import DaemonProcess
from tests.fakes.fake_kite import FakeKite
from tests.fakes.pubsub_tools import PubSubRig
from tests.fakes.waiting import wait_until
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


@contextlib.contextmanager
def torn_down(daemon: DaemonProcess, rig: PubSubRig, kite: FakeKite):
    try:
        yield
    finally:
        daemon.stop_quietly()
        rig.close()
        kite.stop()


def everything_kept(workdir: Path, daemon: DaemonProcess) -> tuple[str, str]:
    """(everything stored, everything logged) once the daemon has stopped."""
    return everything_stored(workdir / "data"), everything_logged(workdir, daemon)


def secrets_file_with_key(tmp_path: Path) -> Path:
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"# the key that seals credentials kept in the store\n"
                            f"CREDENTIALS_KEY={Fernet.generate_key().decode()}\n")
    secrets_file.chmod(0o600)
    return secrets_file


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
    secrets_file = secrets_file_with_key(tmp_path)
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project_id,
           "ACCOUNTS_FILE": str(accounts), "SECRETS_FILE": str(secrets_file),
           "USE_MOCK_BROKER": "false", "KITE_API_URL": kite.url, "ORDER_POLL_SECONDS": "0.1",
           "KITE_API_KEY": "", "KITE_ACCESS_TOKEN": ""}
    workdir = tmp_path / "work"
    rig = PubSubRig(project_id)
    daemon = DaemonProcess(workdir, env)
    with torn_down(daemon, rig, kite):
        daemon.start()
        trade(rig, kite)
        assert daemon.terminate() == 0

        # Restarted without the file: the credentials sealed in the store still trade
        del daemon.env["ACCOUNTS_FILE"]
        daemon.read_new_subscription()
        daemon.output = workdir / "daemon-restarted.out"
        # The emulator may keep handing messages to the stopped consumer's stream (LIBRARY-NOTES):
        # the restarted daemon reads a subscription of its own, made before the next order.
        daemon.env["TRADING_ORDERS_SUBSCRIPTION"] = "trading-orders-sub-restarted"
        daemon.start()
        said = everything_said(daemon, trade(rig, kite))
        assert "credentials: access_token set, api_key set, api_secret set" in said
        assert '"KITE_ACCESS_TOKEN": "unset"' in said and '"CREDENTIALS_KEY": "set"' in said
        reconciled = said[said.index("$ reconcile"):]
        assert '"broker_orders": 2' in reconciled  # it reached Kite with the sealed credentials
        assert daemon.terminate() == 0
    stored, logged = everything_kept(workdir, daemon)
    assert "credentials_encrypted" in stored and "acc_kite" in logged + stored
    for credential in credentials:
        assert credential not in stored, "a credential is in the store"
        assert credential not in said, "a credential is in a command's output"
        assert credential not in logged, "a credential is in a log"


def kite_login(daemon: DaemonProcess, kite: FakeKite) -> tuple[str, str]:
    """`kite login` with a fresh request token; (the request token, what the command said)."""
    request_token = kite.issue_request_token()
    login = subprocess.run([sys.executable, "-m", "execution_service", "kite", "login",
                            "--request-token", request_token], cwd=daemon.workdir,
                           env=daemon.env, capture_output=True, text=True, timeout=60)
    assert login.returncode == 0, login.stderr
    return request_token, f"$ kite login -> 0\n{login.stdout}{login.stderr}"


def test_given_kite_logins_then_the_sessions_trade_and_no_token_or_secret_appears_anywhere(
        emulator_host, project_id, tmp_path):
    """Given a morning `kite login` and another while the daemon runs (LOG_LEVEL=DEBUG, so
    kiteconnect's and the HTTP clients' debug lines are in the log too); when both sessions
    trade; then neither access token, request token nor the api secret is in any collection,
    file of the store, command output or log."""
    kite = FakeKite(api_key=f"kitekey{uuid.uuid4().hex[:8]}", api_secret=API_SECRET).start()
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"account_id": "acc_kite", "broker": "ZERODHA"}]))
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project_id,
           "ACCOUNTS_FILE": str(accounts), "SECRETS_FILE": str(secrets_file_with_key(tmp_path)),
           "USE_MOCK_BROKER": "false", "KITE_API_URL": kite.url, "ORDER_POLL_SECONDS": "0.1",
           "KITE_API_KEY": kite.api_key, "KITE_API_SECRET": API_SECRET,
           "KITE_ACCESS_TOKEN": "", "LOG_LEVEL": "DEBUG"}
    workdir = tmp_path / "work"
    workdir.mkdir()
    rig = PubSubRig(project_id)
    daemon = DaemonProcess(workdir, env)
    with torn_down(daemon, rig, kite):
        morning, said_first = kite_login(daemon, kite)
        daemon.start()
        trade(rig, kite)
        renewal, said_again = kite_login(daemon, kite)
        log = workdir / "logs" / "execution_service.log"
        wait_until(lambda: "Kite session renewed" in log.read_text(), 60,
                   "the running daemon taking the new session")
        said = "\n".join([said_first, said_again, everything_said(daemon, trade(rig, kite))])
        assert '"KITE_ACCESS_TOKEN": "unset"' in said and '"CREDENTIALS_KEY": "set"' in said
        assert daemon.terminate() == 0
    stored, logged = everything_kept(workdir, daemon)
    assert len(kite.sessions_issued) == 2 and "access_token_encrypted" in stored
    assert "Kite session renewed" in logged and "Using selector" in logged  # a debug line
    for secret in [*kite.sessions_issued, morning, renewal, API_SECRET]:
        assert secret not in stored, "a Kite session secret is in the store"
        assert secret not in said, "a Kite session secret is in a command's output"
        assert secret not in logged, "a Kite session secret is in a log"
