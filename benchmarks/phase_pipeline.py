"""Throughput phase: N signals through a real daemon until N FILLED confirmations."""

from __future__ import annotations

import concurrent.futures
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_common import SPREAD, CpuMeter, log, new_project
from bench_figures import deciles, diff_stats, internal_latency, split_ms, steady_rate
from bench_launcher import Daemon, Profiler, daemon_env, publish_all, setup_rig, tear_down, warm_up


def run_pipeline(store: str, n: int, args, emulator, workload: str = SPREAD) -> dict:
    """`workload` SPREAD (ten symbols, buys) or HOT (one position opened, flipped, closed)."""
    tag = store if workload == SPREAD else f"{workload}-{store}"
    project = new_project(f"pipe-{tag}")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{store}-", dir=args.tmp))
    names, publisher, subscriber, listener = setup_rig(project, args.streams)
    daemon = Daemon(workdir, daemon_env(emulator.host, project, workdir, store,
                                        args.poll_seconds, args.log_level, args.streams),
                    counting=args.count_store)
    profiler = None
    try:
        daemon.start()
        log(f"pipeline[{tag}]: daemon pid {daemon.pid} in {workdir}")
        if not warm_up(publisher, names, listener, args.warmup, tag, workload=workload):
            raise RuntimeError(f"warm-up signals did not fill; daemon output:\n"
                               f"{daemon.read_output()[-3000:]}")
        before = daemon.instrument_snapshot()
        stats_before = before["stats"] if before else None
        if args.profile:
            profiler = Profiler(daemon.pid, Path(args.profile) / f"pipeline-{tag}.txt",
                                gil=args.profile_gil)
            time.sleep(0.5)
        ids = [f"pipe-{tag}-{i}" for i in range(n)]
        listener.expect(ids)
        meter = CpuMeter(daemon.pid, emulator.process.pid)
        t0 = time.perf_counter()
        sent_wall: dict[str, float] = {}
        futures = publish_all(publisher, names.orders_topic, ids, sent_wall=sent_wall,
                              workload=workload)
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
        internal = internal_latency(daemon, ids, before)
        other = Counter(listener.terminal_status[s] for s in ids
                        if listener.terminal_status.get(s, "FILLED") != "FILLED")
        latencies = [listener.filled_at[s] - t0 for s in done_ids]  # under saturation
        result = {
            "store": store, "workload": workload, "n": n, "filled": len(done_ids),
            "complete": complete,
            "not_filled": dict(other), "elapsed_s": round(elapsed, 3),
            "publish_s": round(published_at - t0, 3),
            "signals_per_s": round(len(done_ids) / elapsed, 1) if elapsed else None,
            "deciles_signals_per_s": deciles(ids, listener.filled_at, t0),
            "steady_signals_per_s": steady_rate(ids, listener.filled_at),
            "time_to_first_fill_s": round(min(latencies), 3) if latencies else None,
            "confirmations_received": listener.messages, **cpu,
            **split_ms(ids, sent_wall, listener), **internal,
            "daemon_rss_mb": round(daemon.rss_mb(), 1),
            "store_calls": diff_stats(stats_before, stats_after, n),
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
        tear_down(args, workdir, listener, daemon, subscriber, profiler)
