"""End-to-end benchmark of the execution service (issue 7).

One run starts Google's Pub/Sub emulator on a free port and measures:

  baseline   the emulator and the same client library moving N bare messages
             (publish -> streaming pull -> ack), msgs/s
  pipeline   N signals through a real daemon process (`python -m execution_service run`)
             until N FILLED confirmations arrive on a subscription of
             `execution-confirmations`, signals/s; once on mongomock://, once on the
             embedded store
  latency    publish -> FILLED confirmation received, p50/p95/p99, at a steady rate
             (default 100 signals/s for 10 s) on mongomock://
  memory     (--full only) the daemon's RSS after a warm-up and after 10,000 and 50,000
             signals

and prints a table with the targets. See benchmarks/README.md.

    /work/venv/bin/python benchmarks/pipeline.py                 # default, < 3 minutes
    /work/venv/bin/python benchmarks/pipeline.py --only pipeline --store mongomock --n 500
    /work/venv/bin/python benchmarks/pipeline.py --full --out benchmarks/results/full.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import psutil
from google.cloud import pubsub_v1

from execution_service.adapters.emulator import start_emulator
from execution_service.adapters.pubsub import PubSubNames, make_publisher, setup_pubsub
from execution_service.config import load_settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PHASES = ("baseline", "pipeline", "latency", "memory")
TARGETS = {
    "ratio_mongomock": 0.25,
    "ratio_embedded": 0.15,
    "latency_p99_ms": 50.0,
    "rss_growth_mb": 20.0,
}
ACCOUNT_ID = "acc_bench"
SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "AMZN", "META", "TSLA", "GOOG")
TERMINAL = ("FILLED", "REJECTED", "CANCELLED")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# helpers


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def names_for(project: str) -> PubSubNames:
    """The daemon's own topic/subscription names (defaults of SPEC §9) for this project."""
    return PubSubNames(load_settings(environ={"GOOGLE_CLOUD_PROJECT": project}))


def new_project(tag: str) -> str:
    return f"bench-{tag}-{uuid.uuid4().hex[:8]}"


def signal_body(signal_id: str, i: int) -> bytes:
    return json.dumps({
        "signal_id": signal_id, "order_type": "MARKET", "symbol": SYMBOLS[i % len(SYMBOLS)],
        "side": "BUY", "quantity": 1, "account_id": ACCOUNT_ID,
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


# --------------------------------------------------------------------------------------------
# confirmations listener (streaming pull in the load generator)


def _event_time(data: bytes) -> float | None:
    """The confirmation's `at` (when the daemon recorded the event), as epoch seconds."""
    try:
        at = json.loads(data).get("at")
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() if at else None
    except (ValueError, AttributeError, TypeError):
        return None


def _split_ms(ids, sent_wall: dict[str, float], listener) -> dict:
    """publish -> FILLED recorded by the daemon, and FILLED recorded -> received here."""
    inbound = [(listener.filled_event_at[s] - sent_wall[s]) * 1000 for s in ids
               if s in listener.filled_event_at and s in sent_wall]
    outbound = [(listener.filled_recv_wall[s] - listener.filled_event_at[s]) * 1000
                for s in ids if s in listener.filled_event_at]
    return {"to_filled_recorded_p50_ms": _r(percentile(inbound, 50)),
            "to_filled_recorded_p99_ms": _r(percentile(inbound, 99)),
            "recorded_to_received_p50_ms": _r(percentile(outbound, 50)),
            "recorded_to_received_p99_ms": _r(percentile(outbound, 99))}


def subscribe_streams(subscriber, subscription: str, callback, streams: int,
                      flow=None) -> list:
    """`streams` streaming pulls on one subscription, opened a fraction of the emulator's
    50 ms delivery tick apart (as the daemon's OrderConsumer does), so they take turns."""
    futures = []
    for n in range(streams):
        if n:
            time.sleep(0.05 / streams)
        futures.append(subscriber.subscribe(subscription, callback, flow_control=flow)
                       if flow is not None else subscriber.subscribe(subscription, callback))
    return futures


def close_streams(futures: list) -> None:
    for future in futures:
        future.cancel()
    for future in futures:
        with contextlib.suppress(Exception):  # cancelled: stopped
            future.result(timeout=5)


class ConfirmationListener:
    """Streaming pull on a subscription of execution-confirmations; records, per signal, when
    its first SUBMITTED and first terminal confirmation arrived (perf_counter)."""

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, subscription: str,
                 streams: int = 1):
        self._lock = threading.Lock()
        self.filled_at: dict[str, float] = {}
        self.submitted_at: dict[str, float] = {}
        self.terminal_status: dict[str, str] = {}
        self.filled_event_at: dict[str, float] = {}  # the daemon's FILLED time (epoch)
        self.filled_recv_wall: dict[str, float] = {}  # when it reached us (epoch)
        self.statuses: Counter = Counter()
        self.messages = 0
        self._waiting: set[str] = set()
        self._done = threading.Event()
        flow = pubsub_v1.types.FlowControl(max_messages=5000)
        self._futures = subscribe_streams(subscriber, subscription, self._callback, streams,
                                          flow)

    def _callback(self, message) -> None:
        now = time.perf_counter()
        wall = time.time()
        message.ack()
        attributes = message.attributes
        signal_id = attributes.get("signal_id", "")
        status = attributes.get("status", "")
        with self._lock:
            self.messages += 1
            self.statuses[status] += 1
            if status == "SUBMITTED":
                self.submitted_at.setdefault(signal_id, now)
            elif status in TERMINAL and signal_id not in self.terminal_status:
                self.terminal_status[signal_id] = status
                if status == "FILLED":
                    self.filled_at[signal_id] = now
                    self.filled_recv_wall[signal_id] = wall
                    event_at = _event_time(message.data)
                    if event_at is not None:
                        self.filled_event_at[signal_id] = event_at
                if signal_id in self._waiting:
                    self._waiting.discard(signal_id)
                    if not self._waiting:
                        self._done.set()

    def expect(self, signal_ids) -> None:
        """Start waiting for these signals to reach a terminal status."""
        with self._lock:
            self._waiting = {s for s in signal_ids if s not in self.terminal_status}
            if self._waiting:
                self._done.clear()
            else:
                self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def terminal_count(self, signal_ids) -> int:
        with self._lock:
            return sum(1 for s in signal_ids if s in self.terminal_status)

    def close(self) -> None:
        close_streams(self._futures)


# --------------------------------------------------------------------------------------------
# the daemon process


class Daemon:
    """`python -m execution_service run` as a child process in its own temp directory."""

    def __init__(self, workdir: Path, env: dict[str, str], counting: bool = False):
        self.workdir = workdir
        self.env = env
        self.counting = counting
        self.output = workdir / "daemon.out"
        self.stats_file = workdir / "store-stats.json"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Daemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.counting:
            command = [sys.executable, str(HERE / "counting_daemon.py")]
            self.env["BENCH_STORE_STATS"] = str(self.stats_file)
        else:
            command = [sys.executable, "-m", "execution_service", "run"]
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen(command, cwd=self.workdir, env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n"
                                   f"{self.read_output()[-3000:]}")
            if "Running." in self.read_output():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"daemon did not start within {timeout}s:\n"
                           f"{self.read_output()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_output(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def rss_mb(self) -> float:
        return psutil.Process(self.pid).memory_info().rss / 2**20

    def store_stats(self, timeout: float = 5.0) -> dict | None:
        """Store-call counters from the instrumented daemon (None when not instrumented)."""
        snapshot = self.instrument_snapshot(timeout)
        return None if snapshot is None else snapshot["stats"]

    def instrument_snapshot(self, timeout: float = 5.0) -> dict | None:
        """Ask the instrumented daemon (counting_daemon.py) for a snapshot."""
        if not self.counting or self.process is None or self.process.poll() is not None:
            return None
        before = self.stats_file.stat().st_mtime_ns if self.stats_file.exists() else 0
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats_file.exists() and self.stats_file.stat().st_mtime_ns != before:
                with contextlib.suppress(ValueError):
                    return json.loads(self.stats_file.read_text())
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL; only the process this object started."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def daemon_env(emulator_host: str, project: str, workdir: Path, store: str,
               poll_seconds: float, log_level: str = "WARNING",
               streams: int = 1) -> dict[str, str]:
    accounts = workdir / "accounts.json"
    workdir.mkdir(parents=True, exist_ok=True)
    accounts.write_text(json.dumps([{"account_id": ACCOUNT_ID, "broker": "MOCK",
                                     "enabled": True, "display_name": "Bench Paper"}]))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MONGODB_", "TELEGRAM_", "MOCK_", "KITE_", "IBKR_"))}
    env.update({
        "PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
        "ACCOUNTS_FILE": str(accounts), "MOCK_FILL_DELAY_SECONDS": "0",
        "ORDER_POLL_SECONDS": str(poll_seconds), "TELEGRAM_ENABLED": "false",
        "LOG_LEVEL": log_level, "USE_MOCK_BROKER": "true", "PUBSUB_STREAMS": str(streams),
    })
    if store == "mongomock":
        env["MONGODB_URI"] = "mongomock://"
    # embedded: MONGODB_URI unset, cwd = workdir -> ./data
    return env


