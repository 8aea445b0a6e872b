"""The benchmark's table of figures against targets, and the printed report."""

from __future__ import annotations

from pathlib import Path

from bench_common import TARGETS
from profile_summary import print_profile, summarize_profile


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


Row = tuple[str, str, str, str]


def _pipeline_rows(store: str, pipe: dict, base_rate: float | None) -> list[Row]:
    rate = pipe["signals_per_s"]
    extra = "" if pipe["complete"] else f" ({pipe['filled']}/{pipe['n']} in time)"
    rows = [(f"pipeline {store}: signals/s", f"{rate:,.1f}{extra}", "info", "-")]
    if base_rate:
        ratio = rate / base_rate
        target = TARGETS[f"ratio_{store}"]
        pipe["ratio"] = round(ratio, 3)
        rows.append((f"ratio {store} (signals/s / msgs/s)", f"{ratio:.3f}", f">= {target}",
                     verdict(ratio >= target and pipe["complete"])))
    optional = [
        ("daemon_cpu_ms_per_signal", f"  daemon CPU {store}",
         lambda v: f"{v:.2f} ms/signal ({pipe['daemon_cpu_pct']:.0f}% of a core)"
         + ("" if pipe["complete"] else "; per FILLED received, run incomplete")),
        ("steady_signals_per_s", f"  {store} steady (10%..100% of fills)",
         lambda v: f"{v:,.1f} signals/s"),
        ("deciles_signals_per_s", f"  {store} first/last tenth",
         lambda v: f"{v[0]} / {v[-1]} signals/s"),
        ("recorded_to_received_p50_ms", f"  {store} FILLED recorded -> received p50",
         lambda v: f"{v:,.0f} ms (outbox wait + hop)"),
        ("store_calls", f"  store calls {store}",
         lambda v: f"{v['per_signal']} /signal, {v['store_seconds_per_signal_ms']} ms/signal"),
    ]
    for key, label, show in optional:
        if pipe.get(key):
            rows.append((label, show(pipe[key]), "info", "-"))
    return rows


def _hot_rows(store: str, hot: dict, spread: dict | None) -> list[Row]:
    """The hot symbol's throughput as a share of the spread's, measured in the same run."""
    extra = "" if hot["complete"] else f" ({hot['filled']}/{hot['n']} in time)"
    rows = [(f"hot symbol {store}: signals/s", f"{hot['signals_per_s']:,.1f}{extra}", "info",
             "-")]
    if spread and spread["signals_per_s"]:
        share = hot["signals_per_s"] / spread["signals_per_s"]
        hot["share_of_spread"] = round(share, 3)
        rows.append((f"hot/spread {store}", f"{share:.3f}", f">= {TARGETS['hot_share']}",
                     verdict(share >= TARGETS["hot_share"] and hot["complete"])))
    if hot.get("daemon_cpu_ms_per_signal"):
        rows.append((f"  daemon CPU {store} hot", f"{hot['daemon_cpu_ms_per_signal']:.2f} "
                     f"ms/signal ({hot['daemon_cpu_pct']:.0f}% of a core)", "info", "-"))
    calls = hot.get("store_calls")
    if calls:
        rows.append((f"  store calls {store} hot", f"{calls['per_signal']} /signal, "
                     f"{calls['store_seconds_per_signal_ms']} ms/signal; position moves "
                     f"{calls['position_attempts']}, conflicts {calls['position_conflicts']}",
                     "info", "-"))
    return rows


