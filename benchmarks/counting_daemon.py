"""Runs the real daemon (`execution-service run`) with its store calls counted.

Used by `benchmarks/pipeline.py --count-store`. Nothing in the service is changed: the
collection classes of mongomock (MONGODB_URI=mongomock://) and of litemongo's vendored
mongomock (the embedded store) are wrapped in this process only, and every top-level call
(one call = one round trip on a real MongoDB) is counted per (collection, method) with its
wall time. Nested calls made by the driver itself (find_one -> find, ...) are not counted.

On SIGUSR1 a snapshot is written to $BENCH_STORE_STATS (JSON), so the benchmark can take the
difference over its measured window.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict

METHODS = ("find_one", "find", "insert_one", "insert_many", "update_one", "update_many",
           "find_one_and_update", "replace_one", "count_documents", "aggregate",
           "delete_one", "delete_many", "create_index", "distinct")

_local = threading.local()
_lock = threading.Lock()
_stats: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])


def _wrap(cls, name: str) -> None:
    original = getattr(cls, name, None)
    if original is None or getattr(original, "_bench_counted", False):
        return

    def counted(self, *args, **kwargs):
        if getattr(_local, "depth", 0):
            return original(self, *args, **kwargs)
        _local.depth = 1
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            _local.depth = 0
            elapsed = time.perf_counter() - started
            with _lock:
                entry = _stats[(self.name, name)]
                entry[0] += 1
                entry[1] += elapsed

    counted._bench_counted = True  # type: ignore[attr-defined]
    counted.__name__ = name
    counted.__qualname__ = f"{cls.__name__}.{name}"
    setattr(cls, name, counted)


def _install() -> None:
    classes = []
    try:
        from mongomock.collection import Collection as MockCollection
        classes.append(MockCollection)
    except ImportError:
        pass
    try:
        from litemongo._vendor.mongomock.collection import Collection as LiteCollection
        classes.append(LiteCollection)
    except ImportError:
        pass
    for cls in classes:
        for name in METHODS:
            _wrap(cls, name)


def snapshot() -> dict:
    with _lock:
        return {f"{collection}.{method}": {"calls": calls, "seconds": round(seconds, 6)}
                for (collection, method), (calls, seconds) in _stats.items()}


def _dump(_signum=None, _frame=None) -> None:
    path = os.environ.get("BENCH_STORE_STATS")
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as out:
        json.dump({"at": time.time(), "stats": snapshot()}, out)
    os.replace(tmp, path)


def main() -> None:
    _install()
    signal.signal(signal.SIGUSR1, _dump)
    sys.argv = ["execution-service", "run", *sys.argv[1:]]
    from execution_service.cli import main as cli_main

    try:
        cli_main()
    finally:
        _dump()


if __name__ == "__main__":
    main()