class Profiler:
    """py-spy record on the daemon's pid over a window (raw collapsed stacks, per thread)."""

    def __init__(self, pid: int, output: Path, rate: int = 100, gil: bool = False):
        self.output = output
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                   "--output", str(output), "--threads", "--nonblocking"]
        if gil:
            command.append("--gil")
        with open(output.with_suffix(".log"), "wb") as errors:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)

    def stop(self) -> Path | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.output if self.output.exists() else None


# --------------------------------------------------------------------------------------------
# phases


def bare_channel(prefix: str, name: str):
    """A fresh project's topic and subscription for bare messages, with their clients."""
    project = new_project(prefix)
    publisher = make_publisher()
    subscriber = pubsub_v1.SubscriberClient()
    topic = f"projects/{project}/topics/bench-{name}"
    subscription = f"projects/{project}/subscriptions/bench-{name}-sub"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    return publisher, subscriber, topic, subscription


def run_baseline(n: int, timeout: float, emulator_pid: int | None = None,
                 streams: int = 1) -> dict:
    """Bare messages: publish (batched, futures) -> streaming pull -> ack, one process."""
    publisher, subscriber, topic, subscription = bare_channel("base", "bare")
    lock = threading.Lock()
    seen: set[bytes] = set()
    latencies: list[float] = []
    done = threading.Event()
    last = [0.0]

    def callback(message) -> None:
        now = time.perf_counter()
        message.ack()
        key = message.data[:24]
        with lock:
            if key in seen:
                return
            seen.add(key)
            sent = float(message.attributes.get("t", "0"))
            latencies.append(now - sent)
            if len(seen) >= n:
                last[0] = now
                done.set()

    flow = pubsub_v1.types.FlowControl(max_messages=5000)
    futures = subscribe_streams(subscriber, subscription, callback, streams, flow)
    try:
        time.sleep(1.0)  # let the streams open before the clock starts
        padding = signal_body("x", 0)  # bare messages of the same size as a signal
        meter = CpuMeter(None, emulator_pid)
        t0 = time.perf_counter()
        futures = []
        for i in range(n):
            data = f"{i:024d}".encode() + padding
            futures.append(publisher.publish(topic, data, t=repr(time.perf_counter())))
        concurrent.futures.wait(futures, timeout=timeout)
        published_at = time.perf_counter()
        finished = done.wait(max(1.0, timeout - (published_at - t0)))
        end = last[0] if finished else time.perf_counter()
        elapsed = end - t0
        cpu = meter.stop()
        with lock:
            received = len(seen)
        return {"n": n, "received": received, "complete": finished,
                "emulator_cpu_s": cpu["emulator_cpu_s"], "loadgen_cpu_s": cpu["loadgen_cpu_s"],
                "emulator_cpu_ms_per_msg": round(1000 * cpu["emulator_cpu_s"] / max(1, received),
                                                 3),
                "loadgen_cpu_ms_per_msg": round(1000 * cpu["loadgen_cpu_s"] / max(1, received),
                                                3),
                "elapsed_s": round(elapsed, 3),
                "publish_s": round(published_at - t0, 3),
                "msgs_per_s": round(received / elapsed, 1) if elapsed else None,
                "streams": streams}
    finally:
        close_streams(futures)
        subscriber.close()


