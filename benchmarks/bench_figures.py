"""Figures computed from what a phase recorded: rates per tenth, store calls per signal, the
daemon's own stages and loop stalls (instrumented daemons)."""

from __future__ import annotations

from bench_common import percentile, percentiles, rounded
from bench_launcher import Daemon
from counting_daemon import STAGES


def split_ms(ids, sent_wall: dict[str, float], listener) -> dict:
    """publish -> FILLED recorded by the daemon, and FILLED recorded -> received here."""
    inbound = [(listener.filled_event_at[s] - sent_wall[s]) * 1000 for s in ids
               if s in listener.filled_event_at and s in sent_wall]
    outbound = [(listener.filled_recv_wall[s] - listener.filled_event_at[s]) * 1000
                for s in ids if s in listener.filled_event_at]
    return {"to_filled_recorded_p50_ms": rounded(percentile(inbound, 50)),
            "to_filled_recorded_p99_ms": rounded(percentile(inbound, 99)),
            "recorded_to_received_p50_ms": rounded(percentile(outbound, 50)),
            "recorded_to_received_p99_ms": rounded(percentile(outbound, 99))}


def deciles(ids: list[str], received: dict[str, float], t0: float) -> list[float | None]:
    """signals/s within each tenth of the run (by completion order): shows slow-down."""
    times = sorted(received[s] for s in ids if s in received)
    if len(times) < 10:
        return []
    rates, previous = [], t0
    step = len(times) / 10
    for k in range(1, 11):
        index = int(round(k * step)) - 1
        t = times[index]
        count = int(round(k * step)) - int(round((k - 1) * step))
        rates.append(round(count / (t - previous), 1) if t > previous else None)
        previous = t
    return rates


def steady_rate(ids: list[str], received: dict[str, float]) -> float | None:
    """signals/s from the 10th to the last fill: the rate once the pipe is full."""
    times = sorted(received[s] for s in ids if s in received)
    if len(times) < 20:
        return None
    start = times[len(times) // 10]
    span = times[-1] - start
    return round((len(times) - 1 - len(times) // 10) / span, 1) if span > 0 else None


def diff_stats(before: dict | None, after: dict | None, signals: int) -> dict | None:
    if after is None:
        return None
    before = before or {}
    rows, positions = {}, {}
    for key, value in after.items():
        calls = value["calls"] - before.get(key, {}).get("calls", 0)
        seconds = value["seconds"] - before.get(key, {}).get("seconds", 0.0)
        if key.startswith("position_book."):
            positions[key.split(".", 1)[1]] = calls
        elif calls:
            rows[key] = {"calls": calls, "per_signal": round(calls / signals, 3),
                         "seconds": round(seconds, 4),
                         "us_per_call": round(1e6 * seconds / calls, 1)}
    total_calls = sum(r["calls"] for r in rows.values())
    total_seconds = sum(r["seconds"] for r in rows.values())
    return {"per_signal": round(total_calls / signals, 2),
            "store_seconds_per_signal_ms": round(1000 * total_seconds / signals, 3),
            "position_attempts": positions.get("attempts", 0),
            "position_conflicts": positions.get("conflicts", 0),
            "by_call": dict(sorted(rows.items(), key=lambda kv: -kv[1]["seconds"]))}


def stall_diff(before: dict | None, after: dict | None) -> dict | None:
    """Event-loop stalls (> 50 ms without a tick) over the window, with the sampled stacks."""
    if not after or "stalls" not in after:
        return None
    old = (before or {}).get("stalls") or {"count": 0, "total_s": 0.0, "sampled_stacks": []}
    new = after["stalls"]
    counts = dict(map(tuple, old["sampled_stacks"]))
    stacks = [[key, n - counts.get(key, 0)] for key, n in new["sampled_stacks"]
              if n - counts.get(key, 0) > 0]
    return {"count": new["count"] - old["count"],
            "total_s": round(new["total_s"] - old["total_s"], 3), "max_ms_ever": new["max_ms"],
            "sampled_stacks": sorted(stacks, key=lambda kv: -kv[1])[:15]}


def gc_diff(before: dict | None, after: dict) -> dict | None:
    """The daemon's garbage-collector pauses over the window, per generation (the longest is
    over the daemon's life)."""
    if "gc" not in after:
        return None
    old = (before or {}).get("gc") or {}
    out = {}
    for generation, new in after["gc"].items():
        was = old.get(generation, {"count": 0, "total_s": 0.0})
        out[generation] = {"count": new["count"] - was["count"],
                           "total_ms": round(1000 * (new["total_s"] - was["total_s"]), 1),
                           "max_ms_ever": new["max_ms"]}
    return out


def internal_latency(daemon: Daemon, ids: list[str], before: dict | None = None) -> dict:
    """The daemon's own share (instrumented daemons only): Pub/Sub client hands the signal
    over -> its FILLED confirmation accepted by Pub/Sub; and the loop stalls meanwhile."""
    snapshot = daemon.instrument_snapshot()
    if not snapshot:
        return {}
    values = [snapshot["internal_ms"][s] for s in ids if s in snapshot["internal_ms"]]
    stages = snapshot.get("stages_ms", {})
    by_stage = {}
    for stage in STAGES:
        times = [stages[s][stage] for s in ids if stage in stages.get(s, {})]
        by_stage[stage] = [rounded(percentile(times, 50)), rounded(percentile(times, 99))]
    return {"loop_stalls": stall_diff(before, snapshot), "gc_pauses": gc_diff(before, snapshot),
            "daemon_internal_n": len(values),
            "daemon_stages_p50_p99_ms": by_stage,
            "daemon_worst_1pct_steps_ms": worst_steps(snapshot, ids),
            "store_jobs": store_jobs_diff(before, snapshot),
            **percentiles(values, "daemon_internal_")}


def worst_steps(snapshot: dict, ids: list[str], share: float = 0.01) -> dict:
    """Where the slowest `share` of signals (by daemon-internal time) waited: the mean time
    from each stage to the next (from the client's callback, `arrived`, to `handed` first)."""
    internal, stages = snapshot["internal_ms"], snapshot.get("stages_ms", {})
    timed = sorted((s for s in ids if s in internal and s in stages), key=internal.get)
    worst = timed[-max(1, int(len(timed) * share)):] if timed else []
    steps: dict[str, list[float]] = {}
    for signal_id in worst:
        previous, previous_at = "arrived", 0.0
        for stage in STAGES:
            at = stages[signal_id].get(stage)
            if at is not None:
                steps.setdefault(f"{previous}->{stage}", []).append(at - previous_at)
                previous, previous_at = stage, at
    return {step: rounded(sum(gaps) / len(gaps)) for step, gaps in steps.items()}


def store_jobs_diff(before: dict | None, after: dict) -> dict:
    """Store-thread jobs over the window, per lane and kind: count, mean ms queued and
    running, and the longest run ever (instrumented daemons)."""
    old = (before or {}).get("store_jobs") or {}
    out = {}
    for kind, new in (after.get("store_jobs") or {}).items():
        was = old.get(kind, {"count": 0, "queued_s": 0.0, "run_s": 0.0})
        count = new["count"] - was["count"]
        if count:
            out[kind] = {"count": count,
                         "queued_mean_ms": rounded(1000 * (new["queued_s"] - was["queued_s"])
                                                   / count),
                         "run_mean_ms": rounded(1000 * (new["run_s"] - was["run_s"]) / count),
                         "queued_max_ms_ever": new["queued_max_ms"],
                         "run_max_ms_ever": new["run_max_ms"]}
    return out
