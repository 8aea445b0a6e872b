"""The service core in one process, without Pub/Sub: cost per signal by store backend.

A diagnostic companion to `pipeline.py`: it wires the real app with `build_app` (real
processor, tracker, journal, positions, outbox and mock broker) but a publisher that accepts
at once, feeds signals in batches (each decided on the store thread, as the daemon does, then
finished on the loop) and lets the tracker and the outbox finish each batch. It prints the
wall time per signal as the store fills up, and the store calls per signal (counted as in
`counting_daemon.py`), so a change to the store or to the number of round trips can be judged
in seconds, without the emulator. The store thread's own CPU is printed apart: the process's
swings from run to run with how the loop and the store thread happen to interleave.

Backends:
  uri-mongomock    whatever the service's open_store() opens for MONGODB_URI=mongomock://
  mongomock        plain mongomock.MongoClient (what mongomock:// opened before ef5e56e)
  litemongo-memory litemongo's in-memory engine (mongomock's API, with hash indexes)
  litemongo-memory-naive  the same with tz_aware=False (what-if: no datetime patching)
  embedded         what open_store() opens for the embedded store (sqlite files in a temp
                   dir, the query index in them)
  litemongo-sqlite plain litemongo on sqlite files (its query index in Python memory)

What-if (patched in this process only; nothing in the service is changed):
  one-mark              Store.mark_published as ONE update (pipeline form) instead of one or
                        two plain updates
  no-engine-speedups    the store engines as litemongo ships them (engine_speedups.py not
                        installed): the before of a before/after, from one checkout

    /work/venv/bin/python benchmarks/core_ops.py --backend uri-mongomock --n 2000
    /work/venv/bin/python benchmarks/core_ops.py --backend litemongo-memory --what-if one-mark
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import counting_daemon  # noqa: E402  (wraps the collection classes when installed)

from execution_service.account_setup import seed_accounts  # noqa: E402
from execution_service.adapters.store import Store, StoreHandle, open_store  # noqa: E402
from execution_service.bootstrap import build_app  # noqa: E402
from execution_service.config import load_settings  # noqa: E402
from execution_service.domain.records import record_id  # noqa: E402

SYMBOLS = ("SPY", "QQQ", "IWM", "AAPL", "MSFT", "NVDA", "AMZN", "META", "TSLA", "GOOG")


class AcceptingPublisher:
    def __init__(self) -> None:
        self.published = 0

    async def publish(self, payload: bytes, attributes: dict[str, str]) -> None:
        self.published += 1


def open_backend(kind: str) -> tuple[StoreHandle, Path | None]:
    if kind == "uri-mongomock":
        return open_store("mongomock://", "trading", None), None
    if kind == "mongomock":
        import mongomock

        client = mongomock.MongoClient(tz_aware=True)
        return StoreHandle(client, client["trading"], "mongomock"), None
    import litemongo

    if kind in ("litemongo-memory", "litemongo-memory-naive"):
        # -naive: tz_aware=False, i.e. no per-document datetime patching on every read
        # (datetimes come back naive UTC); a what-if for the cost of tz_aware=True
        client = litemongo.connect(f"mem://bench-{uuid.uuid4().hex}?engine=memory",
                                   tz_aware=kind == "litemongo-memory")
        return StoreHandle(client, client["trading"], "litemongo memory"), None
    path = Path(tempfile.mkdtemp(prefix="bench-core-"))
    if kind == "embedded":
        return open_store(None, "trading", path), path
    client = litemongo.connect(str(path), tz_aware=True)  # plain litemongo-sqlite
    return StoreHandle(client, client["trading"], f"litemongo at {path}"), path


def what_if_one_mark() -> None:
    def mark_published(self, marks: dict[str, int]) -> None:
        for signal_id, sequence in marks.items():
            self.records.update_one({"_id": record_id(signal_id)}, [
                {"$set": {"published_sequence": {"$max": ["$published_sequence", sequence]}}},
                {"$set": {"outbox_pending": {"$lt": ["$published_sequence",
                                                     "$confirmation_sequence"]}}}])

    _require(Store, "mark_published")
    Store.mark_published = mark_published


def what_if_no_engine_speedups() -> None:
    from execution_service.adapters import engine_speedups

    _require(engine_speedups, "install")
    engine_speedups.install = lambda: False


def _require(owner, name: str) -> None:
    """What-ifs patch the service as it was; refuse when the code has moved on."""
    if not hasattr(owner, name):
        raise SystemExit(f"what-if not applicable: {owner.__name__}.{name} no longer exists "
                         f"(the service has changed; the what-if is obsolete)")


def body(signal_id: str, i: int) -> bytes:
    return json.dumps({"signal_id": signal_id, "order_type": "MARKET",
                       "symbol": SYMBOLS[i % len(SYMBOLS)], "side": "BUY", "quantity": 1,
                       "account_id": "acc_bench", "strategy_name": "Bench Strategy",
                       "reference_price": 100.0}).encode()


async def accept(app, i: int) -> None:
    """As the daemon: decided on the store thread (a burst of arrivals queues there), the
    rest on the loop."""
    outcome = app.processor.finish(
        await app.store_thread.run(app.processor.decide, body(f"core-{i}", i)))
    if str(outcome.action) != "ACK":
        raise RuntimeError(f"signal {i}: {outcome}")


def store_thread_cpu(app) -> float:
    """CPU seconds the store thread has used (0 before it starts): the embedded store's work,
    apart from the loop's."""
    thread = app.store_thread._thread
    if thread is None or thread.ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


