"""The event loop's lag while the store hangs (issue 13, item 4).

The real daemon (`ExecutionDaemon`, processor, tracker, journal, outbox, mock broker, leases,
heartbeat) runs in this process over an in-memory store wrapped so that, while "hung", every
call blocks for --hang-call seconds and then raises pymongo's ServerSelectionTimeoutError
(what the driver does with the daemon's serverSelectionTimeoutMS=3000 when MongoDB is gone).
Messages come through a stand-in consumer (no Pub/Sub), confirmations go to a publisher that
accepts everything. With N orders working, the store hangs for --hang seconds; a probe
measures how late a 10 ms sleep on the loop wakes up, and a desk probe asks what a dashboard
and an operator ask (the HTTP API's `GET /orders` and Telegram's `/status`, through the same
Desk and OperatorDesk the daemon serves them with) one after the other, timing each answer.
Run twice: the store on its own thread (today) and inline on the loop (as before), the same
load.

    .venv/bin/python benchmarks/loop_lag.py [--orders 50] [--hang 8] [--hang-call 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from execution_service.adapters.store import Store  # noqa: E402
from execution_service.bootstrap import build_app, build_desk  # noqa: E402
from execution_service.config import load_settings  # noqa: E402
from execution_service.errors import StoreUnavailable  # noqa: E402
from execution_service.service.daemon import ExecutionDaemon  # noqa: E402
from execution_service.service.operator_desk import OperatorDesk  # noqa: E402
from execution_service.service.store_thread import StoreThread  # noqa: E402
from execution_service.status import status_text  # noqa: E402
from tests.fakes.stores import SwitchableDatabase, memory_store  # noqa: E402


class AcceptingPublisher:
    async def publish(self, payload: bytes, attributes: dict[str, str]) -> None:
        return None


class StandInConsumer:
    running = False

    def start(self, loop, handler) -> None:
        self.handler, self.running = handler, True

    async def stop(self, timeout: float = 3.0) -> None:
        self.running = False


class Message:
    def __init__(self, n: int) -> None:
        self.message_id, self.attributes = f"m{n}", {}
        self.data = json.dumps({
            "signal_id": f"lag_{n}", "order_type": "MARKET", "symbol": f"SYM{n % 5}",
            "side": "BUY", "quantity": 1, "account_id": "acc_1", "strategy_name": "Lag",
            "reference_price": 10.0}).encode()

    def ack(self) -> None: ...

    def nack(self) -> None: ...


async def measure(off_loop: bool, orders: int, hang_seconds: float, hang_call: float) -> dict:
    settings = load_settings(environ={
        "MONGODB_URI": "mongomock://", "MOCK_FILL_DELAY_SECONDS": "2.0",
        "ORDER_POLL_SECONDS": "0.1", "RETRY_BACKOFF_SECONDS": "0.1", "LOG_LEVEL": "CRITICAL"})
    handle, _ = memory_store()
    hang = SwitchableDatabase(handle.database)
    hang.down, hang.hang_seconds = False, hang_call
    app = build_app(settings, AcceptingPublisher(), handle=handle, store=Store(hang))
    if not off_loop:  # everything on the loop, as before item 4
        inline = StoreThread(inline=True)
        app.store_thread = app.tracker._store_thread = app.outbox._store_thread = inline
        app.leases._store_thread = app.commands._store_thread = inline
        app.brokers._offload = None
    app.store.upsert_account("acc_1", {"broker": "MOCK", "enabled": True}, app.clock())
    consumer = StandInConsumer()
    daemon = ExecutionDaemon(app, consumer, None, app.clock, heartbeat_seconds=0.5)
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    loop = asyncio.get_running_loop()
    while not consumer.running:
        await asyncio.sleep(0.01)
    for n in range(orders):
        consumer.handler(Message(n))
    reader = Store(handle.database)  # the same data, never hung

    def count(status: str) -> int:
        return reader.counts_by_status().get(status, 0)

    while count("SUBMITTED") < orders:
        await asyncio.sleep(0.01)
    lags: list[float] = []
    unhealthy_seen = False
    hang.down = True
    hang_ends = loop.time() + hang_seconds
    doors = asyncio.ensure_future(ask_doors(app, hang_ends))
    while loop.time() < hang_ends:
        started = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - started - 0.01)
        unhealthy_seen = unhealthy_seen or not daemon.healthy()[0]
    answers = await doors
    hang.down = False
    released = time.monotonic()
    while count("FILLED") < orders:
        await asyncio.sleep(0.01)
        if time.monotonic() - released > 120:
            break
    filled_after = time.monotonic() - released
    filled = count("FILLED")
    stop.set()
    await running
    app.close()
    lags.sort()
    return {"store": "own thread" if off_loop else "on the loop", "orders": orders,
            "hang_s": hang_seconds, "probe_wakeups": len(lags),
            "lag_p50_ms": round(statistics.median(lags) * 1000, 1),
            "lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1] * 1000, 1),
            "lag_max_ms": round(lags[-1] * 1000, 1),
            "healthz_503_during_hang": unhealthy_seen,
            "door_answers": len(answers),
            "door_answer_max_s": round(max(seconds for seconds, _ in answers), 2),
            "door_replies": sorted({reply for _, reply in answers}),
            "filled": filled, "all_filled_s_after_release": round(filled_after, 1)}


async def ask_doors(app, until: float) -> list[tuple[float, str]]:
    """GET /orders (the HTTP desk) and /status (the Telegram desk), one after the other, until
    `until`: (seconds to the answer, what it was) for each."""
    loop = asyncio.get_running_loop()
    desk = build_desk(app)
    operators = OperatorDesk(app.store, status_text(app.store, app.settings), app.clock,
                             commands=app.commands, store_thread=app.store_thread)
    answers = []
    while loop.time() < until:
        started = loop.time()
        try:
            await desk.orders(10)
            reply = "orders"
        except StoreUnavailable as e:
            reply = f"503 {str(e)[:40]}"
        answers.append((loop.time() - started, reply))
        started = loop.time()
        text = await operators.answer("status", [], "bench")
        answers.append((loop.time() - started, text[:48]))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--hang", type=float, default=8.0)
    parser.add_argument("--hang-call", type=float, default=3.0)
    args = parser.parse_args()
    for off_loop in (True, False):
        print(json.dumps(asyncio.run(measure(off_loop, args.orders, args.hang, args.hang_call))))


if __name__ == "__main__":
    main()
