"""POST /orders/{signal_id}/cancel and /modify served for real (uvicorn, httpx) over the real
processor, command handler, tracker and mock broker: outcomes and status codes, idempotency by
request_id, who asked, refusals, bad bodies and a store outage."""

from __future__ import annotations

import pytest

from execution_service.domain.api_keys import Scope
from execution_service.errors import TransientBrokerError
from tests.fakes.served_api import serve, until
from tests.fakes.service_fakes import ScriptedBroker, order_body, settle

pytestmark = pytest.mark.asyncio
RESTING = {"order_type": "LIMIT", "limit_price": 230.0}  # market 235.15: a buy limit rests



def status_of(api, signal_id: str = "sig_1") -> str | None:
    record = api.app.store.get_record(signal_id)
    return None if record is None else record["status"]


async def resting(api) -> None:
    assert (await api.post("/orders", order_body(**RESTING))).status_code == 201
    await until(lambda: status_of(api) == "SUBMITTED", what="SUBMITTED")


async def test_given_resting_limit_when_cancelled_over_http_then_202_then_cancelled_by_the_key(
        api):
    await resting(api)
    sent = await api.post("/orders/sig_1/cancel", {"request_id": "req_1", "reason": "withdrawn"})
    assert sent.status_code == 202, sent.text
    assert sent.json()["outcome"] == "CANCEL_REQUESTED" and sent.json()["request_id"] == "req_1"
    await until(lambda: status_of(api) == "CANCELLED", what="CANCELLED")
    await settle(api.app)
    record = api.app.store.get_record("sig_1")
    assert record["cancel_reason"] == ("cancelled by operator request req_1 (api:desk): "
                                       "withdrawn")
    assert api.publisher.statuses("sig_1")[-1] == "CANCELLED"
    again = await api.post("/orders/sig_1/cancel", {"request_id": "req_1"})
    assert again.status_code == 200 and again.json()["outcome"] == "DUPLICATE"
    assert api.app.store.db["mock_broker_orders"].find_one()["status"] == "CANCELLED"


async def test_given_resting_limit_when_modified_marketable_then_200_and_fills_at_new_limit(api):
    await resting(api)
    changed = await api.post("/orders/sig_1/modify", {"request_id": "req_2",
                                                      "limit_price": 236.10})
    assert changed.status_code == 200 and changed.json()["outcome"] == "MODIFIED"
    assert changed.json()["record"]["limit_price"] == 236.10
    await until(lambda: status_of(api) == "FILLED", what="FILLED")
    record = api.app.store.get_record("sig_1")
    assert record["avg_fill_price"] == 236.10
    [event] = [e for e in record["events"] if e["event"] == "MODIFIED"]
    assert event["request_id"] == "req_2"


async def test_given_a_filled_order_then_cancel_and_modify_are_409_with_the_reason(api):
    assert (await api.post("/orders", order_body())).status_code == 201
    await settle(api.app)
    for path, body, outcome in (("cancel", {"request_id": "req_c"}, "CANCEL_REJECTED"),
                                ("modify", {"request_id": "req_m", "quantity": 5},
                                 "MODIFY_REJECTED")):
        refused = await api.post(f"/orders/sig_1/{path}", body)
        assert refused.status_code == 409
        assert refused.json()["outcome"] == outcome
        assert refused.json()["detail"] == refused.json()["reason"] == "already filled"
    assert status_of(api) == "FILLED"


async def test_given_unknown_orders_then_modify_409_and_cancel_is_kept_refusing_the_order(api):
    unknown = await api.post("/orders/sig_9/modify", {"request_id": "req_m", "quantity": 5})
    assert unknown.status_code == 409
    assert unknown.json()["reason"] == "no order sig_9 has been received"
    kept = await api.post("/orders/sig_9/cancel", {"request_id": "req_k"})
    assert kept.status_code == 202 and kept.json()["outcome"] == "KEPT"
    late = await api.post("/orders", order_body(signal_id="sig_9"))
    assert late.status_code == 422
    assert late.json()["detail"].endswith("request req_k before placement")
    assert api.broker_orders() == 0


async def test_given_bad_command_bodies_then_422_naming_the_field_and_nothing_kept(api):
    await resting(api)
    for path, body, fields in (
            ("cancel", {}, ["request_id"]),
            ("cancel", {"request_id": "has space"}, ["request_id"]),
            ("modify", {"request_id": "req_1", "quantity": -1}, ["quantity"]),
            ("modify", {"request_id": "req_1"}, [None]),
            ("modify", b"[1]", [None]),
            ("modify", b"{", [None])):
        answer = await api.post(f"/orders/sig_1/{path}", body)
        assert answer.status_code == 422, (path, body)
        assert [e["field"] for e in answer.json()["errors"]] == fields, (path, body)
    assert api.app.store.db["order_commands"].count_documents({}) == 0
    assert (await api.post("/orders/sig_1/cancel", {"request_id": "r"}, Scope.READ)
            ).status_code == 403
    assert status_of(api) == "SUBMITTED"


async def test_given_store_down_then_503_nothing_kept_and_the_retry_cancels(api):
    await resting(api)
    api.app.store.down = True  # and its order_commands log with it
    down = await api.post("/orders/sig_1/cancel", {"request_id": "req_1"})
    assert down.status_code == 503
    api.app.store.down = False
    assert api.app.store.db["order_commands"].count_documents({}) == 0
    retried = await api.post("/orders/sig_1/cancel", {"request_id": "req_1"})
    assert retried.status_code == 202
    await until(lambda: status_of(api) == "CANCELLED", what="CANCELLED")


async def test_given_a_cancel_slower_than_the_wait_then_202_in_progress_and_it_still_happens():
    """Given the broker unreachable when the cancel comes, then the answer does not wait for
    it (202 IN_PROGRESS) and the cancel is carried out once the broker is back."""
    broker = ScriptedBroker()
    async with serve(broker=broker, command_wait=0) as served:
        await resting(served)
        broker.connected, broker.connect_error = False, TransientBrokerError("gateway down")
        sent = await served.post("/orders/sig_1/cancel", {"request_id": "req_1"})
        assert sent.status_code == 202 and sent.json()["outcome"] == "IN_PROGRESS"
        broker.connect_error = None
        await until(lambda: status_of(served) == "CANCELLED", what="CANCELLED")
        assert served.app.store.db["order_commands"].find_one({"_id": "req_1"})["state"] == \
            "DONE"
