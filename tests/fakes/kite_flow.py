"""The daemon's flow against the fake Kite server: one entry placed, filled, and protected."""

from __future__ import annotations

from brokers.zerodha import ZerodhaBroker
from execution_service.service.processor import Action
from tests.fakes.fake_kite import ACCESS_TOKEN, API_KEY, FakeKite
from tests.fakes.service_fakes import make_app, order_body, status_of, wait_until


def kite_broker(kite: FakeKite) -> ZerodhaBroker:
    return ZerodhaBroker(API_KEY, ACCESS_TOKEN, root=kite.url, orders_per_second=1000,
                         request_timeout=2.0)


async def entry_at_kite(kite: FakeKite, entry: dict, *, filled: int, env: dict | None = None):
    """The real wiring over mongomock with a Zerodha account: `entry` (sig_1) accepted, at
    Kite, `filled` of it filled (its exits are placed only after, so wait on them)."""
    broker = kite_broker(kite)
    app, _ = make_app(env=env, broker=broker)
    assert app.processor.handle(order_body(**entry)).action is Action.ACK
    await wait_until(lambda: status_of(app, "sig_1") == "SUBMITTED", what="entry at Kite")
    kite.fill(kite.placements[0].order_id, filled, float(entry["reference_price"]))
    return app, broker


async def exits_submitted(app) -> None:
    await wait_until(lambda: status_of(app, "sig_1:SL") == "SUBMITTED"
                     and status_of(app, "sig_1:TP") == "SUBMITTED", what="exits at Kite")


async def stop_app(app, broker) -> None:
    await app.brackets.stop()
    await app.tracker.stop()
    await broker.close()
