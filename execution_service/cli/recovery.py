"""Recovery commands: reconcile with the brokers, inspect and requeue dead letters."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import click

from execution_service.bootstrap import open_app_store, open_brokers
from execution_service.cli.common import cli_settings, print_json, pubsub_for
from execution_service.domain.records import iso
from execution_service.domain.text import single_line
from execution_service.errors import FatalConfigError
from execution_service.service.reconcile import reconcile


@click.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reconcile_command(as_json: bool) -> None:
    """The brokers' orders and positions against the store. Exit 1 on any mismatch."""
    settings = cli_settings()
    handle, store = open_app_store(settings)
    try:
        brokers = open_brokers(settings, store)
        report = asyncio.run(_reconcile(store, brokers))
    finally:
        handle.close()
    if as_json:
        print_json(report)
    else:
        click.echo(f"broker orders {report['broker_orders']}, records {report['records']}, "
                   f"mismatches {len(report['mismatches'])}")
        for mismatch in report["mismatches"]:
            click.echo("  " + ", ".join(f"{k}={v}" for k, v in mismatch.items()))
    sys.exit(1 if report["mismatches"] else 0)


async def _reconcile(store, brokers) -> dict:
    try:
        return await reconcile(store, brokers)
    finally:
        await brokers.close()


@click.command("dead-letters")
@click.option("--json", "as_json", is_flag=True, help="Print the dead letters as JSON.")
@click.option("--requeue", "requeue_id", help="Republish this dead letter to trading-orders.")
@click.option("--max", "max_messages", default=100, show_default=True,
              help="Read at most this many.")
def dead_letters_command(as_json: bool, requeue_id: str | None, max_messages: int) -> None:
    """What landed in trading-orders-dead-letter (left there unless requeued)."""
    settings = cli_settings()
    pubsub, names = pubsub_for(settings)
    subscriber = pubsub.pubsub_v1.SubscriberClient()
    try:
        received = subscriber.pull(subscription=names.dead_letter_subscription,
                                   max_messages=max_messages, timeout=10).received_messages
    except Exception as e:  # the subscription is missing, or Pub/Sub is down: say which
        raise FatalConfigError(f"cannot read {names.dead_letter_subscription}: {e} "
                               "(run `execution-service setup-pubsub`)") from None
    log = Path(settings.LOG_DIR) / "execution_service.log"
    letters = [_describe(m, log) for m in received]
    chosen = [m for m in received if m.message.message_id == requeue_id]
    if requeue_id is not None:
        _requeue(pubsub, names, subscriber, chosen, requeue_id)
    keep = [m.ack_id for m in received if m not in chosen]
    if keep:  # listing is not consuming: hand them back at once
        subscriber.modify_ack_deadline(subscription=names.dead_letter_subscription,
                                       ack_ids=keep, ack_deadline_seconds=0)
    if requeue_id is None:
        if as_json:
            print_json(letters)
        else:
            for letter in letters:
                # reason and body came from a message: one line each, escaped
                click.echo(f"{letter['id']}  attempts {letter['delivery_count'] or '-'}  "
                           f"{single_line(letter['reason'])}\n"
                           f"    {single_line(letter['body'][:200])}")
            click.echo(f"{len(letters)} dead letters")


def _requeue(pubsub, names, subscriber, chosen, requeue_id: str) -> None:
    if not chosen:
        raise FatalConfigError(f"no dead letter {requeue_id} (list them with `dead-letters`)")
    message = chosen[0].message
    if message.attributes.get("dead_letter_truncated"):
        raise FatalConfigError(f"dead letter {requeue_id} keeps only the first "
                               f"{len(message.data):,} of its "
                               f"{message.attributes.get('dead_letter_original_bytes')} bytes: "
                               "it cannot be requeued (ask upstream to send it again)")
    attributes = {k: v for k, v in message.attributes.items()
                  if not k.startswith(("CloudPubSubDeadLetter", "dead_letter_"))}
    publisher = pubsub.pubsub_v1.PublisherClient()
    new_id = publisher.publish(names.orders_topic, message.data, **attributes).result(timeout=30)
    subscriber.acknowledge(subscription=names.dead_letter_subscription,
                           ack_ids=[chosen[0].ack_id])
    click.echo(f"requeued {requeue_id} to {names.orders_topic} as message {new_id}")


def _describe(received, log: Path) -> dict:
    message = received.message
    body = message.data.decode("utf-8", "replace")
    attributes = dict(message.attributes)
    count = attributes.get("CloudPubSubDeadLetterSourceDeliveryCount")
    reason = attributes.get("dead_letter_reason") or _reason_from_log(body, log) or (
        f"nacked {count} times (store or broker unavailable; see the daemon's log)")
    return {"id": message.message_id, "published_at": iso(message.publish_time),
            "body": body, "attributes": attributes,
            "delivery_count": int(count) if count else received.delivery_attempt or None,
            "reason": reason}


def _reason_from_log(body: str, log: Path) -> str | None:
    """The daemon's last warning about this message's signal, if its log has one."""
    try:
        signal_id = json.loads(body).get("signal_id")
    except (ValueError, AttributeError):
        return None
    if not signal_id or not log.exists():
        return None
    pattern = re.compile(rf"\| (.*{re.escape(str(signal_id))}.*)$")
    found = None
    with log.open(errors="replace") as lines:
        for line in lines:
            match = pattern.search(line.rstrip())
            if match and ("unavailable" in line or "failed" in line or "nack" in line):
                found = match.group(1)
    return found

