"""`execution-service api-keys create|list|revoke` (SPEC §15): keys for the HTTP API.

A key is printed once, by `create`, and stored only as its hash; nothing here logs it.
"""

from __future__ import annotations

import click

from execution_service.adapters.api_key_store import KeyNameTaken
from execution_service.cli.common import print_rows, with_store
from execution_service.clock import utc_now
from execution_service.domain.api_keys import Scope, new_key, shown
from execution_service.domain.records import iso
from execution_service.errors import FatalConfigError


def with_key_store(call):
    def on_store(store):
        store.ensure_api_key_indexes()
        return call(store)

    return with_store(on_store)


@click.group("api-keys")
def api_keys() -> None:
    """Keys for the HTTP API (API_PORT): create, list, revoke."""


@api_keys.command("create")
@click.option("--scope", required=True, type=click.Choice([s.value for s in Scope]),
              help="read: every GET; trade: also orders, halt and resume.")
@click.option("--name", help="Recorded as `by: api:<name>` on what the key changes "
                             "(default: the key's id). Unique.")
def create(scope: str, name: str | None) -> None:
    """Make a key and print it once (only its hash is kept)."""
    try:
        made = new_key(Scope(scope), name, utc_now())
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--name") from None

    def insert(store) -> None:
        try:
            store.insert_api_key(made.doc)
        except KeyNameTaken:
            raise FatalConfigError(f"an API key named {made.doc['name']!r} already exists "
                                   f"(revoked keys keep their names)") from None

    with_key_store(insert)
    click.echo(f"API key {made.doc['_id']} (name {made.doc['name']}, scope {scope}); shown "
               f"once, store it now:", err=True)
    click.echo(made.secret)


@api_keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON (never a hash).")
def list_keys(as_json: bool) -> None:
    """Every key: id, name, scope, created, revoked."""
    rows = [shown(doc) for doc in with_key_store(lambda store: store.list_api_keys())]
    print_rows(rows, as_json, _key_line,
               "no API keys (make one with `api-keys create --scope read|trade`)")


def _key_line(row: dict) -> str:
    state = f"revoked {iso(row['revoked_at'])}" if row.get("revoked_at") else "active"
    return (f"{row['_id']:<14} {row['name']:<24} {row['scope']:<6} "
            f"created {iso(row['created_at'])}  {state}")


@api_keys.command("revoke")
@click.argument("key")
def revoke(key: str) -> None:
    """Revoke the key with this id or name: it is refused (401) from the next call on."""
    doc = with_key_store(lambda store: store.revoke_api_key(key, utc_now()))
    if doc is None:
        raise FatalConfigError(f"no API key with id or name {key!r}")
    click.echo(f"API key {doc['_id']} ({doc['name']}) revoked")

