"""Memory phase: the daemon's RSS after a warm-up and at checkpoints."""

from __future__ import annotations

import concurrent.futures
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
from bench_common import log, new_project, rounded
from bench_launcher import Daemon, daemon_env, publish_all, setup_rig, tear_down


def rss_kinds(pid: int) -> dict:
    """Resident memory split into heap (anonymous), mapped files and shared memory, in MB."""
    fields = {"RssAnon:": "anon_mb", "RssFile:": "file_mb", "RssShmem:": "shmem_mb"}
    kinds = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, *rest = line.split()
        if name in fields:
            kinds[fields[name]] = round(int(rest[0]) / 1024, 1)
    return kinds


def run_memory(args, emulator) -> dict:
    """RSS after a warm-up and at checkpoints, feeding with a bounded backlog."""
    store = args.memory_store
    project = new_project(f"mem-{store}")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-memory-{store}-", dir=args.tmp))
    names, publisher, subscriber, listener = setup_rig(project, args.streams)
    daemon = Daemon(workdir, daemon_env(emulator.host, project, workdir, store,
                                        args.poll_seconds, streams=args.streams),
                    wrapper="memory_daemon.py" if args.memory_detail else None)
    checkpoints = sorted({args.memory_warmup, *args.memory_checkpoints})
    if args.memory_trace_from:
        daemon.env["BENCH_TRACE_FROM_DUMP"] = str(checkpoints.index(args.memory_trace_from) + 1)
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
                concurrent.futures.wait(publish_all(publisher, names.orders_topic, ids,
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
            kinds = rss_kinds(daemon.pid)
            sample = {"signals": checkpoint, "rss_mb": round(info.rss / 2**20, 1), **kinds,
                      "vms_mb": round(info.vms / 2**20, 1), "threads": proc.num_threads(),
                      "open_files": len(proc.open_files()),
                      "signals_per_s_since_last": round((checkpoint - last_n) / (now - last_t
                                                                                 - 2.0), 1),
                      "elapsed_s": round(now - t_start, 1)}
            if args.memory_detail:
                sample["detail"] = daemon.instrument_snapshot(timeout=30.0)
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
                "rss_growth_mb": rounded(growth), "growth_between": [first, last]}
    finally:
        tear_down(args, workdir, listener, daemon, subscriber)
