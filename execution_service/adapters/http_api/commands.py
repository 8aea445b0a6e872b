"""POST /orders/{signal_id}/cancel and /modify (SPEC §11 over HTTP): the same command models
and the same CommandHandler as a CANCEL or MODIFY on trading-orders, with `by: api:<key>`."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from pydantic import ValidationError

from execution_service.adapters.http_api import schemas
from execution_service.adapters.http_api.common import (
    AUTH_ERRORS,
    BAD_REQUEST,
    TOO_LARGE,
    ApiError,
    AuditJSON,
    json_body,
    problem_errors,
    read_body,
)
from execution_service.domain.api_keys import who
from execution_service.domain.commands import CancelOrder, Command, CommandEvent, ModifyOrder
from execution_service.domain.signals import validation_problems
from execution_service.service.ports import OrderDesk

logger = logging.getLogger(__name__)
ACCEPTED = {CommandEvent.CANCEL_REQUESTED, "KEPT"}  # a cancel sent (or kept), not yet confirmed


def add_command_routes(api: FastAPI, desk: OrderDesk, trader) -> None:
    answers = {**AUTH_ERRORS, **BAD_REQUEST, **TOO_LARGE,
               202: {"model": schemas.CommandAnswer, "description": "cancel sent (or kept for "
                     "an order not seen yet), or still being carried out (IN_PROGRESS)"},
               409: {"model": schemas.RefusedCommand, "description": "refused by the order's "
                     "state or rules (CANCEL_REJECTED / MODIFY_REJECTED), recorded"}}

    @api.post("/orders/{signal_id}/cancel", response_model=schemas.CommandAnswer,
              responses=answers, openapi_extra=json_body("CancelRequest"))
    async def cancel(signal_id: str, request: Request, key: dict = trader):
        """Cancel a working order (as a CANCEL on trading-orders; `request_id` makes it
        idempotent)."""
        command = await _command(request, CancelOrder, signal_id, key)
        return await _answer(desk, command, request.app.state.command_wait)

    @api.post("/orders/{signal_id}/modify", response_model=schemas.CommandAnswer,
              responses=answers, openapi_extra=json_body("ModifyRequest"))
    async def modify(signal_id: str, request: Request, key: dict = trader):
        """Change limit_price, stop_price or quantity of a working order (as a MODIFY)."""
        command = await _command(request, ModifyOrder, signal_id, key)
        return await _answer(desk, command, request.app.state.command_wait)


async def _command(request: Request, model: type[Command], signal_id: str,
                   key: dict) -> Command:
    raw = await read_body(request)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as e:
        raise ApiError(422, f"body is not valid JSON: {e}", [{"field": None, "message": (
            f"body is not valid JSON: {e}")}]) from None
    if not isinstance(body, dict):
        raise ApiError(422, "body must be a JSON object",
                       [{"field": None, "message": "body must be a JSON object"}])
    fields = {name: value for name, value in body.items() if name not in ("action", "by")}
    try:
        return model.model_validate({**fields, "signal_id": signal_id, "by": who(key)})
    except ValidationError as e:
        problems = validation_problems(e)
        raise ApiError(422, "; ".join(p.message for p in problems),
                       problem_errors(problems)) from None


async def _answer(desk: OrderDesk, command: Command, wait: float) -> AuditJSON:
    """The outcome within `wait` seconds, else 202 IN_PROGRESS (the command goes on; the
    record and its confirmations will say)."""
    outcome = await desk.command(command, wait)
    logger.info("%s request %s over HTTP from %s: %s [%s]", command.action, command.request_id,
                command.by, "IN_PROGRESS" if outcome is None else outcome.event,
                command.signal_id)
    answer = {"request_id": command.request_id, "signal_id": command.signal_id,
              "outcome": "IN_PROGRESS" if outcome is None else str(outcome.event),
              "reason": None if outcome is None else outcome.reason,
              "record": await desk.order(command.signal_id)}
    if outcome is not None and outcome.refused:
        raise ApiError(409, outcome.reason or str(outcome.event), **answer)
    status = 202 if outcome is None or outcome.event in ACCEPTED else 200
    return AuditJSON(answer, status)
