"""Fakes with behaviour for the service tests: a publisher, a failing store, a scripted
broker and a recording notifier."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta

from brokers.base import Broker, BrokerOrder, BrokerStatus, Fill, OrderRequest
from execution_service.adapters.command_log import CommandLog
from execution_service.adapters.store import Store, StoreHandle
from execution_service.bootstrap import build_app
from execution_service.clock import utc_now
from execution_service.config import load_settings
from execution_service.errors import OrderNotFound, StoreUnavailable
from tests.fakes.stores import memory_store
from tests.fakes.waiting import eventually


class FakePublisher:
    """Accepts confirmations, or refuses them while `failing` is set."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict, dict]] = []
        self.failing = False
        self.refused = 0

    async def publish(self, payload: bytes, attributes: dict[str, str]) -> None:
        if self.failing:
            self.refused += 1
            raise ConnectionError("pubsub unavailable (test)")
        self.messages.append((json.loads(payload), attributes))

    def statuses(self, signal_id: str) -> list[str]:
        return [p["status"] for p, _ in sorted(self.messages, key=lambda m: m[0]["sequence"])
                if p["signal_id"] == signal_id]


class Unreachable:
    """Mixin: every public method raises StoreUnavailable while `down` is set."""

    down = False

    def __getattribute__(self, name):
        attribute = super().__getattribute__(name)
        if callable(attribute) and not name.startswith("_") and \
                super().__getattribute__("down"):
            def unavailable(*args, **kwargs):
                error = StoreUnavailable("store unavailable: injected fault")
                health = vars(self).get("health")  # the Store's; the command log has none
                if health is not None:
                    health.failed(error)
                raise error
            return unavailable
        return attribute


class FlakyCommandLog(Unreachable, CommandLog):
    """The real order_commands log, unreachable with its FlakyStore."""


class FlakyStore(Unreachable, Store):
    """The real Store (any backend, and its order_commands log), unreachable while `down`
    is set."""

    command_log: FlakyCommandLog | None = None

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "down" and self.command_log is not None:
            self.command_log.down = value


class RecordingNotifier:
    def __init__(self) -> None:
        self.events: list = []

    def notify(self, event) -> None:
        self.events.append(event)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> dict:
        return {"enabled": True, "sent": len(self.events), "failed": 0, "dropped": 0}

    def kinds(self) -> list[str]:
        return [str(event.kind) for event in self.events]


class ScriptedBroker(Broker):
    """A venue the test drives: connection failures, uncertain placement, fills, cancels."""

    name = "SCRIPTED"

    def __init__(self) -> None:
        self.connected = False
        self.connect_error: Exception | None = None
        self.place_error: Exception | None = None
        self.orders: dict[str, BrokerOrder] = {}
        self.connect_calls = 0
        self.place_calls = 0
        self.cancel_calls = 0
        self.keep_working_after_cancel = False
        self.modify_calls: list[tuple[str, OrderRequest]] = []
        self.modify_error: Exception | None = None
        self.cancel_errors: list[Exception] = []  # raised by the next cancel_order calls

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def connect(self) -> None:
        self.connect_calls += 1
        if self.connect_error is not None:
            raise self.connect_error
        self.connected = True

    async def place_order(self, request: OrderRequest) -> BrokerOrder:
        self.place_calls += 1
        order = BrokerOrder(f"SCR-{len(self.orders) + 1}", BrokerStatus.WORKING,
                            request.quantity, request.signal_id)
        if self.place_error is not None:
            error, self.place_error = self.place_error, None
            self.orders[order.order_id] = order  # it reached the venue all the same
            raise error
        self.orders[order.order_id] = order
        return order

    async def get_order(self, order_id: str) -> BrokerOrder:
        if order_id not in self.orders:
            raise OrderNotFound(order_id)
        return self.orders[order_id]

    async def find_order(self, signal_id: str) -> BrokerOrder | None:
        return next((o for o in self.orders.values() if o.signal_id == signal_id), None)

    async def cancel_order(self, order_id: str) -> None:
        self.cancel_calls += 1
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        if not self.keep_working_after_cancel:
            self.set_status(order_id, BrokerStatus.CANCELLED, "cancelled on request")

    async def modify_order(self, order_id: str, request: OrderRequest) -> None:
        self.modify_calls.append((order_id, request))
        if self.modify_error is not None:
            raise self.modify_error
        self.orders[order_id] = replace(self.orders[order_id], quantity=request.quantity)

    async def wait_for_update(self, order_id: str, timeout: float) -> None:
        await asyncio.sleep(min(timeout, 0.01))

    def fill(self, order_id: str, exec_id: str, quantity: float, price: float, at) -> None:
        order = self.orders[order_id]
        self.orders[order_id] = replace(order, fills=order.fills + (
            Fill(exec_id, quantity, price, at, 0.5),))

    def set_status(self, order_id: str, status: BrokerStatus, reason: str | None = None) -> None:
        self.orders[order_id] = replace(self.orders[order_id], status=status, reason=reason)


class SteppedClock:
    """The service's clock, moved on by the test: leases expire and orders time out when the
    test says, however slowly the machine runs."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_app(*, env: dict | None = None, broker: Broker | None = None, store_class=Store,
             notifier=None, accounts: list[dict] | None = None,
             handle: StoreHandle | None = None, start_outbox: bool = True, clock=utc_now):
    """The real wiring over mongomock, with a fake publisher (and optionally a scripted
    broker registered under MOCK)."""
    settings = load_settings(environ={"MONGODB_URI": "mongomock://", "MOCK_FILL_DELAY_SECONDS": "0",
                                      "ORDER_POLL_SECONDS": "0.01", "RETRY_BACKOFF_SECONDS": "0.01",
                                      "LATE_FILL_GRACE_SECONDS": "0.05", **(env or {})})
    if handle is None:
        handle, _ = memory_store()
    publisher = FakePublisher()
    builders = None if broker is None else {"MOCK": lambda _settings, _db: broker}
    store = store_class(handle.database)
    command_log = None
    if isinstance(store, FlakyStore):
        command_log = store.command_log = FlakyCommandLog(handle.database)
    app = build_app(settings, publisher, handle=handle, notifier=notifier or RecordingNotifier(),
                    store=store, broker_builders=builders, command_log=command_log, clock=clock)
    for account in accounts or [{"_id": "acc_1", "broker": "MOCK", "enabled": True}]:
        fields = {key: value for key, value in account.items() if key != "_id"}
        app.store.upsert_account(account["_id"], fields, app.clock())
    if start_outbox:
        app.outbox.start()
    return app, publisher


def order_body(**fields) -> bytes:
    body = {"signal_id": "sig_1", "order_type": "MARKET", "symbol": "SPY", "side": "BUY",
            "quantity": 100, "account_id": "acc_1", "strategy_name": "Strat",
            "reference_price": 235.15}
    body.update(fields)
    return json.dumps(body).encode()


async def settle(app, timeout: float = 20.0) -> None:
    """Wait until no order is tracked and the outbox is empty."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (app.tracker.in_flight or app.outbox.backlog) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert not app.tracker.in_flight, "orders still tracked"
    assert not app.outbox.backlog, "confirmations still unpublished"


async def wait_until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `condition` on the event loop until it holds; fail naming `what` at the deadline."""
    await eventually(condition, timeout, what)


def status_of(app, signal_id: str = "sig_1") -> str | None:
    record = app.store.get_record(signal_id)
    return None if record is None else record["status"]
