"""The operators' chat commands as plain text (SPEC §13), on an in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from execution_service.adapters.store import Store, open_store
from execution_service.config import load_settings
from execution_service.errors import StoreUnavailable
from execution_service.service.operator_desk import CANCEL_UNAVAILABLE, OperatorDesk
from execution_service.service.processor import Action
from execution_service.service.risk import active_halts
from execution_service.status import status_text
from tests.fakes.service_fakes import make_app, order_body
from tests.fakes.waiting import eventually

NOW = datetime(2026, 11, 29, 9, 15, tzinfo=UTC)
BY = "telegram:4242:desk"


@pytest.fixture
def store():
    handle = open_store("mongomock://", "trading", None)
    store = Store(handle.database)
    store.upsert_account("acc_1", {"broker": "MOCK", "enabled": True, "allowed_symbols": []},
                         NOW)
    yield store
    handle.close()


@pytest.fixture
def desk(store):
    settings = load_settings(environ={"MONGODB_URI": "mongomock://"})
    return OperatorDesk(store, status_text(store, settings), lambda: NOW)


async def test_given_halt_with_a_known_account_first_then_only_that_account_is_halted_by_the_asker(
        desk, store):
    assert await desk.answer("halt", ["acc_1", "margin", "call"], BY) == \
        "trading halted for account acc_1: margin call"
    [halt] = active_halts(store)
    assert (halt["_id"], halt["by"], halt["halted_at"]) == ("account:acc_1", BY, NOW)


async def test_given_halt_whose_first_word_is_not_an_account_then_everything_is_halted(desk, store):
    assert await desk.answer("halt", ["stop", "now"], BY) == \
        "trading halted for all accounts: stop now"
    assert (await desk.answer("halt", [], BY)).startswith("usage: /halt REASON")
    assert [h["_id"] for h in active_halts(store)] == ["global"]


async def test_given_no_halt_when_resume_then_it_says_so(desk):
    assert await desk.answer("resume", [], BY) == "no halt was active for all accounts"
    assert await desk.answer("resume", ["a", "b"], BY) == "usage: /resume [ACCOUNT]"


async def test_given_empty_store_then_answers_say_there_is_nothing(desk):
    assert await desk.answer("positions", [], BY) == "no open positions"
    assert await desk.answer("orders", [], BY) == "no orders yet"
    assert (await desk.answer("orders", ["-3"], BY)).startswith("usage: /orders [N]")
    assert (await desk.answer("status", [], BY)).startswith("Running:   no")
    assert await desk.answer("cancel", ["sig_1"], BY) == CANCEL_UNAVAILABLE  # no handler here
    assert await desk.answer("cancel", [], BY) == "usage: /cancel SIGNAL_ID"


async def test_given_many_orders_then_the_answer_fits_one_telegram_message(desk, store):
    for n in range(60):
        store.records.insert_one({"_id": f"exec_{n}", "signal_id": f"sig_{n:02d}_{'x' * 60}",
                                  "status": "FILLED", "received_at": NOW, "side": "BUY",
                                  "filled_quantity": 1.0, "quantity": 1.0, "symbol": "SPY",
                                  "reject_reason": "r" * 200})
    answer = await desk.answer("orders", ["50"], BY)
    assert len(answer.encode("utf-16-le")) // 2 <= 4096
    assert answer.count("sig_") < 50  # cut, and marked as cut


async def test_given_the_store_down_then_the_answer_says_so_instead_of_raising(store):
    class DownStore:
        db = store.db

        def list_positions(self, status):
            raise StoreUnavailable("store unavailable: ServerSelectionTimeoutError")

    down = DownStore()
    desk = OperatorDesk(down, status_text(down, load_settings(environ={})), lambda: NOW)
    assert await desk.answer("positions", [], BY) == \
        "/positions failed: store unavailable: ServerSelectionTimeoutError"


async def test_given_a_resting_order_when_cancel_from_chat_then_cancelled_with_who_asked():
    app, publisher = make_app()
    desk = OperatorDesk(app.store, status_text(app.store, app.settings), app.clock,
                        commands=app.commands)
    assert app.processor.handle(order_body(order_type="LIMIT", limit_price=230.0)).action \
        is Action.ACK
    await eventually(lambda: (app.store.get_record("sig_1") or {}).get("status") == "SUBMITTED")
    answer = await desk.answer("cancel", ["sig_1"], BY)
    assert answer.startswith("cancel of sig_1 requested (request telegram-")
    await eventually(lambda: app.store.get_record("sig_1")["status"] == "CANCELLED")
    record = app.store.get_record("sig_1")
    assert record["cancel_reason"].startswith("cancelled by operator request telegram-")
    assert f"({BY}): cancelled from Telegram" in record["cancel_reason"]
    assert "CANCEL_REQUESTED" in [p["event"] for p, _ in publisher.messages]
    assert (await desk.answer("cancel", ["sig_1"], BY)).startswith("cannot cancel sig_1: ")
    assert (await desk.answer("cancel", ["bad id!"], BY)).startswith("cannot cancel 'bad id!': ")


