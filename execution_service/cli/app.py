"""The `execution-service` command group, and running and watching the daemon."""

from __future__ import annotations

import sys

import click

from execution_service.bootstrap import open_app_store
from execution_service.cli.common import Cli, cli_settings, print_json
from execution_service.clock import utc_now


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