async def drive(app, n: int, batch: int) -> list[dict]:
    app.outbox.start()
    rows = []
    done = 0
    while done < n:
        count = min(batch, n - done)
        before = counting_daemon.snapshot()
        started, cpu_started = time.perf_counter(), time.process_time()
        store_cpu_started = store_thread_cpu(app)
        await asyncio.gather(*(accept(app, i) for i in range(done, done + count)))
        while app.tracker.in_flight or app.outbox.backlog:
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        store_cpu = store_thread_cpu(app) - store_cpu_started
        after = counting_daemon.snapshot()
        calls = sum(v["calls"] - before.get(k, {}).get("calls", 0) for k, v in after.items())
        store_s = sum(v["seconds"] - before.get(k, {}).get("seconds", 0.0)
                      for k, v in after.items())
        done += count
        rows.append({"records_after": done, "ms_per_signal": round(1000 * elapsed / count, 3),
                     "cpu_ms_per_signal": round(1000 * cpu / count, 3),
                     "store_thread_cpu_ms_per_signal": round(1000 * store_cpu / count, 3),
                     "store_calls_per_signal": round(calls / count, 2),
                     "store_ms_per_signal": round(1000 * store_s / count, 3)})
        print(f"  {done:6d} records  {rows[-1]['ms_per_signal']:8.2f} ms/signal "
              f"(CPU {rows[-1]['cpu_ms_per_signal']:6.2f} ms, store thread "
              f"{rows[-1]['store_thread_cpu_ms_per_signal']:5.2f} ms)  "
              f"store {rows[-1]['store_ms_per_signal']:8.2f} ms in "
              f"{rows[-1]['store_calls_per_signal']:.1f} calls", flush=True)
    await app.outbox.stop()
    await app.tracker.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="uri-mongomock",
                        choices=("uri-mongomock", "mongomock", "litemongo-memory",
                                 "litemongo-memory-naive", "embedded", "litemongo-sqlite"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--what-if", action="append", default=[],
                        choices=("one-mark", "no-engine-speedups"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--bare", action="store_true",
                        help="no store call counting (its wrappers cost CPU): CPU figures only")
    args = parser.parse_args(argv)
    if not args.bare:
        counting_daemon.install()
    if "one-mark" in args.what_if:
        what_if_one_mark()
    if "no-engine-speedups" in args.what_if:
        what_if_no_engine_speedups()
    handle, path = open_backend(args.backend)
    accounts = Path(tempfile.mkdtemp(prefix="bench-core-acc-")) / "accounts.json"
    accounts.write_text(json.dumps([{"account_id": "acc_bench", "broker": "MOCK",
                                     "enabled": True}]))
    uri = f"embedded://{path}" if args.backend == "embedded" else "mongomock://"
    settings = load_settings(environ={"MONGODB_URI": uri, "LOG_LEVEL": "WARNING",
                                      "MOCK_FILL_DELAY_SECONDS": "0",
                                      "ACCOUNTS_FILE": str(accounts)})
    print(f"{args.backend}{' + ' + ','.join(args.what_if) if args.what_if else ''}: "
          f"{args.n} signals in batches of {args.batch}")
    try:
        async def run() -> list[dict]:
            app = build_app(settings, AcceptingPublisher(), handle=handle)
            seed_accounts(settings, app.store)
            return await drive(app, args.n, args.batch)

        rows = asyncio.run(run())
    finally:
        with contextlib.suppress(AttributeError):  # litemongo 0.2.0 memory store: no close()
            handle.close()
        shutil.rmtree(accounts.parent, ignore_errors=True)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
    by_call = counting_daemon.snapshot()
    cpu = sorted(row["cpu_ms_per_signal"] for row in rows)
    store_cpu = sorted(row["store_thread_cpu_ms_per_signal"] for row in rows)
    print(f"  CPU per signal (process, all threads): median {cpu[len(cpu) // 2]:.2f} ms "
          f"over {len(rows)} batches")
    print(f"  CPU per signal (the store thread): median {store_cpu[len(store_cpu) // 2]:.2f} ms "
          f"over {len(rows)} batches")
    print("  store calls over the run (top by time):")
    for key, row in sorted(by_call.items(), key=lambda kv: -kv[1]["seconds"])[:12]:
        print(f"    {key:46s} {row['calls'] / args.n:6.2f}/signal "
              f"{1e6 * row['seconds'] / max(1, row['calls']):9.1f} us/call")
    total = {"backend": args.backend, "what_if": args.what_if, "n": args.n, "batches": rows,
             "store_calls": by_call}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(total, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