def _setup_rig(project: str, streams: int) -> tuple[PubSubNames, pubsub_v1.PublisherClient,
                                      pubsub_v1.SubscriberClient, ConfirmationListener]:
    names = names_for(project)
    publisher = make_publisher()
    subscriber = pubsub_v1.SubscriberClient()
    setup_pubsub(names, publisher, subscriber)
    confirmations = f"projects/{project}/subscriptions/bench-confirmations"
    subscriber.create_subscription(name=confirmations, topic=names.confirmations_topic,
                                   ack_deadline_seconds=60)
    listener = ConfirmationListener(subscriber, confirmations, streams)
    return names, publisher, subscriber, listener


def _publish_all(publisher, topic: str, ids: list[str], offset: int = 0,
                 sent_wall: dict[str, float] | None = None) -> list:
    futures = []
    for i, signal_id in enumerate(ids):
        if sent_wall is not None:
            sent_wall[signal_id] = time.time()
        futures.append(publisher.publish(topic, signal_body(signal_id, offset + i)))
    return futures


def _warm_up(publisher, names, listener, count: int, tag: str, timeout: float = 60.0) -> bool:
    ids = [f"warm-{tag}-{i}" for i in range(count)]
    listener.expect(ids)
    concurrent.futures.wait(_publish_all(publisher, names.orders_topic, ids), timeout=30)
    return listener.wait(timeout)


def _deciles(ids: list[str], received: dict[str, float], t0: float) -> list[float | None]:
    """signals/s within each tenth of the run (by completion order): shows slow-down."""
    times = sorted(received[s] for s in ids if s in received)
    if len(times) < 10:
        return []
    rates, previous = [], t0
    step = len(times) / 10
    for k in range(1, 11):
        index = int(round(k * step)) - 1
        t = times[index]
        count = int(round(k * step)) - int(round((k - 1) * step))
        rates.append(round(count / (t - previous), 1) if t > previous else None)
        previous = t
    return rates


