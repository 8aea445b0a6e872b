"""The HTTP API of a real daemon process (SPEC §15), from outside with a plain HTTP client,
through the real emulator: keys made with the CLI, every route and status code, and an order
over HTTP ending exactly like the same order over Pub/Sub."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from execution_service.adapters.emulator import free_port
from execution_service.adapters.http_api import schemas
from execution_service.domain.orders import TERMINAL_STATUSES
from tests.fakes.daemon import DaemonProcess, daemon_env
from tests.fakes.pubsub_tools import PubSubRig, market_signal
from tests.fakes.waiting import wait_until

ACCOUNTS = [{"account_id": account, "broker": "MOCK", "display_name": "Desk"}
            for account in ("acc_http", "acc_pubsub", "acc_api")]


def api_key(daemon: DaemonProcess, scope: str, name: str) -> str:
    made = daemon.cli("api-keys", "create", "--scope", scope, "--name", name)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module")
def served(emulator_host, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("http_api")
    port = free_port()
    env = daemon_env(emulator_host, workdir, ACCOUNTS, MOCK_FILL_DELAY_SECONDS="0.05",
                     ORDER_POLL_SECONDS="0.1", API_PORT=str(port))
    rig = PubSubRig(env["GOOGLE_CLOUD_PROJECT"])
    daemon = DaemonProcess(workdir, env)
    keys = {"trade": api_key(daemon, "trade", "desk"), "read": api_key(daemon, "read", "dash")}
    daemon.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    # "Running." comes before the API listens (it starts once recovery is done)
    wait_until(lambda: _answers(client), what="the HTTP API to listen", poll=0.1)
    yield daemon, rig, client, keys
    client.close()
    daemon.stop_quietly()
    rig.close()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code in (200, 503)
    except httpx.TransportError:
        return False


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settled_order(client: httpx.Client, key: str, signal_id: str) -> dict:
    """The record once terminal with every confirmation published."""
    def read() -> dict:
        answer = client.get(f"/orders/{signal_id}", headers=bearer(key))
        return answer.json() if answer.status_code == 200 else {}

    def settled() -> dict | None:
        record = read()
        published = record.get("confirmations") and all(
            c["published"] for c in record["confirmations"])
        return record if record.get("status") in TERMINAL_STATUSES and published else None

    return wait_until(settled, what=f"{signal_id} settled", poll=0.1)


def test_given_a_trade_key_when_an_order_is_posted_then_it_fills_once_and_a_repeat_is_409(
        served):
    daemon, _, client, keys = served
    body = market_signal({"account_id": "acc_api", "strategy_name": "Manual"}, quantity=100,
                         reference_price=235.15)
    posted = client.post("/orders", json=body, headers=bearer(keys["trade"]))
    assert posted.status_code == 201, posted.text
    assert posted.json()["status"] == "PENDING" and posted.json()["by"] == "api:desk"
    schemas.StoredOrder.model_validate(posted.json())
    record = settled_order(client, keys["read"], body["signal_id"])
    schemas.OrderRecord.model_validate(record)
    assert record["status"] == "FILLED" and record["total_value"] == 23515.0
    assert [(c["status"], c["sequence"]) for c in record["confirmations"]] == [
        ("SUBMITTED", 1), ("FILLED", 2)]
    assert [e["event"] for e in record["events"]][:3] == ["CLAIMED", "SUBMITTED", "FILL"]
    assert record["events"][0]["by"] == "api:desk"
    assert record["received_at"].endswith("Z") and record["filled_at"].endswith("Z")
    again = client.post("/orders", json=body, headers=bearer(keys["trade"]))
    assert again.status_code == 409
    assert again.json()["record"]["status"] == "FILLED"
    handle, store = daemon.store()
    try:
        assert store.mock_ledger.count(body["signal_id"]) == 1
    finally:
        handle.close()


def test_given_a_bad_order_then_422_naming_the_field_and_keys_401_403(served):
    _, _, client, keys = served
    bad = market_signal({"account_id": "acc_api", "strategy_name": "Manual"}, quantity=1.5)
    refused = client.post("/orders", json=bad, headers=bearer(keys["trade"]))
    assert refused.status_code == 422
    assert refused.json()["errors"] == [{"field": "quantity", "message": (
        "quantity must be a whole number for EQUITY (fractions only for CRYPTO or FOREX), "
        "got 1.5")}]
    schemas.RejectedOrder.model_validate(refused.json())
    good = market_signal({"account_id": "acc_api", "strategy_name": "Manual"})
    assert client.post("/orders", json=good).status_code == 401
    assert client.post("/orders", json=good, headers=bearer("esk_" + "x" * 43)).status_code \
        == 401
    assert client.post("/orders", json=good, headers=bearer(keys["read"])).status_code == 403
    for path in ("/halt", "/resume"):
        assert client.post(path, json={"reason": "x"}, headers=bearer(keys["read"])
                           ).status_code == 403
    assert client.get(f"/orders/{good['signal_id']}", headers=bearer(keys["read"])
                      ).status_code == 404
    for path in ("/capabilities", "/status", "/orders", "/positions", "/confirmations"):
        assert client.get(path).status_code == 401, path


def test_given_an_order_over_http_and_one_over_pubsub_then_records_confirmations_and_positions_match(  # noqa: E501
        served):
    _, rig, client, keys = served
    fields = {"strategy_name": "Parity", "symbol": "QQQ", "quantity": 7, "reference_price": 401.5,
              "stop_loss": 390.0, "take_profit": 420.0, "note": "kept as data"}
    over_http = market_signal({"account_id": "acc_http", **fields})
    over_pubsub = market_signal({"account_id": "acc_pubsub", **fields})
    assert client.post("/orders", json=over_http, headers=bearer(keys["trade"])
                       ).status_code == 201
    rig.publish(over_pubsub)
    http_record = settled_order(client, keys["read"], over_http["signal_id"])
    pubsub_record = settled_order(client, keys["read"], over_pubsub["signal_id"])
    assert comparable(http_record) == comparable(pubsub_record)
    assert http_record["by"] == "api:desk" and "by" not in pubsub_record
    rig.wait_for(lambda: rig.terminal(over_http["signal_id"]) and rig.terminal(
        over_pubsub["signal_id"]), what="both confirmations on execution-confirmations")
    published = [[comparable(c) for c in sorted(rig.confirmations, key=lambda c: c["sequence"])
                  if c["signal_id"] == body["signal_id"]] for body in (over_http, over_pubsub)]
    assert published[0] == published[1] and len(published[0]) == 2
    positions = client.get("/positions", headers=bearer(keys["read"])).json()
    by_account = {p["account_id"]: p for p in positions if p["symbol"] == "QQQ"}
    assert comparable(by_account["acc_http"]) == comparable(by_account["acc_pubsub"])
    assert by_account["acc_http"]["quantity"] == 7


VARYING = {"_id", "signal_id", "order_id", "account_id", "received_at", "submitted_at",
           "filled_at", "closed_at", "opened_at", "at", "fill_at", "exec_id", "broker_tag",
           "owner", "lease_expires_at", "by", "notes", "raw_message", "order_ids", "version",
           "published", "published_sequence", "outbox_pending", "publish_attempts"}


def comparable(value, signal_id: str | None = None):
    """The value without ids, times and who sent it (the signal's id inside a text, such as
    its exits' ids, becomes `<signal>`)."""
    if isinstance(value, dict):
        signal_id = signal_id or value.get("signal_id")
        return {key: comparable(item, signal_id) for key, item in value.items()
                if key not in VARYING}
    if isinstance(value, list):
        return [comparable(item, signal_id) for item in value]
    if isinstance(value, str) and signal_id:
        return value.replace(signal_id, "<signal>")
    return value


def test_given_read_routes_then_they_answer_as_the_cli_prints(served):
    daemon, _, client, keys = served
    read = bearer(keys["read"])
    assert client.get("/healthz").text == "ok\n"
    capabilities = client.get("/capabilities", headers=read).json()
    schemas.Capabilities.model_validate(capabilities)
    assert capabilities["brokers"][0]["name"] == "MOCK" and capabilities["degraded_reason"] is None
    assert "orders" in capabilities["features"]
    status = client.get("/status", headers=read).json()
    schemas.Status.model_validate(status)
    printed = json.loads(daemon.cli("status", "--json").stdout)
    assert status["running"] is True and set(status) == set(printed)
    positions = client.get("/positions", params={"all": "true"}, headers=read).json()
    assert positions == json.loads(daemon.cli("positions", "--json", "--all").stdout)
    for position in positions:
        schemas.Position.model_validate(position)
    orders = client.get("/orders", params={"limit": 3}, headers=read).json()
    assert [o["signal_id"] for o in orders] == [o["signal_id"] for o in json.loads(
        daemon.cli("orders", "--json", "--limit", "3").stdout)]
    refused = market_signal({"account_id": "acc_api", "strategy_name": "Manual"}, quantity=0)
    assert client.post("/orders", json=refused, headers=bearer(keys["trade"])).status_code == 422
    rejected = client.get("/orders", params={"status": "REJECTED", "account_id": "acc_api"},
                          headers=read).json()
    assert rejected and {(o["status"], o["account_id"]) for o in rejected} == {
        ("REJECTED", "acc_api")}
    confirmations = client.get("/confirmations", params={"limit": 4}, headers=read).json()
    assert len(confirmations) == 4
    assert [c["at"] for c in confirmations] == sorted((c["at"] for c in confirmations),
                                                      reverse=True)
    for confirmation in confirmations:
        schemas.Confirmation.model_validate(confirmation)


def test_given_a_halt_over_http_then_pubsub_orders_are_refused_until_resumed(served):
    _, rig, client, keys = served
    trade = bearer(keys["trade"])
    halted = client.post("/halt", json={"reason": "desk review", "account_id": "acc_pubsub"},
                         headers=trade)
    assert halted.status_code == 200 and halted.json()["by"] == "api:desk"
    body = market_signal({"account_id": "acc_pubsub", "strategy_name": "Halted"})
    deadline = time.monotonic() + 60  # every replica obeys within a second: poll, don't sleep
    while time.monotonic() < deadline:
        rig.publish(body)
        outcome = rig.wait_for(lambda b=body: rig.terminal(b["signal_id"]),
                               what="outcome under halt")
        if outcome["status"] == "REJECTED":
            break
        body = market_signal({"account_id": "acc_pubsub", "strategy_name": "Halted"})
    assert outcome["reason"] == "trading halted: desk review (halt on account acc_pubsub)"
    resumed = client.post("/resume", json={"account_id": "acc_pubsub"}, headers=trade)
    assert resumed.json()["lifted"]["reason"] == "desk review"
    after = market_signal({"account_id": "acc_pubsub", "strategy_name": "Halted"})
    wait_until(lambda: client.post("/orders", json={**after, "signal_id": f"{after['signal_id']}"
                                                    f"_{uuid.uuid4().hex[:4]}"},
                                   headers=trade).status_code == 201,
               what="orders accepted after resume", poll=0.1)


def test_given_keys_used_then_no_key_appears_in_any_log_and_revoked_keys_are_refused(served):
    daemon, _, client, keys = served
    logs = "".join(p.read_text() for p in (daemon.workdir / "logs").glob("*.log"))
    logs += daemon.read_output()
    for key in keys.values():
        assert key not in logs and key[4:] not in logs
    listed = json.loads(daemon.cli("api-keys", "list", "--json").stdout)
    assert {row["name"] for row in listed} >= {"desk", "dash"}
    assert all("hash" not in row for row in listed)
    extra = api_key(daemon, "read", f"temp_{uuid.uuid4().hex[:6]}")
    assert client.get("/orders", headers=bearer(extra)).status_code == 200
    name = next(row["name"] for row in json.loads(daemon.cli("api-keys", "list", "--json").stdout)
                if row["name"].startswith("temp_"))
    assert daemon.cli("api-keys", "revoke", name).returncode == 0
    assert client.get("/orders", headers=bearer(extra)).status_code == 401


def test_given_api_port_in_use_then_run_stops_with_one_line_naming_it(served, tmp_path):
    daemon, _, _, _ = served
    taken = daemon.env["API_PORT"]
    other = DaemonProcess(tmp_path, dict(daemon.env))
    other.start(wait_for_heartbeat=False)
    assert other.process.wait(timeout=60) == 2
    lines = [line for line in other.read_output().splitlines() if "API_PORT" in line]
    assert lines == [f"error: API_PORT {taken} on API_HOST 127.0.0.1: Address already in use"]
    assert "Traceback" not in other.read_output()


def test_given_resting_orders_when_cancelled_and_modified_over_http_then_pubsub_hears_it(served):
    _, rig, client, keys = served
    trade = bearer(keys["trade"])
    resting = {"account_id": "acc_api", "strategy_name": "Commands", "order_type": "LIMIT",
               "limit_price": 95.0, "reference_price": 100.0}
    to_cancel, to_modify = market_signal(resting), market_signal(resting)
    for body in (to_cancel, to_modify):
        assert client.post("/orders", json=body, headers=trade).status_code == 201
        rig.wait_for(lambda b=body: "SUBMITTED" in rig.statuses(b["signal_id"]),
                     what="resting order submitted")
    cancelled = client.post(f"/orders/{to_cancel['signal_id']}/cancel",
                            json={"request_id": f"req_{uuid.uuid4().hex[:8]}",
                                  "reason": "desk changed its mind"}, headers=trade)
    assert cancelled.status_code == 202 and cancelled.json()["outcome"] == "CANCEL_REQUESTED"
    outcome = rig.wait_for(lambda: rig.terminal(to_cancel["signal_id"]), what="CANCELLED")
    assert outcome["status"] == "CANCELLED"
    assert outcome["reason"].endswith("(api:desk): desk changed its mind")
    modified = client.post(f"/orders/{to_modify['signal_id']}/modify",
                           json={"request_id": f"req_{uuid.uuid4().hex[:8]}",
                                 "limit_price": 100.5}, headers=trade)
    assert modified.status_code == 200 and modified.json()["outcome"] == "MODIFIED"
    filled = rig.wait_for(lambda: rig.terminal(to_modify["signal_id"]), what="FILLED")
    assert filled["status"] == "FILLED" and filled["avg_fill_price"] == 100.5
    events = [c.get("event") for c in rig.confirmations if c["signal_id"] == to_modify[
        "signal_id"]]
    assert "MODIFIED" in events
    refused = client.post(f"/orders/{to_modify['signal_id']}/cancel",
                          json={"request_id": f"req_{uuid.uuid4().hex[:8]}"}, headers=trade)
    assert refused.status_code == 409 and refused.json()["reason"] == "already filled"
    assert client.post(f"/orders/{to_modify['signal_id']}/cancel", json={"request_id": "r"},
                       headers=bearer(keys["read"])).status_code == 403


def test_given_sigterm_then_the_api_stops_first_and_the_daemon_exits_cleanly(served):
    """Runs last in this module: it stops the module's daemon."""
    daemon, _, client, keys = served
    assert client.get("/orders", headers=bearer(keys["read"])).status_code == 200
    assert daemon.terminate() == 0
    output = daemon.read_output()
    assert output.index("Stopping: no new messages") < output.index("Finished server process")
    assert "Traceback" not in output
    with pytest.raises(httpx.ConnectError):
        client.get("/healthz")
