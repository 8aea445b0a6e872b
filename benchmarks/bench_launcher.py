"""The benchmark's launcher: the daemon as a child process, the confirmation listener, the
Pub/Sub rig every phase sets up and tears down."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psutil
from bench_common import ACCOUNT_ID, HERE, SPREAD, TERMINAL, names_for, new_project, signal_body
from google.cloud import pubsub_v1

from execution_service.adapters.pubsub import PubSubNames, make_publisher, setup_pubsub


def event_time(data: bytes) -> float | None:
    """The confirmation's `at` (when the daemon recorded the event), as epoch seconds."""
    try:
        at = json.loads(data).get("at")
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() if at else None
    except (ValueError, AttributeError, TypeError):
        return None


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
                    event_at = event_time(message.data)
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


class Daemon:
    """`python -m execution_service run` as a child process in its own temp directory."""

    def __init__(self, workdir: Path, env: dict[str, str], counting: bool = False,
                 wrapper: str | None = None):
        self.workdir = workdir
        self.env = env
        self.counting = counting
        # a script that runs the daemon and answers SIGUSR1 with a snapshot
        self.wrapper = "counting_daemon.py" if counting else wrapper
        self.output = workdir / "daemon.out"
        self.stats_file = workdir / "store-stats.json"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Daemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.wrapper:
            command = [sys.executable, str(HERE / self.wrapper)]
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
        if not self.wrapper or self.process is None or self.process.poll() is not None:
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
        stop_child(self.process, signal.SIGTERM, 20)


def stop_child(process: subprocess.Popen, signum: int, grace: float) -> None:
    """Signal a child this benchmark started, then SIGKILL it after `grace` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


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
        stop_child(self.process, signal.SIGINT, 30)
        return self.output if self.output.exists() else None


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


def setup_rig(project: str, streams: int) -> tuple[PubSubNames, pubsub_v1.PublisherClient,
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


def publish_all(publisher, topic: str, ids: list[str], offset: int = 0,
                sent_wall: dict[str, float] | None = None, workload: str = SPREAD) -> list:
    futures = []
    for i, signal_id in enumerate(ids):
        if sent_wall is not None:
            sent_wall[signal_id] = time.time()
        futures.append(publisher.publish(topic, signal_body(signal_id, offset + i, workload)))
    return futures


def warm_up(publisher, names, listener, count: int, tag: str, timeout: float = 60.0,
            workload: str = SPREAD) -> bool:
    ids = [f"warm-{tag}-{i}" for i in range(count)]
    listener.expect(ids)
    concurrent.futures.wait(publish_all(publisher, names.orders_topic, ids, workload=workload),
                            timeout=30)
    return listener.wait(timeout)


def tear_down(args, workdir: Path, listener, daemon, subscriber, profiler=None) -> None:
    """Stop what a phase started (only that) and remove its temp dir unless --keep."""
    if profiler:
        profiler.stop()
    listener.close()
    daemon.stop()
    subscriber.close()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
