"""Reject reasons by kind, the metrics text, and /metrics and /healthz over real HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from execution_service.adapters.metrics import Metrics, MetricsServer
from execution_service.domain.reasons import REASON_CLASSES, reason_class
from execution_service.errors import FatalConfigError


@pytest.mark.parametrize("reason,expected", [
    # our validation (SPEC §3)
    ("quantity must be > 0, got 0", "validation"),
    ("side must be one of 'BUY' or 'SELL', got 'HOLD'", "validation"),
    ("limit_price is required for LIMIT orders", "validation"),
    ("field name '$where' is not allowed (no '$' prefix, no '.')", "validation"),
    ("stop_loss must be below the entry price 100 for a BUY, got 101", "validation"),
    ("account_id must be a string, got 5", "validation"),
    ("created_at must be an ISO-8601 timestamp, got 'yesterday'", "validation"),
    # the account registry
    ("account_id 'acc_nobody' is not a registered account", "account"),
    ("account_id 'acc_off' is disabled", "account"),
    ("symbol 'TSLA' is not in the allowed symbols of account 'acc_spy_only' (SPY)", "account"),
    # margin, funds and limits, whoever says so
    ("Insufficient margin (mock broker, MOCK_REJECT_RATE=1)", "risk"),
    ("IB error 201: Order rejected - reason: equity with loan value must exceed the initial "
     "margin", "risk"),
    ("Insufficient funds. Required margin is 95417.84 but available margin is 74251.80.", "risk"),
    ("max position limit exceeded for SPY", "risk"),
    # our pre-trade controls (domain/risk.py)
    ("order quantity 500 exceeds max_order_quantity 100", "risk"),
    ("position notional 25000.00 would exceed max_position_notional 20000.00", "risk"),
    ("orders in the last minute 5 reached max_orders_per_minute 5", "risk"),
    ("cannot check max_order_notional without a price; send limit_price, stop_price or "
     "reference_price", "risk"),
    ("limit_price 120.00 is 20.0% from reference_price 100.00, beyond the 10% price collar",
     "risk"),
    ("trading halted: fat finger on SPY (halt on account acc_main)", "halt"),
    # the broker's own refusals
    ("rejected by broker", "broker"),
    ("IBKR does not know the contract SPYX (EQUITY on SMART)", "broker"),
    ("IBKR order side must be BUY or SELL, got 'HOLD'", "broker"),
    ("quantity 1.5 is not supported by Zerodha (whole shares)", "broker"),
    ("IOC order not marketable at submission", "broker"),
    ("something nobody anticipated", "broker"),
    (None, "broker"),
    ("", "broker"),
    # the broker out of reach
    ("broker connection failed after 3 attempts: [Errno 111] Connection refused", "connection"),
    ("not sent: Kite session expired: renew KITE_ACCESS_TOKEN (Invalid access_token)",
     "connection"),
    ("IBKR API timed out", "connection"),
    # trading stopped
    ("trading halted by operator", "halt"),
    ("kill switch engaged", "halt"),
    ("Markets are closed right now. Use GTT for placing long standing orders", "halt"),
])
def test_given_a_reject_reason_then_its_class(reason, expected):
    assert reason_class(reason) == expected
    assert expected in REASON_CLASSES


def _series(text: str) -> dict[str, float]:
    rows = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, value in rows}


def test_given_orders_and_broker_calls_when_scraped_then_series_and_buckets():
    metrics = Metrics()
    metrics.order_terminal("FILLED", None, 0.3)
    metrics.order_terminal("REJECTED", "account_id 'x' is disabled", 0.01)
    metrics.order_terminal("CANCELLED", "timeout: not filled within 60s", 61.0)
    metrics.broker_call("MOCK", "place_order", 0.02)
    with metrics.time_broker_call("MOCK", "get_order"):
        pass
    series = _series(metrics.exposition().decode())

    assert series['execution_orders_total{status="FILLED"}'] == 1
    assert series['execution_orders_total{status="CANCELLED"}'] == 1
    assert series['execution_rejections_total{reason_class="account"}'] == 1
    assert series['execution_rejections_total{reason_class="broker"}'] == 0  # pre-declared
    assert series['execution_signal_to_terminal_seconds_count'] == 3
    assert series['execution_signal_to_terminal_seconds_bucket{le="0.5"}'] == 2
    assert series['execution_signal_to_terminal_seconds_bucket{le="+Inf"}'] == 3
    assert series['execution_broker_call_seconds_bucket{broker="MOCK",call="place_order",'
                  'le="0.025"}'] == 1
    assert series['execution_broker_call_seconds_count{broker="MOCK",call="get_order"}'] == 1


def test_given_a_final_record_then_observed_from_received_to_closed():
    metrics = Metrics()
    at = datetime(2024, 11, 24, 10, 30, tzinfo=UTC)
    metrics.record_terminal({"status": "REJECTED", "reject_reason": "Insufficient margin",
                             "received_at": at, "closed_at": at + timedelta(seconds=2)})
    series = _series(metrics.exposition().decode())
    assert series['execution_rejections_total{reason_class="risk"}'] == 1
    assert series['execution_signal_to_terminal_seconds_sum'] == 2.0


def test_given_bound_callables_then_gauges_read_at_scrape_time_and_failures_are_nan():
    metrics = Metrics()
    state = {"in_flight": 3}
    metrics.bind(in_flight=lambda: state["in_flight"], outbox_backlog=lambda: 1 / 0,
                 telegram_dropped=lambda: 7, healthy=lambda: (True, "ok"))
    state["in_flight"] = 5
    series = _series(metrics.exposition().decode())
    assert series["execution_orders_in_flight"] == 5
    assert series["execution_telegram_dropped"] == 7
    assert series["execution_healthy"] == 1
    assert series["execution_outbox_backlog"] != series["execution_outbox_backlog"]  # NaN


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.fixture
def served():
    metrics = Metrics()
    server = MetricsServer(metrics, 0, host="127.0.0.1").start()
    yield metrics, server
    server.stop()


def test_given_server_on_port_zero_then_metrics_over_http(served):
    metrics, server = served
    assert server.port > 0
    metrics.order_terminal("FILLED", None, 0.1)
    code, content_type, body = _get(f"http://127.0.0.1:{server.port}/metrics")
    assert code == 200 and content_type.startswith("text/plain")
    assert 'execution_orders_total{status="FILLED"} 1.0' in body
    assert _get(f"http://127.0.0.1:{server.port}/nothing")[0] == 404


def test_given_health_callable_then_healthz_200_or_503_with_reason(served):
    metrics, server = served
    url = f"http://127.0.0.1:{server.port}/healthz"
    assert _get(url)[0] == 503  # nothing bound yet: not started
    health = {"value": (True, "ok")}
    metrics.bind(healthy=lambda: health["value"])
    assert _get(url)[0::2] == (200, "ok\n")
    health["value"] = (False, "not consuming trading-orders")
    assert _get(url)[0::2] == (503, "not consuming trading-orders\n")
    metrics.bind(healthy=lambda: 1 / 0)
    code, _, body = _get(url)
    assert code == 503 and "ZeroDivisionError" in body


def test_given_port_in_use_then_one_clear_config_error(served):
    _, server = served
    with pytest.raises(FatalConfigError, match=f"METRICS_PORT {server.port}"):
        MetricsServer(Metrics(), server.port, host="127.0.0.1").start()


def test_given_stopped_server_then_port_released():
    server = MetricsServer(Metrics(), 0, host="127.0.0.1").start()
    port = server.port
    server.stop()
    again = MetricsServer(Metrics(), port, host="127.0.0.1").start()
    again.stop()
