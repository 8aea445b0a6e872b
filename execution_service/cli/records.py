"""What the audit store holds, newest first: `orders`, `positions`, one signal's journey
(`show`, issue 8) and `confirmations` (or, with --follow, the confirmations as published)."""

from __future__ import annotations

import json
import signal
import sys
import uuid

import click

from execution_service.cli.common import (
    Refused,
    cli_settings,
    print_json,
    print_rows,
    pubsub_for,
    with_store,
)
from execution_service.domain.text import single_line
from execution_service.domain.views import (
    NO_POSITIONS,
    confirmation_line,
    order_line,
    position_line,
)
from execution_service.errors import FatalConfigError
from execution_service.service.desk import shown_positions
from execution_service.service.journey import render_journey, signal_journey


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print full records as JSON.")
@click.option("--limit", default=20, show_default=True, help="How many, newest first (0: all).")
def orders(as_json: bool, limit: int) -> None:
    """Execution records, newest first."""
    records = with_store(lambda store: store.recent_records(limit))
    print_rows(records, as_json, order_line, "no orders yet")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the positions as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Closed positions too.")
def positions(as_json: bool, show_all: bool) -> None:
    """Open positions (with --all, closed ones too)."""
    rows = with_store(lambda store: shown_positions(store, show_all))
    print_rows(rows, as_json, position_line, "no positions" if show_all else NO_POSITIONS)


@click.command("show")
@click.argument("signal_id")
@click.option("--json", "as_json", is_flag=True, help="Print the journey as JSON.")
def show(signal_id: str, as_json: bool) -> None:
    """One signal's journey: every event, confirmation and position it moved."""
    journey = with_store(lambda store: signal_journey(store, signal_id))
    if journey is None:
        raise Refused(f"no signal {signal_id!r} in the audit store (no execution record, no "
                      f"signal_store document)")
    if as_json:
        print_json(journey)
    else:
        # each line is the service's; what it quotes from a message is escaped
        click.echo("\n".join(single_line(line) for line in render_journey(journey).split("\n")))


@click.command("confirmations")
@click.option("--json", "as_json", is_flag=True, help="Print the confirmations as JSON.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0),
              help="How many, newest first (0: all).")
@click.option("--follow", is_flag=True,
              help="Print what arrives on execution-confirmations until Ctrl-C, through a "
                   "temporary subscription removed on exit.")
def confirmations(as_json: bool, limit: int, follow: bool) -> None:
    """The latest confirmations from the store, or (--follow) as they are published."""
    if follow:
        _follow(as_json)
        return
    records = with_store(lambda store: store.recent_records(limit))
    print_rows(latest_confirmations(records, limit), as_json, confirmation_line,
               "no confirmations yet")


def latest_confirmations(records: list[dict], limit: int) -> list[dict]:
    """The confirmations kept in these records (the outbox), newest first."""
    rows = [payload for doc in records for payload in doc.get("confirmations") or []]
    rows.sort(key=lambda row: (row.get("at") or "", row.get("sequence") or 0), reverse=True)
    return rows[:limit] if limit else rows


def _follow(as_json: bool) -> None:
    settings = cli_settings()
    pubsub, names = pubsub_for(settings)
    subscriber = pubsub.pubsub_v1.SubscriberClient()
    topic = names.confirmations_topic
    path = subscriber.subscription_path(names.project, f"confirmations-follow-"
                                        f"{uuid.uuid4().hex[:12]}")
    try:
        subscriber.create_subscription(request={"name": path, "topic": topic,
                                                "ack_deadline_seconds": 30})
    except Exception as e:  # the topic is missing, or Pub/Sub is down: say which
        raise FatalConfigError(f"cannot subscribe to {topic}: {e} (run `execution-service "
                               "setup-pubsub`)") from None
    click.echo(f"following {topic} (Ctrl-C stops; the subscription is removed)", err=True)

    def echo(message) -> None:
        try:
            row = json.loads(message.data)
        except ValueError:
            row = {"signal_id": "?", "body": message.data.decode("utf-8", "replace")}
        click.echo(json.dumps(row, separators=(",", ":")) if as_json
                   else confirmation_line(row))
        sys.stdout.flush()
        message.ack()

    future = subscriber.subscribe(path, echo)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        future.result()
    except KeyboardInterrupt:
        pass
    finally:
        future.cancel()
        subscriber.delete_subscription(request={"subscription": path})
        subscriber.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends --follow like Ctrl-C: the subscription is removed
