"""The store engines' own CPU per call, without the rest of the daemon: record the store calls
the service core makes for N signals once, then replay them on fresh stores and time each
call with the replaying thread's CPU clock (a loaded machine moves it far less than wall
time or the process's CPU over several threads).

    .venv/bin/python benchmarks/store_calls.py record --n 2000 --out /tmp/calls.pkl
    .venv/bin/python benchmarks/store_calls.py replay /tmp/calls.pkl --backend embedded
    .venv/bin/python benchmarks/store_calls.py replay /tmp/calls.pkl --library-only

`record` runs `core_ops.py`'s driver on `mongomock://` and keeps every top-level collection
call (collection, method, arguments as they were at the call). `replay` opens the backend
through the service's own `open_store` (so `mongomock://` is behind its lock, as in the
daemon), creates the service's indexes, makes every call in order and prints CPU per call
by (collection, method), the minimum and median over `--repeats` fresh stores.
`--library-only` replays with the engines as litemongo ships them (engine_speedups.py not
installed): the before of a before/after, from one checkout.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import pickle
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import counting_daemon  # noqa: E402  (the method names a store call can be)

from execution_service.adapters import engine_speedups  # noqa: E402
from execution_service.adapters.store import Store, open_store  # noqa: E402


def record(n: int, out: Path) -> int:
    import core_ops
    from litemongo._vendor.mongomock.collection import Collection

    calls: list[tuple] = []
    nested = threading.local()

    def recording(name: str):
        original = getattr(Collection, name)

        def call(self, *args, **kwargs):
            if getattr(nested, "depth", 0):
                return original(self, *args, **kwargs)
            nested.depth = 1
            try:
                calls.append((self.name, name, copy.deepcopy(args), copy.deepcopy(kwargs)))
                return original(self, *args, **kwargs)
            finally:
                nested.depth = 0
        return call

    for name in counting_daemon.METHODS:
        setattr(Collection, name, recording(name))
    core_ops.main(["--backend", "uri-mongomock", "--n", str(n), "--bare"])
    out.write_bytes(pickle.dumps({"signals": n, "calls": calls}))
    print(f"{len(calls)} store calls for {n} signals in {out}")
    return 0


def replay_once(calls: list[tuple], backend: str) -> dict[tuple[str, str], list[float]]:
    path = Path(tempfile.mkdtemp(prefix="store-calls-"))
    handle = (open_store("mongomock://", "trading", None) if backend == "mongomock"
              else open_store(None, "trading", path / "data"))
    try:
        Store(handle.database).ensure_indexes()
        collections_by_name: dict = {}
        arguments = copy.deepcopy([(args, kwargs) for _, _, args, kwargs in calls])
        seconds: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        clock = time.thread_time
        for (name, method, _, _), (args, kwargs) in zip(calls, arguments, strict=True):
            target = collections_by_name.get(name)
            if target is None:
                target = collections_by_name[name] = handle.database[name]
            started = clock()
            with contextlib.suppress(Exception):  # a refused write is a call like another
                result = getattr(target, method)(*args, **kwargs)
                if method in ("find", "aggregate"):
                    list(result)
            seconds[(name, method)].append(clock() - started)
        return seconds
    finally:
        with contextlib.suppress(AttributeError):  # litemongo's memory store: no close()
            handle.close()
        shutil.rmtree(path, ignore_errors=True)


def replay(recording: Path, backend: str, repeats: int, library_only: bool) -> int:
    if library_only:
        engine_speedups.install = lambda: False
    recorded = pickle.loads(recording.read_bytes())
    calls, signals = recorded["calls"], recorded["signals"]
    runs = [replay_once(calls, backend) for _ in range(repeats)]
    totals = sorted(sum(map(sum, run.values())) for run in runs)
    print(f"{backend}{' (library only)' if library_only else ''}: {len(calls)} calls, "
          f"{signals} signals; store CPU per signal: min {1000 * totals[0] / signals:.3f} ms, "
          f"median {1000 * totals[len(totals) // 2] / signals:.3f} ms over {repeats} runs")
    per_call = {key: sorted(1e6 * sum(run[key]) / len(run[key]) for run in runs)
                for key in runs[0]}
    count = {key: len(runs[0][key]) for key in runs[0]}
    for key, us in sorted(per_call.items(), key=lambda kv: -kv[1][0] * count[kv[0]])[:12]:
        print(f"  {'.'.join(key):46s} {count[key] / signals:5.2f}/signal  "
              f"min {us[0]:8.1f} us  median {us[len(us) // 2]:8.1f} us")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    recording = commands.add_parser("record")
    recording.add_argument("--n", type=int, default=2000)
    recording.add_argument("--out", type=Path, required=True)
    replaying = commands.add_parser("replay")
    replaying.add_argument("recording", type=Path)
    replaying.add_argument("--backend", choices=("mongomock", "embedded"), default="mongomock")
    replaying.add_argument("--repeats", type=int, default=3)
    replaying.add_argument("--library-only", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "record":
        return record(args.n, args.out)
    return replay(args.recording, args.backend, args.repeats, args.library_only)


if __name__ == "__main__":
    sys.exit(main())