def _steady_rate(ids: list[str], received: dict[str, float]) -> float | None:
    """signals/s from the 10th to the last fill: the rate once the pipe is full."""
    times = sorted(received[s] for s in ids if s in received)
    if len(times) < 20:
        return None
    start = times[len(times) // 10]
    span = times[-1] - start
    return round((len(times) - 1 - len(times) // 10) / span, 1) if span > 0 else None


def _diff_stats(before: dict | None, after: dict | None, signals: int) -> dict | None:
    if after is None:
        return None
    before = before or {}
    rows = {}
    for key, value in after.items():
        calls = value["calls"] - before.get(key, {}).get("calls", 0)
        seconds = value["seconds"] - before.get(key, {}).get("seconds", 0.0)
        if calls:
            rows[key] = {"calls": calls, "per_signal": round(calls / signals, 3),
                         "seconds": round(seconds, 4),
                         "us_per_call": round(1e6 * seconds / calls, 1)}
    total_calls = sum(r["calls"] for r in rows.values())
    total_seconds = sum(r["seconds"] for r in rows.values())
    return {"per_signal": round(total_calls / signals, 2),
            "store_seconds_per_signal_ms": round(1000 * total_seconds / signals, 3),
            "by_call": dict(sorted(rows.items(), key=lambda kv: -kv[1]["seconds"]))}


def run_pipeline(store: str, n: int, args, emulator) -> dict:
    project = new_project(f"pipe-{store}")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{store}-", dir=args.tmp))
    names, publisher, subscriber, listener = _setup_rig(project, args.streams)
    daemon = Daemon(workdir, daemon_env(emulator.host, project, workdir, store,
                                        args.poll_seconds, args.log_level, args.streams),
                    counting=args.count_store)
    profiler = None
    try:
        daemon.start()
        log(f"pipeline[{store}]: daemon pid {daemon.pid} in {workdir}")
        if not _warm_up(publisher, names, listener, args.warmup, store):
            raise RuntimeError(f"warm-up signals did not fill; daemon output:\n"
                               f"{daemon.read_output()[-3000:]}")
        before = daemon.instrument_snapshot()
        stats_before = before["stats"] if before else None
        if args.profile:
            profiler = Profiler(daemon.pid, Path(args.profile) / f"pipeline-{store}.txt",
                                gil=args.profile_gil)
            time.sleep(0.5)
        ids = [f"pipe-{store}-{i}" for i in range(n)]
        listener.expect(ids)
        meter = CpuMeter(daemon.pid, emulator.process.pid)
        t0 = time.perf_counter()
        sent_wall: dict[str, float] = {}
        futures = _publish_all(publisher, names.orders_topic, ids, sent_wall=sent_wall)
        concurrent.futures.wait(futures, timeout=args.phase_timeout)
        published_at = time.perf_counter()
        complete = listener.wait(max(1.0, args.phase_timeout - (published_at - t0)))
        cpu = meter.stop()
        done_ids = [s for s in ids if s in listener.filled_at]
        end = max((listener.filled_at[s] for s in done_ids), default=time.perf_counter()) \
            if complete else time.perf_counter()
        elapsed = end - t0
        profile_path = profiler.stop() if profiler else None
        profiler = None
        stats_after = daemon.store_stats()
        internal = _internal_latency(daemon, ids, before)
        other = Counter(listener.terminal_status[s] for s in ids
                        if listener.terminal_status.get(s, "FILLED") != "FILLED")
        latencies = [listener.filled_at[s] - t0 for s in done_ids]  # under saturation
        result = {
            "store": store, "n": n, "filled": len(done_ids), "complete": complete,
            "not_filled": dict(other), "elapsed_s": round(elapsed, 3),
            "publish_s": round(published_at - t0, 3),
            "signals_per_s": round(len(done_ids) / elapsed, 1) if elapsed else None,
            "deciles_signals_per_s": _deciles(ids, listener.filled_at, t0),
            "steady_signals_per_s": _steady_rate(ids, listener.filled_at),
            "time_to_first_fill_s": round(min(latencies), 3) if latencies else None,
            "confirmations_received": listener.messages, **cpu,
            **_split_ms(ids, sent_wall, listener), **internal,
            "daemon_rss_mb": round(daemon.rss_mb(), 1),
            "store_calls": _diff_stats(stats_before, stats_after, n),
            "profile": str(profile_path) if profile_path else None,
        }
        if result["daemon_cpu_s"] and len(done_ids):
            result["daemon_cpu_ms_per_signal"] = round(1000 * result["daemon_cpu_s"]
                                                       / len(done_ids), 3)
        warnings = [line for line in daemon.read_output().splitlines()
                    if " | " in line][-5:]
        result["daemon_log_tail"] = warnings
        return result
    finally:
        _tear_down(args, workdir, listener, daemon, subscriber, profiler)


def _timed_hops(publisher, topic: str, subscriber, subscription: str, rate: float,
                seconds: float, streams: int) -> dict:
    """Bare messages published to `topic` at `rate`, timed until they arrive on
    `subscription` (directly, or through a relay)."""
    lock = threading.Lock()
    latencies: dict[str, float] = {}

    def callback(message) -> None:
        now = time.perf_counter()
        message.ack()
        with lock:
            key = message.attributes.get("k", "")
            if key not in latencies:
                latencies[key] = now - float(message.attributes["t"])

    futures = subscribe_streams(subscriber, subscription, callback, streams)
    try:
        time.sleep(1.0)
        total = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(total):
            target = t0 + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            publisher.publish(topic, b"x" * 250, k=str(i), t=repr(time.perf_counter()))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(latencies) >= total:
                    break
            time.sleep(0.05)
        values = [v * 1000 for v in latencies.values()]
        return {"messages": total, "received": len(values),
                **_percentiles(values), "streams": streams}
    finally:
        close_streams(futures)


def run_transport_floor(rate: float, seconds: float, streams: int = 1) -> dict:
    """One bare hop (publish -> streaming-pull receipt) at the latency phase's rate."""
    publisher, subscriber, topic, subscription = bare_channel("hop", "hop")
    try:
        return _timed_hops(publisher, topic, subscriber, subscription, rate, seconds, streams)
    finally:
        subscriber.close()


def run_two_hop_floor(rate: float, seconds: float, streams: int = 1) -> dict:
    """A signal's path with a daemon that does nothing (relay.py: the daemon's Pub/Sub
    adapters, republishing each message at once) in place of the daemon."""
    publisher, subscriber, topic_in, subscription_in = bare_channel("relay", "in")
    project = subscription_in.split("/")[1]
    topic_out = f"projects/{project}/topics/bench-out"
    subscription_out = f"projects/{project}/subscriptions/bench-out-sub"
    publisher.create_topic(name=topic_out)
    subscriber.create_subscription(name=subscription_out, topic=topic_out,
                                   ack_deadline_seconds=60)
    relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("relay.py")),
                              subscription_in, topic_out, str(streams)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        if relay.stdout is None or b"relaying" not in relay.stdout.readline():
            raise RuntimeError("relay.py did not start")
        result = _timed_hops(publisher, topic_in, subscriber, subscription_out, rate, seconds,
                             streams)
        return {**result, "relay_cpu_s": _r(cpu_seconds(psutil.Process(relay.pid)), 2)}
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=10)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait(timeout=10)
        subscriber.close()


def _tear_down(args, workdir: Path, listener, daemon, subscriber, profiler=None) -> None:
    """Stop what a phase started (only that) and remove its temp dir unless --keep."""
    if profiler:
        profiler.stop()
    listener.close()
    daemon.stop()
    subscriber.close()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


def _percentiles(values: list[float], prefix: str = "") -> dict:
    return {f"{prefix}p{pct}_ms": _r(percentile(values, pct)) for pct in (50, 95, 99)}


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _stall_diff(before: dict | None, after: dict | None) -> dict | None:
    """Event-loop stalls (> 50 ms without a tick) over the window, with the sampled stacks."""
    if not after or "stalls" not in after:
        return None
    old = (before or {}).get("stalls") or {"count": 0, "total_s": 0.0, "sampled_stacks": []}
    new = after["stalls"]
    counts = dict(map(tuple, old["sampled_stacks"]))
    stacks = [[key, n - counts.get(key, 0)] for key, n in new["sampled_stacks"]
              if n - counts.get(key, 0) > 0]
    return {"count": new["count"] - old["count"],
            "total_s": round(new["total_s"] - old["total_s"], 3), "max_ms_ever": new["max_ms"],
            "sampled_stacks": sorted(stacks, key=lambda kv: -kv[1])[:15]}


def _internal_latency(daemon: Daemon, ids: list[str], before: dict | None = None) -> dict:
    """The daemon's own share (instrumented daemons only): Pub/Sub client hands the signal
    over -> its FILLED confirmation accepted by Pub/Sub; and the loop stalls meanwhile."""
    snapshot = daemon.instrument_snapshot()
    if not snapshot:
        return {}
    values = [snapshot["internal_ms"][s] for s in ids if s in snapshot["internal_ms"]]
    stages = snapshot.get("stages_ms", {})
    by_stage = {}
    for stage in ("claimed", "recorded", "publishing", "accepted"):
        times = [stages[s][stage] for s in ids if stage in stages.get(s, {})]
        by_stage[stage] = [_r(percentile(times, 50)), _r(percentile(times, 99))]
    return {"loop_stalls": _stall_diff(before, snapshot), "daemon_internal_n": len(values),
            "daemon_stages_p50_p99_ms": by_stage,
            **_percentiles(values, "daemon_internal_")}


def run_latency(args, emulator) -> dict:
    project = new_project("lat")
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-", dir=args.tmp))
    names, publisher, subscriber, listener = _setup_rig(project, args.latency_streams)
    daemon = Daemon(workdir, daemon_env(emulator.host, project, workdir, args.latency_store,
                                        args.poll_seconds, args.log_level, args.latency_streams),
                    counting=args.count_store)
    profiler = None
    try:
        daemon.start()
        log(f"latency[{args.latency_store}]: daemon pid {daemon.pid}; {args.rate:g} signals/s for "
            f"{args.latency_seconds:g}s")
        if not _warm_up(publisher, names, listener, args.warmup, "lat"):
            raise RuntimeError("warm-up signals did not fill")
        if args.profile:
            profiler = Profiler(daemon.pid, Path(args.profile) / "latency.txt",
                                gil=args.profile_gil)
            time.sleep(0.5)
        total = int(args.rate * args.latency_seconds)
        ids = [f"lat-{i}" for i in range(total)]
        before = daemon.instrument_snapshot()
        listener.expect(ids)
        sent: dict[str, float] = {}
        sent_wall: dict[str, float] = {}
        meter = CpuMeter(daemon.pid, emulator.process.pid)
        t0 = time.perf_counter()
        behind = 0.0
        for i, signal_id in enumerate(ids):
            target = t0 + i / args.rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                behind = max(behind, -delay)
            sent[signal_id] = time.perf_counter()
            sent_wall[signal_id] = time.time()
            publisher.publish(names.orders_topic, signal_body(signal_id, i))
        send_window = time.perf_counter() - t0
        complete = listener.wait(args.latency_drain)
        cpu = meter.stop()
        internal = _internal_latency(daemon, ids, before)
        if profiler:
            profiler.stop()
            profiler = None
        values = [(listener.filled_at[s] - sent[s]) * 1000 for s in ids
                  if s in listener.filled_at]
        submitted = [(listener.submitted_at[s] - sent[s]) * 1000 for s in ids
                     if s in listener.submitted_at]
        return {
            "rate_per_s": args.rate, "seconds": args.latency_seconds, "signals": total,
            "filled": len(values), "complete": complete,
            "achieved_send_rate": round(total / send_window, 1) if send_window else None,
            "max_send_lag_ms": round(behind * 1000, 1),
            **_percentiles(values), "max_ms": _r(max(values, default=None)),
            "submitted_p50_ms": _r(percentile(submitted, 50)),
            "submitted_p99_ms": _r(percentile(submitted, 99)), **cpu,
            **_split_ms(ids, sent_wall, listener), "store": args.latency_store, **internal,
        }
    finally:
        _tear_down(args, workdir, listener, daemon, subscriber, profiler)


def run_memory(args, emulator) -> dict:
    """RSS after a warm-up and at checkpoints, feeding with a bounded backlog."""
    store = args.memory_store
    project = new_project(f"mem-{store}")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-memory-{store}-", dir=args.tmp))
    names, publisher, subscriber, listener = _setup_rig(project, args.streams)
    daemon = Daemon(workdir, daemon_env(emulator.host, project, workdir, store,
                                        args.poll_seconds, streams=args.streams),
                    counting=False)
    checkpoints = sorted({args.memory_warmup, *args.memory_checkpoints})
    samples: list[dict] = []
    try:
        daemon.start()
        log(f"memory[{store}]: daemon pid {daemon.pid}; checkpoints {checkpoints}")
        published, offset, window, chunk = 0, 0, 2000, 500
        ids_all: list[str] = []
        t_start = time.perf_counter()
        last_t, last_n = t_start, 0
        for checkpoint in checkpoints:
            while published < checkpoint:
                done = len(listener.terminal_status)  # only this phase's signals here
                if published - done >= window:
                    time.sleep(0.05)
                    if time.perf_counter() - t_start > args.memory_timeout:
                        raise TimeoutError(f"memory phase exceeded {args.memory_timeout}s at "
                                           f"{published} signals")
                    continue
                count = min(chunk, checkpoint - published)
                ids = [f"mem-{offset + i}" for i in range(count)]
                ids_all.extend(ids)
                concurrent.futures.wait(_publish_all(publisher, names.orders_topic, ids,
                                                     offset), timeout=60)
                published += count
                offset += count
            listener.expect(ids_all[-window * 2:])
            if not listener.wait(max(10.0, args.memory_timeout
                                     - (time.perf_counter() - t_start))):
                raise TimeoutError(f"signals up to {checkpoint} did not all finish")
            time.sleep(2.0)  # let the outbox mark the last confirmations published
            now = time.perf_counter()
            proc = psutil.Process(daemon.pid)
            info = proc.memory_info()
            sample = {"signals": checkpoint, "rss_mb": round(info.rss / 2**20, 1),
                      "vms_mb": round(info.vms / 2**20, 1), "threads": proc.num_threads(),
                      "open_files": len(proc.open_files()),
                      "signals_per_s_since_last": round((checkpoint - last_n) / (now - last_t
                                                                                 - 2.0), 1),
                      "elapsed_s": round(now - t_start, 1)}
            samples.append(sample)
            log(f"memory[{store}]: {sample}")
            last_t, last_n = now, checkpoint
        by_n = {s["signals"]: s["rss_mb"] for s in samples}
        first, last = args.memory_checkpoints[0], args.memory_checkpoints[-1]
        growth = by_n[last] - by_n[first] if first in by_n and last in by_n else None
        return {"store": store, "samples": samples,
                "not_filled": dict(Counter(listener.terminal_status[s] for s in ids_all
                                           if listener.terminal_status.get(s) != "FILLED"
                                           and s in listener.terminal_status)),
                "rss_growth_mb": _r(growth), "growth_between": [first, last]}
    finally:
        _tear_down(args, workdir, listener, daemon, subscriber)


# --------------------------------------------------------------------------------------------
# profile summary (py-spy raw/collapsed output)


PROJECT_PREFIXES = ("execution_service/", "brokers/")
PROJECT_ROOTS = ("execution_service/cli.py", "execution_service/run.py",
                 "execution_service/__main__.py")


def _frames(stack: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(thread label, [(function, short file, line)]) of one collapsed py-spy stack."""
    parts = stack.split(";")
    thread = "?"
    frames = []
    for part in parts:
        if part.startswith(("thread ", "process ")):
            thread = part
            continue
        name, _, where = part.partition(" (")
        filename, _, line = where.rstrip(")").rpartition(":")
        frames.append((name, filename, line))
    return thread, frames


def summarize_profile(path: Path, top: int = 25) -> dict:
    """Shares of the samples: per thread; per function (self and inclusive); per function of
    the service itself (execution_service/, brokers/); and where the service's code hands over
    to a library (deepest service frame with its line -> the library function it called)."""
    threads: Counter = Counter()
    inclusive: Counter = Counter()
    own: Counter = Counter()
    project: Counter = Counter()
    handoff: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        total += count
        thread, frames = _frames(stack)
        threads[thread.split(": ", 1)[-1] if ": " in thread else thread] += count
        names = [f"{n} ({'/'.join(f.split('/')[-2:])})" for n, f, _ in frames]
        for name in set(names):
            inclusive[name] += count
        if names:
            own[names[-1]] += count
        mine = [(i, fr) for i, fr in enumerate(frames) if fr[1].startswith(PROJECT_PREFIXES)
                and fr[1] not in PROJECT_ROOTS]
        for name in {f"{n} ({f})" for _, (n, f, _) in mine}:
            project[name] += count
        if mine:
            i, (n, f, ln) = mine[-1]
            below = frames[i + 1] if i + 1 < len(frames) else None
            callee = f" -> {below[0]} ({'/'.join(below[1].split('/')[-2:])})" if below else \
                " (self)"
            handoff[f"{n} ({f}:{ln}){callee}"] += count
        else:
            handoff[f"[no service frame] {thread.split(': ', 1)[-1]}"] += count

    def share(counter: Counter, limit: int = top) -> list[tuple[str, float]]:
        return [(name, round(100 * value / total, 1)) for name, value in
                counter.most_common(limit)] if total else []

    return {"samples": total, "threads": share(threads, 10), "self": share(own),
            "inclusive": share(inclusive), "service_inclusive": share(project),
            "handoff": share(handoff)}


# --------------------------------------------------------------------------------------------
# report


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


Row = tuple[str, str, str, str]


def _pipeline_rows(store: str, pipe: dict, base_rate: float | None) -> list[Row]:
    rate = pipe["signals_per_s"]
    extra = "" if pipe["complete"] else f" ({pipe['filled']}/{pipe['n']} in time)"
    rows = [(f"pipeline {store}: signals/s", f"{rate:,.1f}{extra}", "info", "-")]
    if base_rate:
        ratio = rate / base_rate
        target = TARGETS[f"ratio_{store}"]
        pipe["ratio"] = round(ratio, 3)
        rows.append((f"ratio {store} (signals/s / msgs/s)", f"{ratio:.3f}", f">= {target}",
                     verdict(ratio >= target and pipe["complete"])))
    optional = [
        ("daemon_cpu_ms_per_signal", f"  daemon CPU {store}",
         lambda v: f"{v:.2f} ms/signal ({pipe['daemon_cpu_pct']:.0f}% of a core)"
         + ("" if pipe["complete"] else "; per FILLED received, run incomplete")),
        ("steady_signals_per_s", f"  {store} steady (10%..100% of fills)",
         lambda v: f"{v:,.1f} signals/s"),
        ("deciles_signals_per_s", f"  {store} first/last tenth",
         lambda v: f"{v[0]} / {v[-1]} signals/s"),
        ("recorded_to_received_p50_ms", f"  {store} FILLED recorded -> received p50",
         lambda v: f"{v:,.0f} ms (outbox wait + hop)"),
        ("store_calls", f"  store calls {store}",
         lambda v: f"{v['per_signal']} /signal, {v['store_seconds_per_signal_ms']} ms/signal"),
    ]
    for key, label, show in optional:
        if pipe.get(key):
            rows.append((label, show(pipe[key]), "info", "-"))
    return rows


def _latency_rows(lat: dict, floor: dict | None, two_hops: dict | None) -> list[Row]:
    ok = lat["p99_ms"] is not None and lat["p99_ms"] <= TARGETS["latency_p99_ms"] \
        and lat["complete"]
    rows = [
        ("latency p50 (publish->FILLED)", f"{lat['p50_ms']} ms", "info", "-"),
        ("latency p95", f"{lat['p95_ms']} ms", "info", "-"),
        ("latency p99", f"{lat['p99_ms']} ms (max {lat['max_ms']})",
         f"<= {TARGETS['latency_p99_ms']:g} ms", verdict(ok)),
        ("  at rate", f"{lat['achieved_send_rate']}/s, {lat['filled']}/{lat['signals']} "
         f"filled ({lat.get('store', 'mongomock')})", "info", "-"),
        ("  publish -> FILLED recorded p50/p99", f"{lat.get('to_filled_recorded_p50_ms')} / "
         f"{lat.get('to_filled_recorded_p99_ms')} ms", "info", "-"),
        ("  FILLED recorded -> received p50/p99", f"{lat.get('recorded_to_received_p50_ms')} / "
         f"{lat.get('recorded_to_received_p99_ms')} ms", "info", "-"),
    ]
    if lat.get("daemon_internal_p50_ms") is not None:
        rows.append(("  daemon-internal p50/p95/p99", f"{lat['daemon_internal_p50_ms']} / "
                     f"{lat['daemon_internal_p95_ms']} / {lat['daemon_internal_p99_ms']} ms",
                     "info", "-"))
    stalls = lat.get("loop_stalls")
    if stalls:
        rows.append(("  event-loop stalls > 50 ms", f"{stalls['count']} ({stalls['total_s']} s "
                     f"in all, longest ever {stalls['max_ms_ever']} ms)", "info", "-"))
    if lat.get("daemon_stages_p50_p99_ms"):
        stages = lat["daemon_stages_p50_p99_ms"]
        rows.append(("  daemon stages p50 (p99), ms after hand-over",
                     ", ".join(f"{name} {v[0]} ({v[1]})" for name, v in stages.items()),
                     "info", "-"))
    if floor:
        rows.append((f"  one bare hop p50/p99 (floor, {floor.get('streams', 1)} streams)",
                     f"{floor['p50_ms']} / {floor['p99_ms']} ms", "info", "-"))
    if two_hops:
        rows.append(("  two hops via a do-nothing relay p50/p95/p99",
                     f"{two_hops['p50_ms']} / {two_hops['p95_ms']} / {two_hops['p99_ms']} ms "
                     "(the floor of a signal's path)", "info", "-"))
        if two_hops["p99_ms"] is not None and lat["p99_ms"] is not None:
            rows.append(("  the daemon's work above that floor, p50/p99",
                         f"{lat['p50_ms'] - two_hops['p50_ms']:+.1f} / "
                         f"{lat['p99_ms'] - two_hops['p99_ms']:+.1f} ms", "info", "-"))
    return rows


def _memory_rows(mem: dict) -> list[Row]:
    rows = [(f"RSS after {sample['signals']:,} ({mem['store']})", f"{sample['rss_mb']:.1f} MB",
             "info", "-") for sample in mem["samples"]]
    growth = mem.get("rss_growth_mb")
    a, b = mem["growth_between"]
    rows.append((f"RSS growth {a:,} -> {b:,}", "n/a" if growth is None else f"{growth:+.1f} MB",
                 f"< {TARGETS['rss_growth_mb']:g} MB",
                 verdict(None if growth is None else growth < TARGETS["rss_growth_mb"])))
    return rows


def build_table(results: dict) -> list[Row]:
    rows: list[Row] = []
    base = results.get("baseline")
    base_rate = base["msgs_per_s"] if base else None
    if base:
        rows.append((f"baseline: emulator bare msgs/s, {base['streams']} stream(s)",
                     f"{base['msgs_per_s']:,.0f}"
                     + ("" if base["complete"] else " (incomplete)"), "info", "-"))
        more = results.get("baseline_more_streams")
        if more:
            rows.append((f"  the same over {more['streams']} streams", f"{more['msgs_per_s']:,.0f}"
                         " (more streams, more 50 ms emulator ticks)", "info", "-"))
        rows.append(("  CPU per bare msg: emulator / client",
                     f"{base['emulator_cpu_ms_per_msg']} / {base['loadgen_cpu_ms_per_msg']} ms",
                     "info", "-"))
    for store in ("mongomock", "embedded"):
        pipe = results.get("pipeline", {}).get(store)
        if pipe:
            rows += _pipeline_rows(store, pipe, base_rate)
    if results.get("latency", {}).get("signals"):
        rows += _latency_rows(results["latency"], results.get("transport_floor"),
                              results.get("two_hop_floor"))
    if results.get("memory"):
        rows += _memory_rows(results["memory"])
    return rows


def print_table(rows: list[Row]) -> None:
    headers = ("figure", "value", "target", "result")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)] \
        if rows else [len(h) for h in headers]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(value.ljust(w) for value, w in zip(row, widths, strict=True)))


def print_profile(name: str, summary: dict, top: int = 15) -> None:
    print(f"\nprofile {name}: {summary['samples']} samples (py-spy, all threads, idle excluded)")
    print("  threads: " + ", ".join(f"{t} {p}%" for t, p in summary["threads"][:6]))
    for title, key in (("self time (leaf function)", "self"),
                       ("service functions, inclusive", "service_inclusive"),
                       ("where service code hands over (line -> callee)", "handoff")):
        print(f"  {title}:")
        for function, pct in summary[key][:top]:
            print(f"    {pct:5.1f}%  {function}")


# --------------------------------------------------------------------------------------------
# main


def code_version() -> dict:
    """Which code was measured (read-only git queries; the tree may be edited meanwhile)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO,
                                  capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"head": git("rev-parse", "--short", "HEAD"),
            "dirty": [line for line in git("status", "--porcelain").splitlines() if line]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1,
                        help="throughput and memory phases: streaming pulls per subscriber, the "
                             "daemon's PUBSUB_STREAMS, the listener's and the baseline's "
                             "(default 1, the client's default)")
    parser.add_argument("--latency-streams", type=int, default=16,
                        help="latency phase: the same for the daemon, the listener and the "
                             "floors (default 16; the emulator answers each stream on a 50 ms "
                             "tick)")
    parser.add_argument("--n", type=int, default=2000, help="messages / signals per "
                        "throughput run (default 2000)")
    parser.add_argument("--full", action="store_true", help="also the memory phase "
                        "(10,000 and 50,000 signals; takes many minutes)")
    parser.add_argument("--out", type=Path, help="write all figures as JSON here")
    parser.add_argument("--only", action="append", choices=PHASES,
                        help="run only this phase (repeatable)")
    parser.add_argument("--store", choices=("mongomock", "embedded", "both"), default="both",
                        help="pipeline phase store(s) (default both)")
    parser.add_argument("--rate", type=float, default=100.0, help="latency phase: signals/s")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--latency-store", choices=("mongomock", "embedded"),
                        default="mongomock", help="latency phase store (default mongomock)")
    parser.add_argument("--latency-drain", type=float, default=15.0,
                        help="latency phase: wait this long after the last send")
    parser.add_argument("--log-level", default="WARNING",
                        help="the daemons' LOG_LEVEL (default WARNING)")
    parser.add_argument("--warmup", type=int, default=50, help="signals before measuring")
    parser.add_argument("--poll-seconds", type=float, default=0.05,
                        help="ORDER_POLL_SECONDS for the daemon (default 0.05)")
    parser.add_argument("--phase-timeout", type=float, default=50.0,
                        help="give up a throughput run after this many seconds (default 50)")
    parser.add_argument("--memory-store", choices=("embedded", "mongomock"),
                        default="embedded")
    parser.add_argument("--memory-warmup", type=int, default=1000)
    parser.add_argument("--memory-checkpoints", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10_000, 50_000])
    parser.add_argument("--memory-timeout", type=float, default=3600.0)
    parser.add_argument("--profile", metavar="DIR", help="py-spy record the daemon during "
                        "the pipeline and latency windows; raw stacks and summaries in DIR")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: only samples holding the GIL")
    parser.add_argument("--instrument", "--count-store", dest="count_store",
                        action="store_true", help="run the daemons through "
                        "benchmarks/counting_daemon.py: store calls per signal and the "
                        "daemon-internal latency (small overhead)")
    parser.add_argument("--keep", action="store_true", help="keep the daemons' temp dirs")
    parser.add_argument("--tmp", default=None, help="parent directory for temp dirs")
    return parser.parse_args(argv)


