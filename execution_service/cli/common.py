"""What every group of operators' commands shares: settings, JSON output, the store and
Pub/Sub for one command, and errors as one line."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import click

from execution_service.bootstrap import open_app_store
from execution_service.config import Settings, load_settings
from execution_service.domain.records import json_default, strict_json
from execution_service.errors import ExecutionError, FatalConfigError
from execution_service.redaction import REDACTOR, redact


def cli_settings(**overrides) -> Settings:
    return load_settings({key: value for key, value in overrides.items() if value is not None})


def operator() -> str:
    """Who runs a CLI command that changes something (`by`)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in the environment or the password database
        return "cli:unknown"


def print_json(value) -> None:
    click.echo(strict_json(value, indent=2, default=json_default))


def print_rows(rows: list[dict], as_json: bool, line, empty: str | None) -> None:
    """JSON, or one line per row, or `empty` (if any) when there is nothing to list."""
    if as_json:
        print_json(rows)
        return
    if not rows and empty is not None:
        click.echo(empty)
    for row in rows:
        click.echo(line(row))


class Refused(ExecutionError):
    """What the operator asked cannot be done: said as one line, exit code 2."""


class Cli(click.Group):
    """Turns our errors into one clear line and exit code 2 instead of a traceback."""

    def invoke(self, ctx):
        REDACTOR.install_excepthooks()
        try:
            return super().invoke(ctx)
        except ExecutionError as e:
            click.echo(f"error: {redact(str(e))}", err=True)
            sys.exit(2)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise
        except Exception as e:  # a bug: its traceback, with every secret redacted
            click.echo(REDACTOR.format_exception(e), err=True)
            sys.exit(1)


def emulator_host(settings: Settings) -> str | None:
    if settings.PUBSUB_EMULATOR_HOST:
        return settings.PUBSUB_EMULATOR_HOST
    if settings.starts_local_emulator:
        from execution_service.adapters.emulator_record import read_host

        host = read_host(Path(settings.LOG_DIR))
        if host is None:
            raise FatalConfigError("no Pub/Sub emulator: start the daemon (`execution-service "
                                   "run`) or set PUBSUB_EMULATOR_HOST")
        return host
    return None


def pubsub_for(settings: Settings):
    host = emulator_host(settings)
    if host:
        os.environ["PUBSUB_EMULATOR_HOST"] = host
    from execution_service.adapters import pubsub

    return pubsub, pubsub.PubSubNames(settings)


def with_store(read):
    handle, store = open_app_store(cli_settings())
    try:
        return read(store)
    finally:
        handle.close()
