"""Accept one order: validate, risk-check, claim, hand to the tracker (SPEC §1, §2, §3).

`accept(body, by)` is the one use case every way in shares (Pub/Sub, the HTTP API): it says
what became of the order (claimed, rejected and recorded, a duplicate, unusable) and raises
StoreUnavailable when the store failed. `handle(body)` is the Pub/Sub consumer's view of it:
ACK once the outcome or the claim is durable, HOLD when the store cannot take it now (see
held_messages.py), DEAD_LETTER when the message cannot even be recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import ValidationError

from execution_service.domain.accounts import account_problem, check_account
from execution_service.domain.commands import (
    InvalidCommand,
    UnusableCommand,
    is_command,
    parse_command,
    refuse_awaited_order,
    refused_command,
)
from execution_service.domain.intake import (
    DEFAULT_LIMITS,
    Accepted,
    Intake,
    IntakeLimits,
    decode_body,
    signal_id_hint,
)
from execution_service.domain.reasons import RejectClass
from execution_service.domain.records import (
    ORDER_FIELDS,
    new_claim,
    new_rejection,
    rejection_event,
)
from execution_service.domain.risk import MAX_ORDERS_PER_MINUTE
from execution_service.domain.signals import (
    KNOWN_FIELDS_ORDER,
    Invalid,
    Problem,
    Signal,
    Unusable,
    describe_validation_error,
    signal_from_data,
)
from execution_service.errors import DuplicateSignal, StoreUnavailable
from execution_service.service.ports import JOURNEY_LOGGER, BrokerSource, RecordStore

logger = logging.getLogger(__name__)
journey = logging.getLogger(JOURNEY_LOGGER)
ACCOUNT_CACHE_SECONDS = 1.0


class Action(StrEnum):
    ACK = "ACK"
    NACK = "NACK"  # an unexpected failure: redelivered, and counts toward the dead letters
    HOLD = "HOLD"  # the store is unavailable: keep the message unacknowledged, retry later
    DEAD_LETTER = "DEAD_LETTER"


@dataclass(frozen=True)
class Outcome:
    action: Action
    reason: str = ""
    signal_id: str | None = None
    track: dict | None = None  # a claim to hand to the tracker
    written: tuple | None = None  # (record, events, confirmations) of a recorded change
    then: Callable[[], object] | None = None  # more work for the event loop


_ACTIONS = {Accepted.CLAIMED: Action.ACK, Accepted.REJECTED: Action.ACK,
            Accepted.DUPLICATE: Action.ACK, Accepted.UNUSABLE: Action.DEAD_LETTER}


class SignalProcessor:
    def __init__(self, store: RecordStore, journal, tracker, brokers: BrokerSource,
                 clock: Callable[[], datetime],
                 owner: dict | None = None,
                 lease_until: Callable[[], datetime] | None = None, risk=None,
                 limits: IntakeLimits = DEFAULT_LIMITS, commands=None):
        self._store = store
        self._journal = journal
        self._tracker = tracker
        self._brokers = brokers
        self._clock = clock
        self._owner = owner
        self._lease_until = lease_until
        self._risk = risk
        self._accounts: dict[str, tuple[float, dict | None]] = {}
        self._limits = limits
        self.commands = commands  # CommandHandler (§11), set by bootstrap

    def handle(self, body: bytes) -> Outcome:
        """`decide` and `finish` in one go, on the caller's thread."""
        return self.finish(self.decide(body))

    def finish(self, outcome: Outcome) -> Outcome:
        """On the event loop: what follows a durable claim or rejection."""
        if outcome.track is not None:
            self._tracker.track(outcome.track)
        if outcome.written is not None:
            self._journal.after_write(*outcome.written)
        if outcome.then is not None:
            outcome.then()
        return outcome

    def decide(self, body: bytes) -> Outcome:
        """The Pub/Sub consumer's view of `accept` (and of §11 commands, on the same topic):
        validate, check, and record the claim or the rejection. Store work only (it runs on
        the store thread); `finish` does the rest on the event loop."""
        try:
            data = decode_body(body, COMMAND_KEPT_FIELDS, self._limits)
            if isinstance(data, dict) and is_command(data):
                return self._command(data)
            if isinstance(data, Invalid) and is_command(data.fields):
                return self._command(data.fields, problem=data.reason)
            intake = self._accept(data, body)
        except StoreUnavailable as e:
            # Not logged per message: the store's health logs the outage once (store_errors)
            self._journal.counters.held += 1
            self._journal.counters.orders_received -= 1  # counted when handled for good
            return Outcome(Action.HOLD, str(e), signal_id_hint(body) or "no signal_id")
        if intake.kind is Accepted.UNUSABLE:
            self._journal.counters.dead_lettered += 1
            logger.warning("Unusable message sent to dead letters: %s", intake.reason)
        reason = "duplicate" if intake.kind is Accepted.DUPLICATE else intake.reason
        return Outcome(_ACTIONS[intake.kind], reason, intake.signal_id, track=intake.track,
                       written=intake.written)

    def settle(self, intake: Intake) -> Intake:
        """On the event loop, after `accept`: hand the claim to the tracker, or let the world
        know of the rejection."""
        self.finish(Outcome(_ACTIONS[intake.kind], track=intake.track, written=intake.written))
        return intake

    def accept(self, body: bytes, by: str | None = None) -> Intake:
        """Validate, check the account and the risk controls, then claim or record the
        rejection: store work only (run it on the store thread, then `settle` on the event
        loop). `by` (who asked, e.g. `api:desk`) is kept on the record and its first event.
        A §11 command is not an order: refused here (see CommandHandler). Raises
        StoreUnavailable: nothing was recorded then."""
        data = decode_body(body, COMMAND_KEPT_FIELDS, self._limits)
        fields = data.fields if isinstance(data, Invalid) else data
        if isinstance(fields, dict) and is_command(fields):
            return Intake(Accepted.UNUSABLE, problems=(Problem("action", (
                f"action {fields['action']!r:.40} makes this a cancel or modify command, not "
                "an order")),))
        return self._accept(data, body, by)

    def _accept(self, data: dict | Invalid | Unusable, body: bytes, by: str | None = None
                ) -> Intake:
        self._journal.counters.orders_received += 1
        parsed = signal_from_data(data) if isinstance(data, dict) else data
        if isinstance(parsed, Unusable):
            return Intake(Accepted.UNUSABLE, problems=parsed.problems)
        journey.info("Received order: %s%s", parsed.signal_id, f" (by {by})" if by else "")
        if isinstance(parsed, Invalid):
            return self._reject(parsed.signal_id, parsed.fields, parsed.problems, body, by,
                                kind=RejectClass.VALIDATION)
        account = self._account(parsed.account_id)
        problem, control = check_account(parsed, account), None
        kind = RejectClass.ACCOUNT
        if problem is None and self._risk is not None:
            breach = self._risk.check(parsed, account)
            if breach is not None:
                problem, control = Problem(None, breach.reason), breach.control
                kind = breach.kind
        if problem is not None:
            return self._reject(parsed.signal_id, parsed.model_dump(
                exclude={"extra_fields", "created_at"}, mode="json"), (problem,), body, by,
                control, kind)
        return self._claim(parsed, account, by)

    def _command(self, data: dict, problem: str | None = None) -> Outcome:
        """A §11 cancel or modify: kept durably (then acked), executed in the background.
        `problem`: what the intake found wrong with the body (refused, naming it)."""
        self._journal.counters.orders_received += 1
        self._journal.counters.commands_received += 1
        parsed = parse_command(data) if problem is None else refused_command(data, problem)
        if isinstance(parsed, UnusableCommand):
            self._journal.counters.dead_lettered += 1
            logger.warning("Unusable command sent to dead letters: %s", parsed.reason)
            return Outcome(Action.DEAD_LETTER, parsed.reason)
        if isinstance(parsed, InvalidCommand):
            logger.info("Invalid %s request %s: %s [%s]", parsed.action, parsed.request_id,
                        parsed.reason, parsed.signal_id)
            written, then = self.commands.record_invalid(parsed)
            return Outcome(Action.ACK, parsed.reason, parsed.signal_id, written=written,
                           then=then)
        logger.info("Received %s request %s [%s]", parsed.action, parsed.request_id,
                    parsed.signal_id)
        if self.commands.receive(parsed) is None:
            return Outcome(Action.ACK, signal_id=parsed.signal_id,
                           then=lambda: self.commands.start(parsed))
        return Outcome(Action.ACK, signal_id=parsed.signal_id)

    def check_order(self, doc: dict) -> str | None:
        """An order's fields (a MODIFY's order as modified) against the §3 rules, the account
        and the risk controls; the reason it fails, or None. The per-minute order count does
        not apply: a modify places no new order."""
        names = ("signal_id", "account_id", "strategy_name", *ORDER_FIELDS)
        fields = {name: doc[name] for name in names if doc.get(name) is not None}
        try:
            signal = Signal(**fields)
        except ValidationError as e:
            return f"failed validation: {describe_validation_error(e)}"
        account = self._account(signal.account_id)
        problem = account_problem(signal, account)
        if problem is None and self._risk is not None:
            breach = self._risk.check(signal, account)
            if breach is not None and breach.control != MAX_ORDERS_PER_MINUTE:
                problem = breach.reason
        return None if problem is None else f"failed validation: {problem}"

    def _account(self, account_id: str) -> dict | None:
        cached = self._accounts.get(account_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < ACCOUNT_CACHE_SECONDS:
            return cached[1]
        account = self._store.get_account(account_id)
        self._accounts[account_id] = (now, account)
        return account

    def _claim(self, signal: Signal, account: dict, by: str | None) -> Intake:
        broker_name = self._brokers.broker_name_for(account)
        broker = self._brokers.create_broker(broker_name)
        doc = new_claim(signal, broker=broker_name, broker_tag=broker.order_tag(signal.signal_id),
                        at=self._clock(), owner=self._owner)
        doc["lease_expires_at"] = self._lease_until() if self._lease_until else None
        doc["account_name"] = account.get("display_name")
        doc["broker_account"] = account.get("broker_account")
        _record_who_asked(doc, by)
        try:
            self._store.insert_record(doc)
        except DuplicateSignal:
            return self._duplicate(signal.signal_id, claim=doc)
        return Intake(Accepted.CLAIMED, signal.signal_id, doc, track=doc)

    def _reject(self, signal_id: str, fields: dict, problems: tuple[Problem, ...], body: bytes,
                by: str | None, control: str | None = None,
                kind: RejectClass = RejectClass.VALIDATION) -> Intake:
        at = self._clock()
        reason = "; ".join(problem.message for problem in problems)
        doc = new_rejection(signal_id, fields, reason, at, raw_body=body, kind=kind)
        event = rejection_event(reason, at)
        _record_who_asked(doc, by)
        try:
            self._store.insert_record(doc)
        except DuplicateSignal:
            return self._duplicate(signal_id)
        return Intake(Accepted.REJECTED, signal_id, doc, problems, control,
                      written=(doc, (event,), doc["confirmations"]))

    def _duplicate(self, signal_id: str, claim: dict | None = None) -> Intake:
        existing = self._store.get_record(signal_id) if claim is not None else None
        if existing is not None and existing.get("awaiting_order"):
            return self._refuse_awaited(existing, claim)
        self._journal.counters.duplicates += 1
        journey.info("Duplicate signal ignored (already recorded): %s", signal_id)
        return Intake(Accepted.DUPLICATE, signal_id)

    def _refuse_awaited(self, kept: dict, claim: dict) -> Intake:
        """A cancel came first and was kept under this signal_id: the order is recorded
        REJECTED with the request named, and never reaches a broker (§11)."""
        order_fields = {name: claim.get(name) for name in AWAITED_ORDER_FIELDS}
        at = self._clock()
        written = self._journal.persist(kept, lambda s: refuse_awaited_order(s, at),
                                        {**order_fields, "awaiting_order": False})
        doc = written[0]
        journey.info("Order refused: %s [%s]", doc["reject_reason"], doc["signal_id"])
        return Intake(Accepted.REJECTED, doc["signal_id"], doc,
                      (Problem(None, doc["reject_reason"]),), written=written)


def _record_who_asked(doc: dict, by: str | None) -> None:
    if by is not None:
        doc["by"] = by
        doc["events"][0]["by"] = by


COMMAND_KEPT_FIELDS = (*KNOWN_FIELDS_ORDER, "action", "request_id")  # to answer a bad command
AWAITED_ORDER_FIELDS = ("strategy_name", "account_id", *ORDER_FIELDS, "signal_created_at",
                        "extra_fields", "broker", "broker_tag", "account_name", "broker_account")
