"""Summaries of py-spy raw (collapsed) stacks of the daemon."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

PROJECT_PREFIXES = ("execution_service/", "brokers/")


PROJECT_ROOTS = ("execution_service/cli/app.py", "execution_service/run.py",
                 "execution_service/__main__.py")


def _frames(stack: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(thread label, [(function, short file, line)]) of one collapsed py-spy stack."""
    parts = stack.split(";")
    thread = "?"
    frames = []
    for part in parts:
        if part.startswith(("thread ", "process ")):
            thread = part
            continue
        name, _, where = part.partition(" (")
        filename, _, line = where.rstrip(")").rpartition(":")
        frames.append((name, filename, line))
    return thread, frames


def summarize_profile(path: Path, top: int = 25) -> dict:
    """Shares of the samples: per thread; per function (self and inclusive); per function of
    the service itself (execution_service/, brokers/); and where the service's code hands over
    to a library (deepest service frame with its line -> the library function it called)."""
    threads: Counter = Counter()
    inclusive: Counter = Counter()
    own: Counter = Counter()
    project: Counter = Counter()
    handoff: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        total += count
        thread, frames = _frames(stack)
        threads[thread.split(": ", 1)[-1] if ": " in thread else thread] += count
        names = [f"{n} ({'/'.join(f.split('/')[-2:])})" for n, f, _ in frames]
        for name in set(names):
            inclusive[name] += count
        if names:
            own[names[-1]] += count
        mine = [(i, fr) for i, fr in enumerate(frames) if fr[1].startswith(PROJECT_PREFIXES)
                and fr[1] not in PROJECT_ROOTS]
        for name in {f"{n} ({f})" for _, (n, f, _) in mine}:
            project[name] += count
        if mine:
            i, (n, f, ln) = mine[-1]
            below = frames[i + 1] if i + 1 < len(frames) else None
            callee = f" -> {below[0]} ({'/'.join(below[1].split('/')[-2:])})" if below else \
                " (self)"
            handoff[f"{n} ({f}:{ln}){callee}"] += count
        else:
            handoff[f"[no service frame] {thread.split(': ', 1)[-1]}"] += count

    def share(counter: Counter, limit: int = top) -> list[tuple[str, float]]:
        return [(name, round(100 * value / total, 1)) for name, value in
                counter.most_common(limit)] if total else []

    return {"samples": total, "threads": share(threads, 10), "self": share(own),
            "inclusive": share(inclusive), "service_inclusive": share(project),
            "handoff": share(handoff)}


def print_profile(name: str, summary: dict, top: int = 15) -> None:
    print(f"\nprofile {name}: {summary['samples']} samples (py-spy, all threads, idle excluded)")
    print("  threads: " + ", ".join(f"{t} {p}%" for t, p in summary["threads"][:6]))
    for title, key in (("self time (leaf function)", "self"),
                       ("service functions, inclusive", "service_inclusive"),
                       ("where service code hands over (line -> callee)", "handoff")):
        print(f"  {title}:")
        for function, pct in summary[key][:top]:
            print(f"    {pct:5.1f}%  {function}")
