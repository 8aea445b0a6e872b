"""Prometheus metrics for the order path, and a tiny HTTP server for /metrics and /healthz.

`Metrics` owns its own CollectorRegistry (never the global one), so every app and every test
has its own. Gauges are read from callables at scrape time (`bind`); the HTTP server runs in
a daemon thread, so those callables must only read plain attributes (no asyncio, no store).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from execution_service.domain.orders import TERMINAL_STATUSES
from execution_service.domain.reasons import REASON_CLASSES, RejectClass, reason_class
from execution_service.domain.records import as_utc, reject_class_of
from execution_service.errors import FatalConfigError

logger = logging.getLogger(__name__)

TERMINAL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BROKER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
Health = tuple[bool, str]

__all__ = ["Metrics", "MetricsServer", "reason_class", "REASON_CLASSES"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.orders = Counter("execution_orders", "Orders that reached a final status",
                              ["status"], registry=r)
        self.rejections = Counter("execution_rejections", "Rejected orders by kind of reason",
                                  ["reason_class"], registry=r)
        self.signal_to_terminal = Histogram(
            "execution_signal_to_terminal_seconds", "From signal received to final status",
            buckets=TERMINAL_BUCKETS, registry=r)
        self.broker_calls = Histogram("execution_broker_call_seconds", "Broker call latency",
                                      ["broker", "call"], buckets=BROKER_BUCKETS, registry=r)
        self.in_flight = Gauge("execution_orders_in_flight", "Orders being tracked", registry=r)
        self.outbox_backlog = Gauge("execution_outbox_backlog",
                                    "Confirmations waiting to be published", registry=r)
        self.telegram_dropped = Gauge("execution_telegram_dropped",
                                      "Telegram notifications dropped since start", registry=r)
        self.up = Gauge("execution_healthy", "1 when /healthz answers 200", registry=r)
        for status in TERMINAL_STATUSES:
            self.orders.labels(status=status)
        for name in REASON_CLASSES:
            self.rejections.labels(reason_class=name)
        self._health: Callable[[], Health] | None = None

    def order_terminal(self, status: str, reason: str | None, seconds: float | None,
                       reject_class: RejectClass | None = None) -> None:
        """An order reached FILLED, REJECTED or CANCELLED (call once per order). A rejection
        is counted by the class its rejecter gave; without one, the reason is the broker's."""
        status = str(status)
        self.orders.labels(status=status).inc()
        if status == "REJECTED":
            kind = reject_class or reason_class(reason)
            self.rejections.labels(reason_class=str(kind)).inc()
        if seconds is not None and seconds >= 0:
            self.signal_to_terminal.observe(seconds)

    def record_terminal(self, doc: dict) -> None:
        """`order_terminal` from a final execution record: received_at → closed_at."""
        received, closed = as_utc(doc.get("received_at")), as_utc(doc.get("closed_at"))
        seconds = (closed - received).total_seconds() if received and closed else None
        self.order_terminal(doc["status"], doc.get("reject_reason") or doc.get("cancel_reason"),
                            seconds, reject_class_of(doc))

    def broker_call(self, broker: str, call: str, seconds: float) -> None:
        self.broker_calls.labels(broker=str(broker), call=call).observe(seconds)

    @contextmanager
    def time_broker_call(self, broker: str, call: str) -> Iterator[None]:
        """`with metrics.time_broker_call(broker.name, "place_order"): await ...` (also on
        failure: a slow timeout is exactly what the histogram is for)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.broker_call(broker, call, time.perf_counter() - started)

    def bind(self, *, in_flight: Callable[[], float] | None = None,
             outbox_backlog: Callable[[], float] | None = None,
             telegram_dropped: Callable[[], float] | None = None,
             healthy: Callable[[], Health] | None = None) -> None:
        """Read these at scrape time. They run on the HTTP thread: plain reads only."""
        for gauge, read in ((self.in_flight, in_flight), (self.outbox_backlog, outbox_backlog),
                            (self.telegram_dropped, telegram_dropped)):
            if read is not None:
                gauge.set_function(_safe(read))
        if healthy is not None:
            self._health = healthy
            self.up.set_function(lambda: 1.0 if self.health()[0] else 0.0)

    def health(self) -> Health:
        """(healthy, reason); never raises."""
        if self._health is None:
            return False, "not started"
        try:
            ok, reason = self._health()
        except Exception as e:
            return False, f"health check failed: {type(e).__name__}: {e}"
        return bool(ok), reason or ("ok" if ok else "unhealthy")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _safe(read: Callable[[], float]) -> Callable[[], float]:
    """A failing callable must not fail the whole scrape: it reads as NaN instead."""

    def value() -> float:
        try:
            return float(read())
        except Exception:
            logger.debug("metrics callable %r failed", read, exc_info=True)
            return math.nan

    return value


class MetricsServer:
    """/metrics (Prometheus text format) and /healthz (200 `ok` or 503 with the reason)."""

    def __init__(self, metrics: Metrics, port: int, host: str = "0.0.0.0"):
        self.metrics = metrics
        self.host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MetricsServer:
        handler = type("Handler", (_Handler,), {"metrics": self.metrics})
        try:
            self._server = ThreadingHTTPServer((self.host, self._port), handler)
        except OSError as e:
            raise FatalConfigError(f"METRICS_PORT {self._port} on {self.host}: {e.strerror or e}"
                                   ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                        daemon=True)
        self._thread.start()
        logger.info("Metrics on %s/metrics, health on %s/healthz", self.url, self.url)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/metrics":
            self._reply(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, reason = self.metrics.health()
            self._reply(200 if ok else 503, f"{'ok' if ok else reason}\n".encode(),
                        "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        logger.debug("metrics http: " + format, *args)
