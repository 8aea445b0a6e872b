"""The HTTP API served for real (uvicorn on a loopback port, httpx as the client) over the
real service wiring with fakes at the edges: faults of the store, unusable bodies, halts,
scopes, the OpenAPI description, and the server's own start and stop."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from execution_service.adapters.http_api import ApiServer, create_api, schemas
from execution_service.bootstrap import build_desk
from execution_service.domain.api_keys import Scope
from execution_service.domain.intake import DEFAULT_MAX_BODY_BYTES
from execution_service.errors import FatalConfigError
from execution_service.service.daemon import ExecutionDaemon
from execution_service.service.risk import set_halt
from tests.fakes.served_api import serve, until
from tests.fakes.service_fakes import make_app, order_body, settle

pytestmark = pytest.mark.asyncio


async def test_given_store_down_when_order_posted_then_503_nothing_placed_and_retry_fills(api):
    api.app.store.down = True
    down = await api.post("/orders", order_body())
    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"
    assert "store unavailable" in down.json()["detail"]
    api.app.store.down = False
    assert api.app.store.get_record("sig_1") is None and api.broker_orders() == 0
    retried = await api.post("/orders", order_body())
    assert retried.status_code == 201
    await settle(api.app)
    assert api.app.store.get_record("sig_1")["status"] == "FILLED"
    assert api.publisher.statuses("sig_1") == ["SUBMITTED", "FILLED"]


async def test_given_store_down_then_every_call_503_never_a_wrong_key_401(api):
    api.app.store.down = True
    for path in ("/orders", "/orders/sig_1", "/positions", "/confirmations", "/status",
                 "/capabilities"):
        answer = await api.get(path)
        assert answer.status_code == 503, path  # the key lookup itself could not be made
        assert "store unavailable" in answer.json()["detail"]
    assert (await api.client.get("/orders", headers={"Authorization": "Bearer esk_x"})
            ).status_code == 503, "a store outage is not a wrong key"
    api.app.store.down = False
    assert (await api.get("/orders")).status_code == 200


async def test_given_unusable_bodies_then_422_naming_what_and_nothing_recorded(api):
    cases = {b"not json": None, b"[1, 2]": None, b"": None,
             json.dumps({"symbol": "SPY"}).encode(): "signal_id",
             json.dumps({"signal_id": "has space"}).encode(): "signal_id"}
    for body, field in cases.items():
        answer = await api.post("/orders", body)
        assert answer.status_code == 422, body
        assert [error["field"] for error in answer.json()["errors"]] == [field], body
        assert answer.json()["record"] is None
    assert api.app.store.records.count_documents({}) == 0
    assert api.app.counters.dead_lettered == 0, "an HTTP caller is told; nothing dead-lettered"


async def test_given_several_bad_fields_then_each_named_and_the_rejection_recorded(api):
    answer = await api.post("/orders", order_body(quantity=-1, side="HOLD",
                                                  **{"$where": "1"}))
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": "$where", "message": answer.json()["detail"]}]
    answer = await api.post("/orders", order_body(signal_id="sig_2", quantity=-1, side="HOLD"))
    fields = {error["field"] for error in answer.json()["errors"]}
    assert fields == {"quantity", "side"}
    answer = await api.post("/orders", order_body(signal_id="sig_3", order_type="LIMIT"))
    assert answer.json()["errors"] == [{"field": "limit_price", "message":
                                        "limit_price is required for LIMIT orders"}]
    record = api.app.store.get_record("sig_3")
    assert record["status"] == "REJECTED" and record["by"] == "api:desk"
    await settle(api.app)
    assert api.publisher.statuses("sig_3") == ["REJECTED"]
    assert api.broker_orders() == 0


async def test_given_halt_and_unknown_account_then_422_names_control_and_field(api):
    set_halt(api.app.store, "desk review", at=api.app.clock())
    halted = await api.post("/orders", order_body())
    assert halted.status_code == 422
    assert halted.json()["control"] == "halt"
    assert halted.json()["errors"] == [{"field": None, "message": "trading halted: desk review"}]
    unknown = await api.post("/orders", order_body(signal_id="sig_2", account_id="acc_x"))
    assert unknown.json()["errors"][0]["field"] == "account_id"
    assert api.broker_orders() == 0


async def test_given_trade_key_when_halt_and_resume_then_who_asked_is_recorded(api):
    halted = await api.post("/halt", {"reason": "lunch", "account_id": "acc_1"})
    assert halted.status_code == 200
    assert halted.json()["by"] == "api:desk" and halted.json()["halted_at"].endswith("Z")
    schemas.Halt.model_validate(halted.json())
    assert (await api.post("/halt", {"reason": "x", "account_id": "acc_nope"})).json()[
        "errors"][0]["field"] == "account_id"
    assert (await api.post("/halt", {"reason": " "})).json()["errors"][0]["field"] == "reason"
    assert (await api.post("/halt", b"{")).status_code == 422
    assert (await api.post("/halt", {"reason": "x"}, Scope.READ)).status_code == 403
    resumed = await api.post("/resume", {"account_id": "acc_1"})
    assert resumed.json()["lifted"]["reason"] == "lunch"
    schemas.Resumed.model_validate(resumed.json())
    [lifted] = api.app.store.lifted_halts()
    assert lifted["lifted_by"] == "api:desk" and lifted["by"] == "api:desk"
    nothing = await api.post("/resume")
    assert nothing.status_code == 200 and nothing.json() == {"lifted": None, "still_halted": []}


async def test_given_keys_then_missing_malformed_wrong_revoked_401_and_read_on_trade_403(api):
    assert (await api.client.get("/orders")).status_code == 401
    basic = await api.client.get("/orders", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401 and basic.headers["www-authenticate"] == "Bearer"
    wrong = await api.client.get("/orders", headers={"Authorization": "Bearer esk_wrong"})
    assert wrong.status_code == 401
    forbidden = await api.post("/orders", order_body(), Scope.READ)
    assert forbidden.status_code == 403
    assert forbidden.json()["detail"] == "API key 'dash' has scope read; this call needs trade"
    assert api.app.store.get_record("sig_1") is None
    api.app.store.revoke_api_key("dash", api.app.clock())
    assert (await api.get("/orders")).status_code == 401
    assert (await api.get("/orders", Scope.TRADE)).status_code == 200


async def test_given_bad_query_parameters_then_422_naming_them(api):
    for path, field in (("/orders?limit=abc", "limit"), ("/orders?limit=-1", "limit"),
                        ("/confirmations?limit=100000", "limit"), ("/positions?all=maybe", "all")):
        answer = await api.get(path)
        assert answer.status_code == 422, path
        assert [error["field"] for error in answer.json()["errors"]] == [field]


async def test_given_health_then_healthz_needs_no_key_and_says_what_is_wrong(api):
    assert (await api.client.get("/healthz")).text == "ok\n"
    api.app.metrics.bind(healthy=lambda: (False, "not consuming trading-orders"))
    answer = await api.client.get("/healthz")
    assert answer.status_code == 503 and answer.text == "not consuming trading-orders\n"
    capabilities = await api.get("/capabilities")
    assert capabilities.json()["degraded_reason"] == "not consuming trading-orders"


async def test_given_the_openapi_description_then_every_route_scheme_and_answer_is_there(api):
    spec = (await api.client.get("/openapi.json")).json()
    assert set(spec["paths"]) == {"/healthz", "/capabilities", "/status", "/orders",
                                  "/orders/{signal_id}", "/positions", "/confirmations",
                                  "/halt", "/resume", "/orders/{signal_id}/cancel",
                                  "/orders/{signal_id}/modify"}
    for action in ("cancel", "modify"):
        command = spec["paths"][f"/orders/{{signal_id}}/{action}"]["post"]
        assert set(command["responses"]) == {"200", "202", "401", "403", "409", "413", "422",
                                             "503"}
    post = spec["paths"]["/orders"]["post"]
    assert set(post["responses"]) == {"201", "401", "403", "409", "413", "422", "503"}
    assert post["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    order = spec["components"]["schemas"]["Order"]
    assert set(order["required"]) == {"signal_id", "account_id", "strategy_name", "symbol",
                                      "side", "quantity", "order_type"}
    assert "extra_fields" not in order["properties"]
    assert "HTTPValidationError" not in spec["components"]["schemas"], \
        "our 422 body is ErrorBody, not FastAPI's default"
    refs = json.dumps(spec)
    for name in ("HaltRequest", "ResumeRequest", "AssetClass", "CancelRequest",
                 "ModifyRequest"):
        assert f"#/components/schemas/{name}" in refs and name in spec["components"]["schemas"]


async def test_given_a_port_in_use_then_one_line_naming_api_port():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(FatalConfigError, match=r"^API_PORT \d+ on API_HOST 127.0.0.1: "):
            ApiServer(create_api(build_desk(make_app()[0])), "127.0.0.1",
                      taken.getsockname()[1]).bind()
    finally:
        taken.close()


async def test_given_a_served_api_when_stopped_then_the_port_is_closed(api):
    port = api.server.port
    await api.server.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_given_a_body_over_the_limit_then_413_before_it_is_read_or_recorded(api):
    huge = order_body(padding="x" * (DEFAULT_MAX_BODY_BYTES + 1))
    assert (await api.post("/orders", huge)).status_code == 413

    async def chunked():
        for _ in range(5):
            yield b"x" * (DEFAULT_MAX_BODY_BYTES // 4)

    streamed = await api.client.post("/halt", content=chunked(), headers=api.auth(Scope.TRADE))
    assert streamed.status_code == 413
    assert streamed.json()["detail"] == ("body is over the 1,000,000-byte limit "
                                         "(MAX_MESSAGE_BYTES)")
    assert api.app.store.records.count_documents({}) == 0


async def test_given_an_account_whose_broker_cannot_be_built_then_500_json_and_it_is_logged(
        caplog):
    async with serve({"USE_MOCK_BROKER": "false"}) as api:
        api.app.store.upsert_account("acc_odd", {"broker": "NOPE", "enabled": True},
                                     api.app.clock())
        answer = await api.post("/orders", order_body(account_id="acc_odd"))
        assert answer.status_code == 500
        assert answer.json()["detail"] == ("internal error (FatalConfigError); see the "
                                           "daemon's log")
        assert api.app.store.get_record("sig_1") is None
    assert any(r.exc_info and r.exc_info[0].__name__ == "FatalConfigError"
               for r in caplog.records), "the traceback is in the log"


class RunningConsumer:
    running = True


async def test_given_uvicorn_stops_by_itself_then_health_says_so_and_it_serves_again(api):
    server = ApiServer(create_api(build_desk(api.app)), "127.0.0.1", 0, restart_backoff=1.0)
    daemon = ExecutionDaemon(api.app, RunningConsumer(), None, api.app.clock,
                             front_doors=(server,))
    await server.start()
    try:
        daemon.write_heartbeat()
        assert daemon.healthy() == (True, "ok")
        server._server.should_exit = True  # what uvicorn does when it gives up by itself
        await until(lambda: not server.serving)
        assert daemon.healthy() == (False, "HTTP API not serving")
        await until(lambda: server.serving)
        assert server.restarts == 1 and daemon.healthy() == (True, "ok")
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/orders", headers=api.auth(Scope.READ))).status_code == 200
    finally:
        await server.stop()
    assert not server.serving

