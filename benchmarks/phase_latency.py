"""Latency phase: publish -> FILLED at a steady rate, and the transport's floors (one bare
hop; two hops through a do-nothing relay) at the same rate and streams."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from bench_common import (
    CpuMeter,
    cpu_seconds,
    log,
    new_project,
    percentile,
    percentiles,
    rounded,
    signal_body,
)
from bench_figures import internal_latency, split_ms
from bench_launcher import (
    Daemon,
    Profiler,
    bare_channel,
    close_streams,
    daemon_env,
    setup_rig,
    stop_child,
    subscribe_streams,
    tear_down,
    warm_up,
)


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
                **percentiles(values), "streams": streams}
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
        return {**result, "relay_cpu_s": rounded(cpu_seconds(psutil.Process(relay.pid)), 2)}
    finally:
        stop_child(relay, signal.SIGTERM, 10)
        subscriber.close()


def run_latency(args, emulator) -> dict:
    project = new_project("lat")
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-", dir=args.tmp))
    names, publisher, subscriber, listener = setup_rig(project, args.latency_streams)
    daemon = Daemon(workdir, daemon_env(emulator.host, project, workdir, args.latency_store,
                                        args.poll_seconds, args.log_level, args.latency_streams),
                    counting=args.count_store)
    profiler = None
    try:
        daemon.start()
        log(f"latency[{args.latency_store}]: daemon pid {daemon.pid}; {args.rate:g} signals/s for "
            f"{args.latency_seconds:g}s")
        if not warm_up(publisher, names, listener, args.warmup, "lat"):
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
        internal = internal_latency(daemon, ids, before)
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
            **percentiles(values), "max_ms": rounded(max(values, default=None)),
            "submitted_p50_ms": rounded(percentile(submitted, 50)),
            "submitted_p99_ms": rounded(percentile(submitted, 99)), **cpu,
            **split_ms(ids, sent_wall, listener), "store": args.latency_store, **internal,
        }
    finally:
        tear_down(args, workdir, listener, daemon, subscriber, profiler)
