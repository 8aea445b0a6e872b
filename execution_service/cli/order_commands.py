"""Operators' cancel and modify (SPEC §11): `execution-service cancel|modify SIGNAL_ID`.

The CLI publishes the command on `trading-orders` with a generated `request_id`, exactly as the
strategy engine would, and waits for the daemon's answer in `order_commands`. The daemon owns
the order and the broker session (an IB client id, a Kite token, the lease that says which
replica works the order); going through the same topic gives the operator's request the same
validation, idempotency, audit trail, confirmations and crash recovery as an upstream one, and
works with any number of replicas. What certainly cannot be done (no such order, already
filled) is refused before anything is sent.
"""

from __future__ import annotations

import json
import time
import uuid

import click

from execution_service.adapters.command_log import CommandLog
from execution_service.bootstrap import open_app_store
from execution_service.cli.common import (
    Refused,
    cli_settings,
    operator,
    pubsub_for,
    with_store,
)
from execution_service.domain.commands import (
    CancelOrder,
    CommandEvent,
    InvalidCommand,
    UnusableCommand,
    cancel_refusal,
    modify_refusal,
    parse_command,
)
from execution_service.domain.records import state_of
from execution_service.domain.signals import SIGNAL_ID_PATTERN
from execution_service.service.commands import KEPT

POLL_SECONDS = 0.2
ANSWERED = "DONE"


def _command(action: str, signal_id: str, **fields):
    if not SIGNAL_ID_PATTERN.match(signal_id):
        raise Refused(f"SIGNAL_ID {signal_id!r} is not a signal id (1-128 characters of A-Z a-z "
                      f"0-9 _ . : -)")
    body = {"action": action, "request_id": f"cli-{uuid.uuid4().hex[:16]}",
            "signal_id": signal_id, "by": operator(),
            **{name: value for name, value in fields.items() if value is not None}}
    parsed = parse_command(body)
    if isinstance(parsed, InvalidCommand | UnusableCommand):
        raise Refused(parsed.reason)
    return parsed, body


def _send_and_wait(command, body: dict, wait: float) -> dict:
    """Publish on trading-orders, then the daemon's answer (the order_commands document)."""
    settings = cli_settings()
    pubsub, names = pubsub_for(settings)
    publisher = pubsub.pubsub_v1.PublisherClient()
    publisher.publish(names.orders_topic, json.dumps(body).encode()).result(timeout=30)
    handle, _store = open_app_store(settings)
    try:
        log = CommandLog(handle.database)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            answer = log.get(command.request_id)
            if answer is not None and answer.get("state") == ANSWERED:
                return answer
            time.sleep(POLL_SECONDS)
    finally:
        handle.close()
    raise Refused(f"request {command.request_id} sent on {names.orders_topic}, but no daemon "
                  f"answered within {wait:g}s: is it running (`execution-service status`)?")


def _record(signal_id: str) -> dict | None:
    return with_store(lambda store: store.get_record(signal_id))


@click.command()
@click.argument("signal_id")
@click.option("--reason", help="Why; kept with the request and shown to traders.")
@click.option("--wait", default=15.0, show_default=True, help="Seconds to wait for the daemon.")
def cancel(signal_id: str, reason: str | None, wait: float) -> None:
    """Cancel an order (one that has not arrived yet is refused when it does)."""
    command, body = _command("CANCEL", signal_id, reason=reason)
    assert isinstance(command, CancelOrder)
    record = _record(signal_id)
    refusal = None if record is None else cancel_refusal(state_of(record))
    if refusal is not None:
        raise Refused(f"cannot cancel {signal_id}: {refusal}")
    answer = _send_and_wait(command, body, wait)
    outcome, why = answer.get("outcome"), answer.get("reason")
    if outcome == CommandEvent.CANCEL_REJECTED:
        raise Refused(f"cannot cancel {signal_id}: {why}")
    if outcome == KEPT:
        click.echo(f"{signal_id} not received yet: it will be refused when it arrives "
                   f"(request {command.request_id})")
        return
    status = (_record(signal_id) or {}).get("status")
    click.echo(f"cancel of {signal_id} requested (request {command.request_id}); "
               f"order now {status}")


@click.command()
@click.argument("signal_id")
@click.option("--limit-price", type=float, help="The new limit price (LIMIT, STOP_LIMIT).")
@click.option("--stop-price", type=float, help="The new stop price (STOP, STOP_LIMIT).")
@click.option("--quantity", type=float, help="The new quantity (not below what has filled).")
@click.option("--wait", default=15.0, show_default=True, help="Seconds to wait for the daemon.")
def modify(signal_id: str, limit_price: float | None, stop_price: float | None,
           quantity: float | None, wait: float) -> None:
    """Change a working order's limit price, stop price or quantity."""
    command, body = _command("MODIFY", signal_id, limit_price=limit_price,
                             stop_price=stop_price, quantity=quantity)
    record = _record(signal_id)
    if record is None:
        raise Refused(f"cannot modify {signal_id}: no order {signal_id} has been received")
    refusal = modify_refusal(state_of(record), str(record.get("order_type")), command)
    if refusal is not None:
        raise Refused(f"cannot modify {signal_id}: {refusal}")
    answer = _send_and_wait(command, body, wait)
    if answer.get("outcome") != CommandEvent.MODIFIED:
        raise Refused(f"cannot modify {signal_id}: {answer.get('reason')}")
    changed = ", ".join(f"{name} {value:g}" for name, value in command.changes().items())
    click.echo(f"{signal_id} modified: {changed} (request {command.request_id})")
