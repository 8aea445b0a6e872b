"""Every command and every option of the CLI says what it does in --help (issue 18)."""

from __future__ import annotations

import click

from execution_service.cli import main


def commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from commands(command, prefix + (name,))


def test_given_the_cli_then_every_command_and_option_has_help_text():
    missing = [" ".join(path) + (f" {param.opts[0]}" if param else "")
               for path, command in commands(main)
               for param in [None, *[p for p in command.params if isinstance(p, click.Option)]]
               if (param is None and not command.help) or (param is not None and not param.help)]
    assert missing == []
