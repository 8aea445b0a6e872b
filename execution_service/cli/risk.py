"""Operators' kill switch (issue 9): `halt` and `resume`.

The commands only write the store; every running daemon reads halts within a second and acts
on them.
"""

from __future__ import annotations

import click

from execution_service.cli.common import operator, with_store
from execution_service.clock import utc_now
from execution_service.service.risk import halt_trading, resume_trading


def _scope(account_id: str | None) -> str:
    return "all accounts" if account_id is None else f"account {account_id}"


@click.command("halt")
@click.option("--reason", required=True, help="Why; shown in every rejection and alert.")
@click.option("--account", "account_id", help="Halt only this account (default: all).")
@click.option("--cancel-open", is_flag=True,
              help="Also cancel working orders (each running daemon cancels its own).")
def halt(reason: str, account_id: str | None, cancel_open: bool) -> None:
    """Stop new orders (kill switch): every daemon obeys within a second."""
    if not reason.strip():
        raise click.BadParameter("must not be empty", param_hint="--reason")

    doc = with_store(lambda store: halt_trading(store, reason, account_id, cancel_open,
                                                 at=utc_now(), by=operator()))
    then = "; running daemons will cancel open orders" if cancel_open else ""
    click.echo(f"trading halted for {_scope(account_id)}: {doc['reason']}{then}")


@click.command("resume")
@click.option("--account", "account_id", help="Lift this account's halt (default: the global).")
def resume(account_id: str | None) -> None:
    """Lift a halt set by `halt` (a global resume leaves account halts in place)."""
    lifted, remaining = with_store(lambda store: resume_trading(store, account_id, at=utc_now(),
                                                                  by=operator()))
    still = [doc["account_id"] or "all accounts" for doc in remaining]
    tail = f" (still halted: {', '.join(still)})" if still else ""
    if lifted is None:
        click.echo(f"no halt was active for {_scope(account_id)}{tail}")
    else:
        click.echo(f"trading resumed for {_scope(account_id)}{tail}")
