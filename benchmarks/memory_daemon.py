"""Runs the real daemon (`execution-service run`) and, on SIGUSR1, writes where its memory is
to $BENCH_STORE_STATS (JSON): glibc's heap in use and free (mallinfo2), Python's allocated
blocks, sqlite's own allocations, the gc-tracked objects by type, threads and asyncio tasks.

Used by `benchmarks/pipeline.py --only memory --memory-detail`. Nothing in the service is
changed. Counting objects by type walks the heap (about a second at 50,000 signals): it runs
only when asked, between the benchmark's checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter, deque

TOP_TYPES = 40


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc_heap() -> dict:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    mb = 2**20
    return {"arena_mb": round(info.arena / mb, 2), "in_use_mb": round(info.uordblks / mb, 2),
            "free_mb": round(info.fordblks / mb, 2), "mmapped_mb": round(info.hblkhd / mb, 2),
            "top_releasable_mb": round(info.keepcost / mb, 2)}


def _sqlite_bytes() -> dict:
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    sqlite.sqlite3_memory_highwater.restype = ctypes.c_int64
    return {"used_mb": round(sqlite.sqlite3_memory_used() / 2**20, 2),
            "highwater_mb": round(sqlite.sqlite3_memory_highwater(0) / 2**20, 2)}


def _objects() -> dict:
    objects = gc.get_objects()
    by_type = Counter(type(o).__qualname__ for o in objects)
    sized = Counter()
    for o in objects:
        if isinstance(o, (dict, list, set, deque)):
            sized[type(o).__qualname__] += len(o)
    return {"tracked": len(objects), "by_type": dict(by_type.most_common(TOP_TYPES)),
            "container_items": dict(sized), "service_containers": _service_queues()}



def _anonymous_mappings() -> dict:
    """Resident anonymous memory by mapping size: [heap] is glibc's main arena; 1 MiB
    mappings are mostly pymalloc's arenas, 64 MiB ones glibc's thread arenas, 8 MiB ones
    thread stacks."""
    buckets: Counter = Counter()
    counts: Counter = Counter()
    current = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=6)
            if "-" in first[0] and not first[0].endswith(":"):
                start, end = (int(x, 16) for x in first[0].split("-"))
                path = first[5].strip() if len(first) > 5 else ""
                size_kb = (end - start) // 1024
                current = (path if path.startswith("[") else
                           None if path else f"{size_kb // 1024} MiB" if size_kb >= 1024
                           else "< 1 MiB")
            elif first[0] == "Anonymous:" and current is not None:
                buckets[current] += int(first[1])
                counts[current] += 1
    return {name: {"mappings": counts[name], "anon_mb": round(kb / 1024, 2)}
            for name, kb in buckets.most_common(12)}


def _pymalloc_arenas() -> dict:
    """pymalloc's own count of its arenas, from sys._debugmallocstats (written to fd 2)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    wanted = ("arenas allocated current", "arenas highwater mark", "bytes in allocated blocks",
              "bytes in available blocks", "unused pools")
    return {line.split("=")[0].strip(" #"): int(line.split("=")[1].replace(",", ""))
            for line in text.splitlines() if "=" in line and line.lstrip("# ").startswith(wanted)}


_backlog = {"managers": [], "max_on_hold": 0, "max_leased": 0}


