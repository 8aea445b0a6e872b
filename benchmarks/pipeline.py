"""End-to-end benchmark of the execution service (issue 7).

One run starts Google's Pub/Sub emulator on a free port and measures:

  baseline   the emulator and the same client library moving N bare messages
             (publish -> streaming pull -> ack), msgs/s
  pipeline   N signals through a real daemon process (`python -m execution_service run`)
             until N FILLED confirmations arrive on a subscription of
             `execution-confirmations`, signals/s; on mongomock:// and on the embedded
             store, each with the spread workload (ten symbols, buys) and the hot one
             (one symbol, sides in turn: one position opens, flips, closes)
  latency    publish -> FILLED confirmation received, p50/p95/p99, at a steady rate
             (default 100 signals/s for 10 s) on mongomock://, at the daemon's default
             stream count, against the two-hop floor through a do-nothing relay
  memory     (--full only) the daemon's RSS after a warm-up and after 10,000 and 50,000
             signals

and prints a table with the targets. See benchmarks/README.md.

    /work/venv/bin/python benchmarks/pipeline.py                 # default, < 3 minutes
    /work/venv/bin/python benchmarks/pipeline.py --only pipeline --store mongomock --n 500
    /work/venv/bin/python benchmarks/pipeline.py --full --out benchmarks/results/full.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import HOT, REPO, SPREAD, TARGETS, log
from bench_report import report
from phase_baseline import run_baseline
from phase_latency import run_latency, run_transport_floor, run_two_hop_floor
from phase_memory import run_memory
from phase_pipeline import run_pipeline

from execution_service.adapters.emulator import start_emulator

PHASES = ("baseline", "pipeline", "latency", "memory")


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
    parser.add_argument("--latency-streams", type=int, default=1,
                        help="latency phase: the same for the daemon, the listener and the "
                             "floors (default 1, the daemon's PUBSUB_STREAMS default; the "
                             "emulator answers each stream on a 50 ms tick)")
    parser.add_argument("--workload", choices=(SPREAD, HOT, "both"), default="both",
                        help="pipeline phase workload(s): spread (ten symbols, buys) and/or "
                             "hot (one symbol, sides in turn: one position opens, flips and "
                             "closes); default both")
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
    parser.add_argument("--memory-detail", action="store_true",
                        help="memory phase: at each checkpoint also the daemon's heap in use "
                             "and free, sqlite's bytes and objects by type (memory_daemon.py)")
    parser.add_argument("--memory-trace-from", type=int, metavar="SIGNALS",
                        help="with --memory-detail: from this checkpoint on, Python's "
                             "allocations still alive, by line (tracemalloc; slows the daemon)")
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
            results["pipeline"], results["hot"] = {}, {}
            workloads = (SPREAD, HOT) if args.workload == "both" else (args.workload,)
            for store in stores:
                for workload in workloads:
                    log(f"pipeline[{store}, {workload}]: {args.n} signals")
                    figures = run_pipeline(store, args.n, args, emulator, workload)
                    results["pipeline" if workload == SPREAD else "hot"][store] = figures
                    brief = {k: v for k, v in figures.items()
                             if k not in ("store_calls", "daemon_log_tail")}
                    log(f"pipeline[{store}, {workload}]: {brief}")
        if "memory" in phases:
            results["memory"] = run_memory(args, emulator)
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
        results["interrupted"] = True
    finally:
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(emulator_log.parent, ignore_errors=True)


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
