"""The CLI package (issue 19): one module per group of commands, every command they define on
`execution-service`, and what they share in `cli.common`."""

from __future__ import annotations

import getpass
import importlib
import pkgutil

import click
import pytest
from click.testing import CliRunner

from execution_service import cli
from execution_service.cli import common, main
from tests.unit.test_cli_help import commands

EVERY_COMMAND = {
    "accounts", "accounts add", "accounts list", "accounts enable", "accounts disable",
    "accounts update", "api-keys", "api-keys create", "api-keys list", "api-keys revoke",
    "cancel", "confirmations", "dead-letters", "halt", "kite", "kite login", "modify",
    "orders", "positions", "reconcile", "resume", "run", "send-test-signal", "setup-pubsub",
    "show", "status"}


def test_given_the_package_then_every_command_is_on_main_under_its_old_name():
    assert {" ".join(path) for path, _ in commands(main)} == EVERY_COMMAND


def test_given_each_module_then_every_command_it_defines_is_reachable_from_main():
    """Given every module of the package, when its module-level click commands are listed,
    then each is on `main` (a command written but never added would be dead)."""
    reachable = {id(main)} | {id(command) for _, command in commands(main)}
    defined = {}
    for info in pkgutil.iter_modules(cli.__path__):
        module = importlib.import_module(f"execution_service.cli.{info.name}")
        defined.update({f"{info.name}.{name}": value for name, value in vars(module).items()
                        if isinstance(value, click.Command)})
    assert defined and [name for name, command in defined.items()
                        if id(command) not in reachable] == []


def test_given_a_login_name_then_the_operator_is_cli_and_that_name(monkeypatch):
    monkeypatch.setattr(getpass, "getuser", lambda: "desk")
    assert common.operator() == "cli:desk"


@pytest.mark.parametrize("error", [KeyError("LOGNAME"), OSError("no passwd entry")])
def test_given_no_login_name_then_the_operator_is_cli_unknown_not_a_crash(monkeypatch, error):
    def no_name():
        raise error

    monkeypatch.setattr(getpass, "getuser", no_name)
    assert common.operator() == "cli:unknown"


def test_given_a_refusal_then_one_error_line_and_exit_2():
    @click.group(cls=common.Cli)
    def group() -> None:
        """A group."""

    @group.command()
    def refuse() -> None:
        """Refuses."""
        raise common.Refused("cannot do that")

    result = CliRunner().invoke(group, ["refuse"])
    assert (result.exit_code, result.output) == (2, "error: cannot do that\n")