def _latency_rows(lat: dict, floor: dict | None, two_hops: dict | None) -> list[Row]:
    above = None if not two_hops or None in (two_hops["p99_ms"], lat["p99_ms"]) \
        else lat["p99_ms"] - two_hops["p99_ms"]
    ok = None if above is None else above <= TARGETS["latency_above_floor_p99_ms"] \
        and lat["complete"]
    rows = [
        ("latency p50 (publish->FILLED)", f"{lat['p50_ms']} ms", "info", "-"),
        ("latency p95", f"{lat['p95_ms']} ms", "info", "-"),
        ("latency p99", f"{lat['p99_ms']} ms (max {lat['max_ms']})", "info", "-"),
        ("  at rate", f"{lat['achieved_send_rate']}/s, {lat['filled']}/{lat['signals']} "
         f"filled ({lat.get('store', 'mongomock')})", "info", "-"),
        ("  publish -> FILLED recorded p50/p99", f"{lat.get('to_filled_recorded_p50_ms')} / "
         f"{lat.get('to_filled_recorded_p99_ms')} ms", "info", "-"),
        ("  FILLED recorded -> received p50/p99", f"{lat.get('recorded_to_received_p50_ms')} / "
         f"{lat.get('recorded_to_received_p99_ms')} ms", "info", "-"),
    ]
    if lat.get("daemon_internal_p50_ms") is not None:
        rows.append(("  daemon-internal p50/p95/p99", f"{lat['daemon_internal_p50_ms']} / "
                     f"{lat['daemon_internal_p95_ms']} / {lat['daemon_internal_p99_ms']} ms",
                     "info", "-"))
    stalls = lat.get("loop_stalls")
    if stalls:
        rows.append(("  event-loop stalls > 50 ms", f"{stalls['count']} ({stalls['total_s']} s "
                     f"in all, longest ever {stalls['max_ms_ever']} ms)", "info", "-"))
    if lat.get("gc_pauses"):
        rows.append(("  garbage-collector pauses (gen: n, ms)",
                     ", ".join(f"{gen}: {v['count']}, {v['total_ms']} (max {v['max_ms_ever']})"
                               for gen, v in lat["gc_pauses"].items()), "info", "-"))
    if lat.get("daemon_stages_p50_p99_ms"):
        stages = lat["daemon_stages_p50_p99_ms"]
        rows.append(("  daemon stages p50 (p99), ms after the client's callback",
                     ", ".join(f"{name} {v[0]} ({v[1]})" for name, v in stages.items()),
                     "info", "-"))
    if lat.get("daemon_worst_1pct_steps_ms"):
        rows.append(("  the slowest 1%: mean ms per step",
                     ", ".join(f"{step} {ms}" for step, ms in
                               lat["daemon_worst_1pct_steps_ms"].items()), "info", "-"))
    if lat.get("store_jobs"):
        busiest = sorted(lat["store_jobs"].items(),
                         key=lambda kv: -kv[1]["count"] * kv[1]["run_mean_ms"])[:5]
        rows.append(("  store thread: n, mean ms queued / running (busiest)",
                     ", ".join(f"{kind} {v['count']}, {v['queued_mean_ms']} / "
                               f"{v['run_mean_ms']}" for kind, v in busiest), "info", "-"))
    if floor:
        rows.append((f"  one bare hop p50/p99 (floor, {floor.get('streams', 1)} streams)",
                     f"{floor['p50_ms']} / {floor['p99_ms']} ms", "info", "-"))
    if two_hops:
        rows.append(("  two hops via a do-nothing relay p50/p95/p99",
                     f"{two_hops['p50_ms']} / {two_hops['p95_ms']} / {two_hops['p99_ms']} ms "
                     "(the floor of a signal's path)", "info", "-"))
        if two_hops["p99_ms"] is not None and lat["p99_ms"] is not None:
            rows.append(("the daemon's work above that floor, p50/p99",
                         f"{lat['p50_ms'] - two_hops['p50_ms']:+.1f} / {above:+.1f} ms",
                         f"p99 <= +{TARGETS['latency_above_floor_p99_ms']:g} ms", verdict(ok)))
    return rows


def _memory_rows(mem: dict) -> list[Row]:
    rows = [(f"RSS after {sample['signals']:,} ({mem['store']})", f"{sample['rss_mb']:.1f} MB",
             "info", "-") for sample in mem["samples"]]
    growth = mem.get("rss_growth_mb")
    a, b = mem["growth_between"]
    rows.append((f"RSS growth {a:,} -> {b:,}", "n/a" if growth is None else f"{growth:+.1f} MB",
                 f"< {TARGETS['rss_growth_mb']:g} MB",
                 verdict(None if growth is None else growth < TARGETS["rss_growth_mb"])))
    return rows


