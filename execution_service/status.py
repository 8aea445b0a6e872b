"""What `status` reports: the freshest heartbeat plus the store's own statistics."""

from __future__ import annotations

from datetime import datetime

from execution_service.config import Settings, secret_presence
from execution_service.domain.orders import OPEN_STATUSES
from execution_service.domain.records import as_utc, iso
from execution_service.service.risk import active_halts, halt_scope

STILL_TRUE = ("host", "pid", "version", "started_at", "last_heartbeat", "stopped")


def read_status(store, settings: Settings, now: datetime) -> dict:
    heartbeats = store.read_statuses()
    latest = heartbeats[0] if heartbeats else None
    by_status = store.counts_by_status()
    report: dict = {
        "running": False, "healthy": False, "heartbeat_age_seconds": None,
        "uptime_seconds": None, "service": None,
        "orders_received": sum(by_status.values()),
        "orders_filled": by_status.get("FILLED", 0),
        "orders_rejected": by_status.get("REJECTED", 0),
        "orders_cancelled": by_status.get("CANCELLED", 0),
        "orders_open": sum(by_status.get(s, 0) for s in OPEN_STATUSES),
        "store": {"backend": _backend(settings), "database": settings.MONGODB_DATABASE,
                  "records_by_status": by_status,
                  "open_positions": len(store.list_positions("OPEN")),
                  "accounts": store.count_accounts()},
    }
    report["halts"] = active_halts(store)
    report["secrets"] = secret_presence(settings)
    if latest is None:
        report["reason"] = "no daemon has ever written a heartbeat to this store"
        return report
    age = (now - as_utc(latest["last_heartbeat"])).total_seconds()
    fresh = age <= max(3 * settings.HEARTBEAT_SECONDS, 10.0) and not latest.get("stopped")
    report.update(
        running=fresh, healthy=fresh and bool(latest.get("consuming")),
        heartbeat_age_seconds=round(age, 1),
        uptime_seconds=round((now - as_utc(latest["started_at"])).total_seconds(), 1)
        if fresh else None,
        service={key: value for key, value in latest.items() if key != "_id"},
        notifier=latest.get("notifier"), risk=latest.get("risk"),
        problems=latest.get("problems") or [] if fresh else [],
    )
    if report["problems"]:
        report["healthy"] = False
    if not fresh:
        report["reason"] = ("stopped cleanly" if latest.get("stopped") else
                            f"heartbeat is stale ({age:.0f}s old)")
        # what a stopped daemon last saw (connections, in-flight work) is not true any more
        report["service"] = {key: latest.get(key) for key in STILL_TRUE if key in latest}
        report["notifier"] = report["risk"] = None
    return report


def _backend(settings: Settings) -> str:
    if settings.embedded_store_path is not None:
        return f"embedded ({settings.embedded_store_path})"
    return "mongomock" if settings.MONGODB_URI.startswith("mongomock") else "mongodb"


def render_status(report: dict) -> str:
    service = report.get("service") or {}
    lines = [
        f"Running:   {'yes' if report['running'] else 'no'}"
        + (f" ({report['reason']})" if report.get("reason") else ""),
        f"Heartbeat: {iso(service.get('last_heartbeat')) or '-'} "
        f"(age {report['heartbeat_age_seconds']}s)",
        f"Uptime:    {report['uptime_seconds'] or '-'}s   pid {service.get('pid', '-')} on "
        f"{service.get('host', '-')}",
        "Brokers:   " + (", ".join(f"{name} {'connected' if b['connected'] else 'DISCONNECTED'}"
                                   for name, b in (service.get("brokers") or {}).items()) or "-"),
        f"Orders:    received {report['orders_received']}, filled {report['orders_filled']}, "
        f"rejected {report['orders_rejected']}, cancelled {report['orders_cancelled']}, "
        f"open {report['orders_open']}",
        "Halts:     " + (", ".join(f"{halt_scope(h)}: {h.get('reason')}"
                                   for h in report.get("halts", [])) or "none"),
        "Problems:  " + ("; ".join(report.get("problems") or []) or "none"),
        f"Store:     {report['store']['backend']}: {report['store']['records_by_status']}, "
        f"{report['store']['open_positions']} open positions",
        "Secrets:   " + ", ".join(f"{name} {state}"
                                  for name, state in report.get("secrets", {}).items()),
    ]
    return "\n".join(lines)


def status_text(store, settings: Settings):
    """The rendered status as of a time: what the operators' chat desk is given."""
    return lambda now: render_status(read_status(store, settings, now))
