"""Baseline phase: the emulator and the client library moving bare messages."""

from __future__ import annotations

import concurrent.futures
import threading
import time

from bench_common import CpuMeter, signal_body
from bench_launcher import bare_channel, close_streams, subscribe_streams
from google.cloud import pubsub_v1


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
