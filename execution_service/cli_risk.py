"""Operators' kill switch and account limits (issue 9): `halt`, `resume`, `accounts update`.

Registered on the main CLI with `register(main, accounts)`. The commands only write the store;
every running daemon reads halts within a second and acts on them.
"""

from __future__ import annotations

import getpass

import click

from execution_service.cli_support import print_json, with_store
from execution_service.clock import utc_now
from execution_service.domain.accounts import parse_symbols
from execution_service.domain.risk import LIMIT_FIELDS, WHOLE_NUMBER_LIMITS, limits_from_row
from execution_service.errors import FatalConfigError
from execution_service.service.risk import halt_trading, resume_trading

_LIMIT_HELP = {
    "max_order_quantity": "Largest quantity of one order (whole number).",
    "max_order_notional": "Largest quantity x price of one order.",
    "max_position_notional": "Largest |net position| x price per symbol, all strategies.",
    "max_orders_per_minute": "Most orders in any 60 s (whole number).",
}
LIMIT_OPTIONS = [
    click.option(f"--{name.replace('_', '-')}", name, type=float, default=None,
                 help=_LIMIT_HELP[name])
    for name in LIMIT_FIELDS
]


def add_limit_options(command):
    """Decorator: the four limit options (keyword arguments named like the account fields)."""
    for option in reversed(LIMIT_OPTIONS):
        command = option(command)
    return command


def limits_from_options(values: dict) -> dict:
    """The limit options that were given, validated like ACCOUNTS_FILE rows."""
    given = {name: values[name] for name in LIMIT_FIELDS if values.get(name) is not None}
    try:
        return limits_from_row(given)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def operator() -> str:
    """Who runs a CLI command that changes something (`by`)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in the environment or the password database
        return "cli"


def _scope(account_id: str | None) -> str:
    return "all accounts" if account_id is None else f"account {account_id}"


# halt / resume ------------------------------------------------------------------------------------

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


# accounts update ----------------------------------------------------------------------------------

def describe_limits(account: dict) -> str:
    parts = []
    for name in LIMIT_FIELDS:
        value = account.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            shown = "none" if value is None else repr(value)
        else:
            shown = f"{value:g}" if name in WHOLE_NUMBER_LIMITS else f"{value:.2f}"
        parts.append(f"{name} {shown}")
    return ", ".join(parts)


@click.command("update")
@click.argument("account_id")
@add_limit_options
@click.option("--clear", "clears", multiple=True, type=click.Choice(LIMIT_FIELDS),
              help="Remove this limit (repeatable).")
@click.option("--symbols", help="Allowed symbols, comma-separated ('' allows any).")
@click.option("--name", "display_name", help="Display name shown to traders.")
@click.option("--json", "as_json", is_flag=True, help="Print the updated account as JSON.")
def accounts_update(account_id: str, clears: tuple[str, ...], symbols: str | None,
                    display_name: str | None, as_json: bool, **limits) -> None:
    """Change an account's risk limits, allowed symbols or name."""
    fields = limits_from_options(limits)
    both = sorted(set(fields) & set(clears))
    if both:
        raise click.UsageError(f"{', '.join(both)}: give a value or --clear, not both")
    if symbols is not None:
        fields["allowed_symbols"] = parse_symbols(symbols)
    if display_name is not None:
        fields["display_name"] = display_name
    if not fields and not clears:
        raise click.UsageError("nothing to update: give a limit, --clear, --symbols or --name")
    saved = with_store(lambda store: store.update_account_fields(account_id, fields,
                                                                  list(clears), utc_now()))
    if saved is None:
        raise FatalConfigError(f"no account {account_id!r}")
    if as_json:
        from execution_service.credentials import shown

        print_json(shown(saved))
        return
    click.echo(f"account {saved['_id']}: {describe_limits(saved)}, symbols "
               f"{','.join(saved.get('allowed_symbols') or []) or 'any'}")


def register(main_group: click.Group, accounts_group: click.Group) -> None:
    """Add halt and resume to the main group and update to `accounts` (idempotent)."""
    for group, command in ((main_group, halt), (main_group, resume),
                           (accounts_group, accounts_update)):
        if command.name not in group.commands:
            group.add_command(command)