def run_phases(args, phases: list[str], results: dict) -> None:
    emulator = None
    emulator_log = Path(tempfile.mkdtemp(prefix="bench-emulator-", dir=args.tmp)) / "emu.log"
    try:
        log("starting the Pub/Sub emulator")
        emulator = start_emulator(emulator_log)
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        log(f"emulator on {emulator.host}")
        if "baseline" in phases:
            log(f"baseline: {args.n} bare messages")
            results["baseline"] = run_baseline(args.n, args.phase_timeout,
                                               emulator.process.pid, args.streams)
            log(f"baseline: {results['baseline']}")
            if args.latency_streams != args.streams:
                results["baseline_more_streams"] = run_baseline(
                    args.n, args.phase_timeout, emulator.process.pid, args.latency_streams)
                log(f"baseline, {args.latency_streams} streams: "
                    f"{results['baseline_more_streams']}")
        if "latency" in phases:
            log("transport floor: one bare hop at the same rate, 3 s")
            results["transport_floor"] = run_transport_floor(args.rate, 3.0, args.latency_streams)
            log("transport floor: a do-nothing relay in place of the daemon, 5 s")
            results["two_hop_floor"] = run_two_hop_floor(args.rate, 5.0, args.latency_streams)
            log(f"two-hop floor: {results['two_hop_floor']}")
            results["latency"] = run_latency(args, emulator)
            log(f"latency: {results['latency']}")
        if "pipeline" in phases:
            stores = ("mongomock", "embedded") if args.store == "both" else (args.store,)
            results["pipeline"] = {}
            for store in stores:
                log(f"pipeline[{store}]: {args.n} signals")
                results["pipeline"][store] = run_pipeline(store, args.n, args, emulator)
                brief = {k: v for k, v in results["pipeline"][store].items()
                         if k not in ("store_calls", "daemon_log_tail")}
                log(f"pipeline[{store}]: {brief}")
        if "memory" in phases:
            results["memory"] = run_memory(args, emulator)
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
        results["interrupted"] = True
    finally:
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(emulator_log.parent, ignore_errors=True)


