"""Pub/Sub from the command line: publish a signal file, create the topics and subscriptions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from execution_service.cli.common import cli_settings, pubsub_for


@click.command("send-test-signal")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="A JSON signal file.")
@click.option("--signal-id", help="Send it under this signal_id instead of the file's.")
def send_test_signal(path: Path, signal_id: str | None) -> None:
    """Publish a signal file to trading-orders."""
    body = path.read_bytes()
    if signal_id:
        data = json.loads(body)
        data["signal_id"] = signal_id
        body = json.dumps(data).encode()
    settings = cli_settings()
    pubsub, names = pubsub_for(settings)
    publisher = pubsub.pubsub_v1.PublisherClient()
    message_id = publisher.publish(names.orders_topic, body).result(timeout=30)
    shown = signal_id or _signal_id_of(body)
    click.echo(f"Published {path.name} (signal {shown}) to {names.orders_topic}: "
               f"message {message_id}")


def _signal_id_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("signal_id"))
    except (ValueError, AttributeError):
        return "?"


@click.command("setup-pubsub")
def setup_pubsub() -> None:
    """Create the topics and subscriptions (idempotent)."""
    settings = cli_settings()
    pubsub, names = pubsub_for(settings)
    created = pubsub.setuppubsub_for(names)
    for name in created:
        click.echo(f"created {name}")
    click.echo(f"Pub/Sub ready ({len(created)} created, the rest already existed)")