def _watch_backlog() -> None:
    """Track the most messages the Pub/Sub client held since the last sample: on hold (pulled
    beyond flow control) and leased (handed over, not yet acked)."""
    from google.cloud.pubsub_v1.subscriber._protocol import streaming_pull_manager as spm

    original = spm.StreamingPullManager.__init__

    def remembered(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _backlog["managers"].append(self)

    spm.StreamingPullManager.__init__ = remembered

    def sample() -> None:
        while True:
            time.sleep(0.1)
            for manager in list(_backlog["managers"]):
                with contextlib.suppress(AttributeError):
                    _backlog["max_on_hold"] = max(_backlog["max_on_hold"],
                                                  manager._messages_on_hold.size)
                    _backlog["max_leased"] = max(_backlog["max_leased"],
                                                 manager._leaser.message_count)

    threading.Thread(target=sample, daemon=True, name="bench-backlog").start()


def _backlog_since_last() -> dict:
    seen = {"max_on_hold": _backlog["max_on_hold"], "max_leased": _backlog["max_leased"]}
    _backlog["max_on_hold"] = _backlog["max_leased"] = 0
    return seen


WATCHED = ("execution_service.service.outbox:ConfirmationOutbox",
           "execution_service.service.store_thread:StoreThread",
           "execution_service.service.tracker:OrderTracker",
           "execution_service.service.daemon:ExecutionDaemon",
           "execution_service.service.held_messages:HeldIntake",
           "execution_service.service.journal:OrderJournal",
           "execution_service.service.processor:SignalProcessor",
           "execution_service.service.positions:PositionBook",
           "execution_service.service.leases:LeaseKeeper",
           "brokers.mock:MockBroker")
_instances: list = []


def _watch_instances() -> None:
    """Remember the service's long-lived objects as they are built (the daemon freezes what
    exists at start out of gc's sight, so gc.get_objects() does not find them)."""
    import importlib

    for spec in WATCHED:
        module, name = spec.split(":")
        with contextlib.suppress(ImportError, AttributeError):
            cls = getattr(importlib.import_module(module), name)
            original = cls.__init__

            def remembered(self, *args, _original=original, **kwargs):
                _original(self, *args, **kwargs)
                _instances.append(self)

            cls.__init__ = remembered


def _service_queues() -> dict:
    """Sizes of the containers the service's long-lived objects hold: a queue that only grows
    shows here."""
    sizes: dict[str, int] = {}
    for o in list(_instances):
        for name, value in vars(o).items():
            if isinstance(value, (dict, list, set, deque)) and len(value) >= 10:
                key = f"{type(o).__name__}.{name}"
                sizes[key] = max(sizes.get(key, 0), len(value))
    return dict(sorted(sizes.items(), key=lambda item: -item[1])[:25])


def _tasks() -> int | None:
    loop = asyncio.events._get_running_loop()
    return None if loop is None else len(asyncio.all_tasks(loop))


_dumps = [0]


def _traced() -> dict | None:
    """From the dump numbered $BENCH_TRACE_FROM_DUMP on, Python's allocations made since that
    dump and still alive, by line (tracemalloc, one frame: it slows the daemon by about a
    third)."""
    _dumps[0] += 1
    start_at = int(os.environ.get("BENCH_TRACE_FROM_DUMP", "0"))
    if not start_at or _dumps[0] < start_at:
        return None
    if not tracemalloc.is_tracing():
        tracemalloc.start(1)
        return {"started": True}
    stats = tracemalloc.take_snapshot().statistics("lineno")
    return {"alive_mb": round(sum(s.size for s in stats) / 2**20, 2),
            "top": [[str(s.traceback[0]), round(s.size / 1024, 1), s.count]
                    for s in stats[:25]]}


def _dump(_signum=None, _frame=None) -> None:
    path = os.environ.get("BENCH_STORE_STATS")
    if not path:
        return
    started = time.perf_counter()
    traced = _traced()
    snapshot = {"at": time.time(), "libc_heap": _libc_heap(), "sqlite": _sqlite_bytes(),
                "python_blocks": sys.getallocatedblocks(), "threads": threading.active_count(),
                "asyncio_tasks": _tasks(), "objects": _objects(),
                "anonymous": _anonymous_mappings(), "pymalloc": _pymalloc_arenas(),
                "pubsub_backlog": _backlog_since_last()}
    snapshot["traced_since"] = traced
    snapshot["took_s"] = round(time.perf_counter() - started, 3)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as out:
        json.dump(snapshot, out)
    os.replace(tmp, path)


def main() -> None:
    signal.signal(signal.SIGUSR1, _dump)
    _watch_backlog()
    _watch_instances()
    sys.argv = ["execution-service", "run", *sys.argv[1:]]
    from execution_service.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
