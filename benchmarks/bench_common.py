"""Shared by the benchmark's phases: constants, percentiles, the signal a load generator
publishes, CPU meters."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import psutil

from execution_service.adapters.pubsub import PubSubNames
from execution_service.config import load_settings
from execution_service.domain.orders import TERMINAL_STATUSES

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGETS = {
    "ratio_mongomock": 0.30,
    "ratio_embedded": 0.25,
    "latency_p99_ms": 50.0,
    "rss_growth_mb": 20.0,
    "hot_share": 0.8,
    "latency_above_floor_p99_ms": 10.0,
}
ACCOUNT_ID = "acc_bench"
SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "AMZN", "META", "TSLA", "GOOG")
SPREAD, HOT = "spread", "hot"  # the throughput workloads
TERMINAL = TERMINAL_STATUSES


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def percentiles(values: list[float], prefix: str = "") -> dict:
    return {f"{prefix}p{pct}_ms": rounded(percentile(values, pct)) for pct in (50, 95, 99)}


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def names_for(project: str) -> PubSubNames:
    """The daemon's own topic/subscription names (defaults of SPEC §9) for this project."""
    return PubSubNames(load_settings(environ={"GOOGLE_CLOUD_PROJECT": project}))


def new_project(tag: str) -> str:
    return f"bench-{tag}-{uuid.uuid4().hex[:8]}"


def signal_body(signal_id: str, i: int, workload: str = SPREAD) -> bytes:
    """The i-th signal of a workload. SPREAD: MARKET BUY 1 over ten symbols. HOT: one symbol,
    sides in turn, quantities 1, 2, 1, ... so the one position opens, flips, closes (+1, -1,
    0, -1, +1, 0, ...): every fill moves it the costly way."""
    if workload == HOT:
        symbol, side, quantity = "SPY", ("BUY", "SELL")[i % 2], 2 if i % 3 == 1 else 1
    else:
        symbol, side, quantity = SYMBOLS[i % len(SYMBOLS)], "BUY", 1
    return json.dumps({
        "signal_id": signal_id, "order_type": "MARKET", "symbol": symbol,
        "side": side, "quantity": quantity, "account_id": ACCOUNT_ID,
        "strategy_name": "Bench Strategy", "reference_price": 100.0,
        "bench_sent_at": time.time(),
    }, separators=(",", ":")).encode()


def cpu_seconds(process: psutil.Process | None, include_children: bool = False) -> float:
    if process is None:
        return 0.0
    try:
        procs = [process] + (process.children(recursive=True) if include_children else [])
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0.0


class CpuMeter:
    """CPU seconds used by the daemon, the emulator and this load generator over a window."""

    def __init__(self, daemon_pid: int | None, emulator_pid: int | None):
        self.daemon = psutil.Process(daemon_pid) if daemon_pid else None
        self.emulator = psutil.Process(emulator_pid) if emulator_pid else None
        self.me = psutil.Process()
        self._start = self._read()
        self._t0 = time.perf_counter()

    def _read(self) -> tuple[float, float, float]:
        return (cpu_seconds(self.daemon), cpu_seconds(self.emulator, include_children=True),
                cpu_seconds(self.me))

    def stop(self) -> dict:
        elapsed = time.perf_counter() - self._t0
        end = self._read()
        used = [b - a for a, b in zip(self._start, end, strict=True)]
        return {"daemon_cpu_s": round(used[0], 3), "emulator_cpu_s": round(used[1], 3),
                "loadgen_cpu_s": round(used[2], 3),
                "daemon_cpu_pct": round(100 * used[0] / elapsed, 1) if elapsed else None,
                "emulator_cpu_pct": round(100 * used[1] / elapsed, 1) if elapsed else None,
                "loadgen_cpu_pct": round(100 * used[2] / elapsed, 1) if elapsed else None}
