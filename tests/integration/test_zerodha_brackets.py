"""Protective exits (SPEC §12) on Zerodha MIS: an SL-M and a LIMIT for the day, kept
one-cancels-other by the daemon, through the real kiteconnect client against the fake Kite
server, with the real processor, tracker, journal and bracket manager over mongomock."""

from __future__ import annotations

import pytest

from execution_service.domain.brackets import OCO_REASON
from tests.fakes.fake_kite import FakeKite
from tests.fakes.kite_flow import entry_at_kite, exits_submitted, stop_app
from tests.fakes.service_fakes import status_of, wait_until

pytestmark = pytest.mark.asyncio
ENTRY = {"symbol": "INFY", "quantity": 10, "product": "MIS", "reference_price": 1500.0,
         "stop_loss": 1450.0, "take_profit": 1600.0, "exchange": "NSE", "currency": "INR"}


@pytest.fixture
def kite():
    server = FakeKite().start()
    yield server
    server.stop()
    assert server.header_problems == []


async def test_given_mis_entry_filled_when_take_profit_fills_then_stop_cancelled_at_kite(kite):
    app, broker = await entry_at_kite(kite, ENTRY, filled=10)
    await exits_submitted(app)
    forms = {p.form["order_type"]: p for p in kite.placements[1:]}
    assert {name: (p.form["transaction_type"], p.form["quantity"], p.form["product"],
                   p.form["validity"]) for name, p in forms.items()} == {
        "SL-M": ("SELL", "10", "MIS", "DAY"), "LIMIT": ("SELL", "10", "MIS", "DAY")}
    assert (forms["SL-M"].form["trigger_price"], forms["LIMIT"].form["price"]) == \
        ("1450.0", "1600.0")
    kite.fill(forms["LIMIT"].order_id, 10, 1600.0)
    await wait_until(lambda: status_of(app, "sig_1:SL") == "CANCELLED", what="stop cancelled")
    assert app.store.get_record("sig_1:SL")["cancel_reason"] == OCO_REASON
    assert kite.order(forms["SL-M"].order_id)["status"] == "CANCELLED"
    assert len(kite.placements) == 3
    position = app.store.db["positions"].find_one({"symbol": "INFY"})
    assert position["status"] == "CLOSED" and position["realized_pnl"] == pytest.approx(1000.0)
    await stop_app(app, broker)
