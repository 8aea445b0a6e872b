"""Operators' commands about one signal (issue 8): `show SIGNAL_ID [--json]`.

Registered on the main group by `register(main)` at the end of cli.py.
"""

from __future__ import annotations

import sys

import click

from execution_service.domain.text import single_line
from execution_service.service.journey import render_journey, signal_journey


@click.command("show")
@click.argument("signal_id")
@click.option("--json", "as_json", is_flag=True, help="Print the journey as JSON.")
def show(signal_id: str, as_json: bool) -> None:
    """One signal's journey: every event, confirmation and position it moved."""
    from execution_service.cli_support import print_json, with_store

    journey = with_store(lambda store: signal_journey(store, signal_id))
    if journey is None:
        click.echo(f"error: no signal {signal_id!r} in the audit store (no execution record, "
                   f"no signal_store document)", err=True)
        sys.exit(2)
    if as_json:
        print_json(journey)
    else:
        # each line is the service's; what it quotes from a message is escaped
        click.echo("\n".join(single_line(line) for line in render_journey(journey).split("\n")))


def register(main_group: click.Group) -> None:
    main_group.add_command(show)
