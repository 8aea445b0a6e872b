"""What an operator can ask from chat (SPEC §13), as plain-text answers.

Transport-free: the Telegram adapter parses the command and the chat, calls one method with
who asked (`by`, e.g. `telegram:<chat_id>:<username>`), and sends back the text. Halts record
`by`; every answer fits one Telegram message. Store work runs on the store thread, never on
the event loop; a store that does not answer in time (`StoreThread.answer`) is an answer too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from execution_service.domain.commands import CancelOrder, parse_command
from execution_service.domain.telegram_text import truncate
from execution_service.domain.text import single_line
from execution_service.domain.views import NO_POSITIONS, order_line, position_line
from execution_service.errors import ExecutionError
from execution_service.service.commands import KEPT
from execution_service.service.journey import render_journey, signal_journey
from execution_service.service.risk import active_halts, clear_halt, halt_scope, set_halt
from execution_service.service.store_thread import StoreThread

logger = logging.getLogger(__name__)
DEFAULT_ORDERS = 10
MAX_ORDERS = 50
CANCEL_UNAVAILABLE = "cancel is not available: this process has no command handler"


class OperatorDesk:
    def __init__(self, store, status_text: Callable[[datetime], str],
                 clock: Callable[[], datetime], commands=None,
                 store_thread: StoreThread | None = None):
        self._store = store
        self._store_thread = store_thread or StoreThread(inline=True)
        self._status_text = status_text  # the operators' status as text, as of a time (wiring)
        self._clock = clock
        self._commands = commands  # CommandHandler (SPEC §11): /cancel goes through it

    COMMANDS = ("status", "positions", "orders", "show", "halt", "resume", "cancel")

    async def answer(self, command: str, args: list[str], by: str) -> str:
        """The reply to one command; a store outage is an answer too, never an exception."""
        on_store_thread = {"status": self._status, "positions": self._positions,
                           "orders": self._orders, "show": self._show, "halt": self._halt,
                           "resume": self._resume}
        if command not in on_store_thread and command != "cancel":
            return f"unknown command /{command}"
        try:
            if command == "cancel":
                text = await self._cancel_order(args, by)
            else:
                text = await self._store_thread.answer(on_store_thread[command], args, by)
            # records keep what messages said: each line escaped, as for any Telegram text
            return truncate("\n".join(single_line(line) for line in text.splitlines()))
        except ExecutionError as e:
            logger.warning("Telegram /%s from %s failed: %s", command, by, e)
            return f"/{command} failed: {e}"

    def _status(self, args: list[str], by: str) -> str:
        return self._status_text(self._clock())

    def _positions(self, args: list[str], by: str) -> str:
        rows = self._store.list_positions("OPEN")
        return "\n".join(position_line(row) for row in rows) or NO_POSITIONS

    def _orders(self, args: list[str], by: str) -> str:
        if len(args) > 1 or (args and not args[0].isdigit()):
            return "usage: /orders [N]  (N a whole number, default 10)"
        limit = min(int(args[0]) if args else DEFAULT_ORDERS, MAX_ORDERS) or DEFAULT_ORDERS
        records = self._store.recent_records(limit)
        return "\n".join(order_line(doc) for doc in records) or "no orders yet"

    def _show(self, args: list[str], by: str) -> str:
        if len(args) != 1:
            return "usage: /show SIGNAL_ID"
        journey = signal_journey(self._store, args[0])
        if journey is None:
            return f"no signal {args[0]!r} in the audit store"
        return render_journey(journey)

    def _halt(self, args: list[str], by: str) -> str:
        """`/halt REASON` halts everything; `/halt ACCOUNT REASON` one registered account."""
        account_id = None
        if len(args) >= 2 and self._store.get_account(args[0]) is not None:
            account_id, args = args[0], args[1:]
        reason = " ".join(args).strip()
        if not reason:
            return "usage: /halt REASON  or  /halt ACCOUNT REASON"
        doc = set_halt(self._store, reason, account_id, at=self._clock(), by=by)
        logger.warning("Trading halted for %s by %s: %s", halt_scope(doc), by, reason)
        return f"trading halted for {halt_scope(doc)}: {reason}"

    def _resume(self, args: list[str], by: str) -> str:
        if len(args) > 1:
            return "usage: /resume [ACCOUNT]"
        account_id = args[0] if args else None
        lifted = clear_halt(self._store, account_id, by=by, at=self._clock())
        scope = "all accounts" if account_id is None else f"account {account_id}"
        remaining = [halt_scope(doc) for doc in active_halts(self._store)]
        tail = f" (still halted: {', '.join(remaining)})" if remaining else ""
        if lifted is None:
            return f"no halt was active for {scope}{tail}"
        logger.info("Trading resumed for %s by %s", scope, by)
        return f"trading resumed for {scope}{tail}"

    async def _cancel_order(self, args: list[str], by: str) -> str:
        """As `execution-service cancel`: a §11 CANCEL with its own request_id, recorded with
        who asked, through the same handler as one from trading-orders."""
        if len(args) != 1:
            return "usage: /cancel SIGNAL_ID"
        if self._commands is None:
            return CANCEL_UNAVAILABLE
        command = parse_command({"action": "CANCEL", "signal_id": args[0], "by": by,
                                 "request_id": f"telegram-{uuid.uuid4().hex[:16]}",
                                 "reason": "cancelled from Telegram"})
        if not isinstance(command, CancelOrder):
            return f"cannot cancel {args[0]!r}: {command.reason}"
        logger.info("Telegram cancel of %s by %s (request %s)", command.signal_id, by,
                    command.request_id)
        outcome = await self._commands.submit(command, self._store_thread.answer_seconds)
        if outcome is None:
            return (f"cancel of {command.signal_id} requested (request {command.request_id}); "
                    "still being carried out: /show it later")
        if outcome.refused:
            return f"cannot cancel {command.signal_id}: {outcome.reason}"
        if outcome.event == KEPT:
            return (f"{command.signal_id} not received yet: it will be refused when it "
                    f"arrives (request {command.request_id})")
        doc = await self._store_thread.answer(self._store.get_record, command.signal_id) or {}
        return (f"cancel of {command.signal_id} requested (request {command.request_id}); "
                f"order now {doc.get('status')}")