def build_table(results: dict) -> list[Row]:
    rows: list[Row] = []
    base = results.get("baseline")
    base_rate = base["msgs_per_s"] if base else None
    if base:
        rows.append((f"baseline: emulator bare msgs/s, {base['streams']} stream(s)",
                     f"{base['msgs_per_s']:,.0f}"
                     + ("" if base["complete"] else " (incomplete)"), "info", "-"))
        more = results.get("baseline_more_streams")
        if more:
            rows.append((f"  the same over {more['streams']} streams", f"{more['msgs_per_s']:,.0f}"
                         " (more streams, more 50 ms emulator ticks)", "info", "-"))
        rows.append(("  CPU per bare msg: emulator / client",
                     f"{base['emulator_cpu_ms_per_msg']} / {base['loadgen_cpu_ms_per_msg']} ms",
                     "info", "-"))
    for store in ("mongomock", "embedded"):
        pipe = results.get("pipeline", {}).get(store)
        if pipe:
            rows += _pipeline_rows(store, pipe, base_rate)
        hot = results.get("hot", {}).get(store)
        if hot:
            rows += _hot_rows(store, hot, pipe)
    if results.get("latency", {}).get("signals"):
        rows += _latency_rows(results["latency"], results.get("transport_floor"),
                              results.get("two_hop_floor"))
    if results.get("memory"):
        rows += _memory_rows(results["memory"])
    return rows


def print_table(rows: list[Row]) -> None:
    headers = ("figure", "value", "target", "result")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)] \
        if rows else [len(h) for h in headers]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(value.ljust(w) for value, w in zip(row, widths, strict=True)))


def report(args, results: dict) -> None:
    rows = build_table(results)
    results["table"] = [dict(zip(("figure", "value", "target", "result"), r, strict=True))
                        for r in rows]
    print()
    print_table(rows)
    print(f"\nwall time {results['wall_s']}s; load average at start "
          f"{results['machine']['loadavg_at_start']}; code {results['code']['head']}"
          + (" + uncommitted changes" if results["code"]["dirty"] else ""))
    runs = [(f"{store}, spread", pipe) for store, pipe in results.get("pipeline", {}).items()]
    runs += [(f"{store}, hot", pipe) for store, pipe in results.get("hot", {}).items()]
    for store, pipe in runs:
        if pipe.get("store_calls"):
            print(f"\nstore calls per signal ({store}, top by time):")
            for key, row in list(pipe["store_calls"]["by_call"].items())[:14]:
                print(f"  {key:48s} {row['per_signal']:6.2f}/signal  "
                      f"{row['us_per_call']:9.1f} us/call")
        if pipe.get("profile"):
            summary = summarize_profile(Path(pipe["profile"]))
            pipe["profile_summary"] = summary
            print_profile(f"pipeline {store}", summary)
    phases = [(f"pipeline {k}", v) for k, v in runs]
    phases.append(("latency", results.get("latency") or {}))
    for name, figures in phases:
        stalls = figures.get("loop_stalls")
        if stalls and stalls["sampled_stacks"]:
            print(f"\nevent-loop stalls in {name}: {stalls['count']}, {stalls['total_s']} s; "
                  f"main-thread stacks sampled every 10 ms while stalled:")
            total = sum(n for _, n in stalls["sampled_stacks"]) or 1
            for key, n in stalls["sampled_stacks"][:10]:
                print(f"  {100 * n / total:5.1f}%  {key}")
    if args.profile and (Path(args.profile) / "latency.txt").exists():
        summary = summarize_profile(Path(args.profile) / "latency.txt")
        results.setdefault("latency", {})["profile_summary"] = summary
        print_profile("latency", summary)