def report(args, results: dict) -> None:
    rows = build_table(results)
    results["table"] = [dict(zip(("figure", "value", "target", "result"), r, strict=True))
                        for r in rows]
    print()
    print_table(rows)
    print(f"\nwall time {results['wall_s']}s; load average at start "
          f"{results['machine']['loadavg_at_start']}; code {results['code']['head']}"
          + (" + uncommitted changes" if results["code"]["dirty"] else ""))
    for store, pipe in results.get("pipeline", {}).items():
        if pipe.get("store_calls"):
            print(f"\nstore calls per signal ({store}, top by time):")
            for key, row in list(pipe["store_calls"]["by_call"].items())[:14]:
                print(f"  {key:48s} {row['per_signal']:6.2f}/signal  "
                      f"{row['us_per_call']:9.1f} us/call")
        if pipe.get("profile"):
            summary = summarize_profile(Path(pipe["profile"]))
            pipe["profile_summary"] = summary
            print_profile(f"pipeline {store}", summary)
    phases = [(f"pipeline {k}", v) for k, v in results.get("pipeline", {}).items()]
    phases.append(("latency", results.get("latency") or {}))
    for name, figures in phases:
        stalls = figures.get("loop_stalls")
        if stalls and stalls["sampled_stacks"]:
            print(f"\nevent-loop stalls in {name}: {stalls['count']}, {stalls['total_s']} s; "
                  f"main-thread stacks sampled every 10 ms while stalled:")
            total = sum(n for _, n in stalls["sampled_stacks"]) or 1
            for key, n in stalls["sampled_stacks"][:10]:
                print(f"  {100 * n / total:5.1f}%  {key}")
    if args.profile and (Path(args.profile) / "latency.txt").exists():
        summary = summarize_profile(Path(args.profile) / "latency.txt")
        results.setdefault("latency", {})["profile_summary"] = summary
        print_profile("latency", summary)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = list(args.only) if args.only else ["baseline", "pipeline", "latency"] + \
        (["memory"] if args.full else [])
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    results: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "phases": phases,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                    "python": platform.python_version()},
        "targets": TARGETS, "code": code_version(),
    }
    started = time.perf_counter()
    run_phases(args, phases, results)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    report(args, results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nJSON written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
