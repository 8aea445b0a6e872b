"""Operators' commands (SPEC §10): parse options, call bootstrap, print."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from execution_service.bootstrap import account_document, open_app_store
from execution_service.cli_risk import add_limit_options, limits_from_options
from execution_service.cli_support import (
    Cli,
    cli_settings,
    print_json,
    print_rows,
    pubsub_for,
    with_store,
)
from execution_service.clock import utc_now
from execution_service.credentials import shown
from execution_service.domain.accounts import parse_symbols
from execution_service.domain.views import NO_POSITIONS, order_line, position_line
from execution_service.errors import FatalConfigError
from execution_service.service.desk import shown_positions


@click.group(cls=Cli)
@click.version_option(package_name="execution-service")
def main() -> None:
    """Order execution service: trading-orders in, broker orders, execution-confirmations out."""


@main.command()
@click.option("--use-mock-broker", is_flag=True, help="Route every account to the paper broker.")
def run(use_mock_broker: bool) -> None:
    """Run the daemon (local defaults: emulator, embedded store, mock broker)."""
    from execution_service.run import run_daemon

    settings = cli_settings(USE_MOCK_BROKER="true" if use_mock_broker else None)
    sys.exit(run_daemon(settings, say=click.echo))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def status(as_json: bool) -> None:
    """Heartbeat, uptime, counters and store statistics. Exit 0 only when running."""
    from execution_service.status import read_status, render_status

    settings = cli_settings()
    handle, store = open_app_store(settings)
    try:
        report = read_status(store, settings, utc_now())
    finally:
        handle.close()
    if as_json:
        print_json(report)
    else:
        click.echo(render_status(report))
    sys.exit(0 if report["running"] and report["healthy"] else 1)


@main.command("send-test-signal")
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


@main.command("setup-pubsub")
def setup_pubsub_command() -> None:
    """Create the topics and subscriptions (idempotent)."""
    settings = cli_settings()
    pubsub, names = pubsub_for(settings)
    created = pubsub.setuppubsub_for(names)
    for name in created:
        click.echo(f"created {name}")
    click.echo(f"Pub/Sub ready ({len(created)} created, the rest already existed)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print full records as JSON.")
@click.option("--limit", default=20, show_default=True, help="How many, newest first (0: all).")
def orders(as_json: bool, limit: int) -> None:
    """Execution records, newest first."""
    records = with_store(lambda store: store.recent_records(limit))
    print_rows(records, as_json, order_line, "no orders yet")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the positions as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Closed positions too.")
def positions(as_json: bool, show_all: bool) -> None:
    """Open positions (with --all, closed ones too)."""
    rows = with_store(lambda store: shown_positions(store, show_all))
    print_rows(rows, as_json, position_line, "no positions" if show_all else NO_POSITIONS)


@main.group()
def accounts() -> None:
    """Registered accounts: add, list, enable, disable."""


@accounts.command("add")
@click.argument("account_id")
@click.option("--broker", required=True, type=click.Choice(["MOCK", "IBKR", "ZERODHA"],
                                                           case_sensitive=False),
              help="Which broker places this account's orders.")
@click.option("--symbols", help="Allowed symbols, comma-separated (default: any).")
@click.option("--name", "display_name", help="Display name shown to traders.")
@click.option("--broker-account", help="The venue's account code (e.g. the IB account).")
@click.option("--disabled", is_flag=True, help="Register it disabled.")
@add_limit_options
def accounts_add(account_id, broker, symbols, display_name, broker_account, disabled,
                 **limits) -> None:
    """Register (or replace the settings of) an account."""
    row = {"account_id": account_id, "broker": broker, "enabled": not disabled,
           "allowed_symbols": parse_symbols(symbols), **limits_from_options(limits)}
    if display_name:
        row["display_name"] = display_name
    if broker_account:
        row["broker_account"] = broker_account
    doc = account_document(row, "account")
    fields = {key: value for key, value in doc.items() if key != "_id"}
    saved = with_store(lambda store: store.upsert_account(account_id, fields, utc_now()))
    click.echo(f"account {saved['_id']}: broker {saved['broker']}, "
               f"{'enabled' if saved['enabled'] else 'disabled'}, symbols "
               f"{','.join(saved['allowed_symbols']) or 'any'}")


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the accounts as JSON.")
def accounts_list(as_json: bool) -> None:
    """Registered accounts, with broker, state and allowed symbols."""
    rows = [shown(row) for row in with_store(lambda store: store.list_accounts())]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        credentials = ", ".join(f"{name} {state}" for name, state in row["credentials"].items())
        click.echo(f"{row['_id']:<20} {row.get('broker', ''):<8} "
                   f"{'enabled' if row.get('enabled', True) else 'disabled':<9} "
                   f"{','.join(row.get('allowed_symbols') or []) or 'any'}"
                   + (f"  credentials: {credentials}" if credentials else ""))


def _set_enabled(account_id: str, enabled: bool) -> None:
    def update(store):
        if store.get_account(account_id) is None:
            raise FatalConfigError(f"no account {account_id!r}")
        return store.upsert_account(account_id, {"enabled": enabled}, utc_now())

    with_store(update)
    click.echo(f"account {account_id} {'enabled' if enabled else 'disabled'}")


@accounts.command("enable")
@click.argument("account_id")
def accounts_enable(account_id: str) -> None:
    """Accept orders for this account again."""
    _set_enabled(account_id, True)


@accounts.command("disable")
@click.argument("account_id")
def accounts_disable(account_id: str) -> None:
    """Reject orders for this account (recorded as rejections)."""
    _set_enabled(account_id, False)





def _register_extensions() -> None:
    from execution_service import (
        cli_api_keys,
        cli_commands,
        cli_ops,
        cli_recovery,
        cli_risk,
        cli_sessions,
    )

    cli_api_keys.register(main)
    cli_commands.register(main)
    cli_recovery.register(main)
    cli_sessions.register(main)
    cli_ops.register(main)
    cli_risk.register(main, accounts)


_register_extensions()
