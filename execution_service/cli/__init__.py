"""Operators' commands (SPEC §10): parse options, call bootstrap, print.

One module per group of commands, each defining plain click commands; what they share (settings,
the store and Pub/Sub for one command, JSON and row output, errors as one line, who is running
the command) is in `common`. This module adds them all to `main`, the `execution-service` entry
point.
"""

from execution_service.cli import (
    accounts,
    api_keys,
    kite,
    messages,
    order_commands,
    records,
    recovery,
    risk,
)
from execution_service.cli.app import main

for _command in (accounts.accounts, api_keys.api_keys, kite.kite, messages.send_test_signal,
                 messages.setup_pubsub, order_commands.cancel, order_commands.modify,
                 records.orders, records.positions, records.show, records.confirmations,
                 recovery.reconcile_command, recovery.dead_letters_command, risk.halt,
                 risk.resume):
    main.add_command(_command)

__all__ = ["main"]
