"""Registered accounts: `accounts add|list|enable|disable|update`, with their risk limits
(issue 9)."""

from __future__ import annotations

import click

from execution_service.account_setup import account_document
from execution_service.cli.common import print_json, print_rows, with_store
from execution_service.clock import utc_now
from execution_service.credentials import shown
from execution_service.domain.accounts import parse_symbols
from execution_service.domain.risk import LIMIT_FIELDS, WHOLE_NUMBER_LIMITS, limits_from_row
from execution_service.errors import FatalConfigError

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


def describe_limits(account: dict) -> str:
    parts = []
    for name in LIMIT_FIELDS:
        value = account.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            text = "none" if value is None else repr(value)
        else:
            text = f"{value:g}" if name in WHOLE_NUMBER_LIMITS else f"{value:.2f}"
        parts.append(f"{name} {text}")
    return ", ".join(parts)


@click.group()
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
    print_rows(rows, as_json, _account_line, None)


def _account_line(row: dict) -> str:
    credentials = ", ".join(f"{name} {state}" for name, state in row["credentials"].items())
    return (f"{row['_id']:<20} {row.get('broker', ''):<8} "
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


@accounts.command("update")
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
        print_json(shown(saved))
        return
    click.echo(f"account {saved['_id']}: {describe_limits(saved)}, symbols "
               f"{','.join(saved.get('allowed_symbols') or []) or 'any'}")
