"""The HTTP API (SPEC §15): routes over the service's OrderDesk port, API keys by scope.

Handlers run on the daemon's event loop, like the Pub/Sub consumer's hand-over: an order
posted here is accepted by the same `accept` call, claimed and tracked by the same tracker.
The desk does its store work on the store thread, so a hanging store answers 503 here while
/healthz (no store call) keeps answering.
"""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse

from execution_service import __version__
from execution_service.adapters.http_api import schemas
from execution_service.adapters.http_api.commands import add_command_routes
from execution_service.adapters.http_api.common import (
    AUTH_ERRORS,
    BAD_REQUEST,
    TOO_LARGE,
    ApiError,
    AuditJSON,
    caller_with,
    json_body,
    problem_errors,
    read_body,
    read_model,
)
from execution_service.domain.api_keys import Scope, who
from execution_service.domain.intake import DEFAULT_MAX_BODY_BYTES
from execution_service.errors import StoreUnavailable, UnknownAccount
from execution_service.service.ports import Accepted, Intake, OrderDesk

logger = logging.getLogger(__name__)
MAX_LIMIT = 1000


def create_api(desk: OrderDesk, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               command_wait: float = 10.0) -> FastAPI:
    """The app; bodies over `max_body_bytes` (MAX_MESSAGE_BYTES, as on trading-orders) are
    refused with 413 before they are read; a cancel or modify not done within `command_wait`
    seconds is answered 202 IN_PROGRESS."""
    api = FastAPI(title="Execution service", version=__version__, openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None, default_response_class=AuditJSON,
                  description="Orders, positions and controls of the running daemon (SPEC §15). "
                              "Every route but /healthz needs `Authorization: Bearer <key>`.")
    api.state.max_body_bytes = max_body_bytes
    api.state.command_wait = command_wait
    _handle_errors(api)
    _openapi_with_order(api)
    _read_routes(api, desk)
    _trade_routes(api, desk)
    add_command_routes(api, desk, Depends(caller_with(desk, Scope.TRADE)))
    return api


def _read_routes(api: FastAPI, desk: OrderDesk) -> None:
    reader = [Depends(caller_with(desk, Scope.READ))]
    limit = Query(50, ge=0, le=MAX_LIMIT, description=f"how many, newest first (0: up to "
                                                        f"{MAX_LIMIT})")

    @api.get("/healthz", response_class=PlainTextResponse, tags=["health"],
             responses={200: {"content": {"text/plain": {"example": "ok"}}},
                        503: {"content": {"text/plain": {"example": "not consuming"}}}})
    async def healthz() -> PlainTextResponse:
        """`ok`, or 503 with what is wrong (the same check as the metrics server's)."""
        healthy, reason = desk.health()
        return PlainTextResponse(f"{'ok' if healthy else reason}\n", 200 if healthy else 503)

    @api.get("/capabilities", response_model=schemas.Capabilities, dependencies=reader,
             responses=AUTH_ERRORS)
    async def capabilities():
        return AuditJSON(await desk.capabilities())

    @api.get("/status", response_model=schemas.Status, dependencies=reader,
             responses=AUTH_ERRORS)
    async def status():
        return AuditJSON(await desk.status())

    @api.get("/orders", response_model=list[schemas.OrderRecord], dependencies=reader,
             responses={**AUTH_ERRORS, **BAD_REQUEST})
    async def orders(limit: int = limit, status: str | None = Query(None),
                     account_id: str | None = Query(None)):
        """Execution records, newest first."""
        return AuditJSON(await desk.orders(limit or MAX_LIMIT, status, account_id))

    @api.get("/orders/{signal_id}", response_model=schemas.OrderRecord, dependencies=reader,
             responses={**AUTH_ERRORS, **BAD_REQUEST, 404: {"model": schemas.ErrorBody}})
    async def order(signal_id: str):
        """One record with its events and confirmations."""
        record = await desk.order(signal_id)
        if record is None:
            raise ApiError(404, f"no order with signal_id {signal_id!r}")
        return AuditJSON(record)

    @api.get("/positions", response_model=list[schemas.Position], dependencies=reader,
             responses={**AUTH_ERRORS, **BAD_REQUEST})
    async def positions(all: bool = Query(False, description="closed positions too")):  # noqa: A002
        return AuditJSON(await desk.positions(all))

    @api.get("/confirmations", response_model=list[schemas.Confirmation], dependencies=reader,
             responses={**AUTH_ERRORS, **BAD_REQUEST})
    async def confirmations(limit: int = limit):
        """Confirmations of every order, newest first, each with whether it was published."""
        return AuditJSON(await desk.confirmations(limit or MAX_LIMIT))


def _trade_routes(api: FastAPI, desk: OrderDesk) -> None:
    trader = Depends(caller_with(desk, Scope.TRADE))

    @api.post("/orders", status_code=201, response_model=schemas.StoredOrder, responses={
        **AUTH_ERRORS, **TOO_LARGE,
        409: {"model": schemas.DuplicateOrder, "description": "signal_id already recorded; "
                                                              "nothing was sent to a broker"},
        422: {"model": schemas.RejectedOrder, "description": "refused, with the reasons naming "
                                                             "the fields"}},
        openapi_extra=json_body("Order"))
    async def post_order(request: Request, key: dict = trader):
        """Place a §3 order: the same validation, risk controls, claim and tracking as one
        from trading-orders. A refused order with a usable signal_id is recorded REJECTED (and
        confirmed) as it would be from Pub/Sub, so its signal_id is used."""
        intake = await desk.submit_order(await read_body(request), who(key))
        return await _order_answer(desk, intake, key)

    @api.post("/halt", response_model=schemas.Halt,
              responses={**AUTH_ERRORS, **BAD_REQUEST, **TOO_LARGE},
              openapi_extra=json_body("HaltRequest"))
    async def halt(request: Request, key: dict = trader):
        """Stop new orders (kill switch), for every account or one; as `halt`."""
        body = await read_model(request, schemas.HaltRequest)
        try:
            doc = await desk.halt(body.reason, body.account_id, body.cancel_open, who(key))
        except UnknownAccount as e:
            raise ApiError(422, str(e), [{"field": "account_id", "message": str(e)}]) from None
        return AuditJSON(doc)

    @api.post("/resume", response_model=schemas.Resumed,
              responses={**AUTH_ERRORS, **BAD_REQUEST, **TOO_LARGE},
              openapi_extra=json_body("ResumeRequest", required=False))
    async def resume(request: Request, key: dict = trader):
        """Lift the global halt, or one account's; as `resume`. No body: the global halt."""
        body = await read_model(request, schemas.ResumeRequest)
        lifted, remaining = await desk.resume(body.account_id, who(key))
        return AuditJSON({"lifted": lifted, "still_halted": remaining})


async def _order_answer(desk: OrderDesk, intake: Intake, key: dict) -> AuditJSON:
    if intake.kind is Accepted.CLAIMED:
        logger.info("Order %s accepted over HTTP from %s", intake.signal_id, who(key))
        return AuditJSON(intake.record, 201)
    if intake.kind is Accepted.DUPLICATE:
        raise ApiError(409, f"signal_id {intake.signal_id!r} is already recorded",
                       signal_id=intake.signal_id, record=await desk.order(intake.signal_id))
    logger.info("Order %s refused over HTTP from %s: %s", intake.signal_id or "-", who(key),
                intake.reason)
    raise ApiError(422, intake.reason, problem_errors(intake.problems), signal_id=intake.signal_id,
                   control=intake.control, record=intake.record)


def _handle_errors(api: FastAPI) -> None:
    @api.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError):
        return AuditJSON(error.body, error.status, headers=error.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError):
        errors = [{"field": str(item["loc"][-1]), "message": f"{item['loc'][-1]}: {item['msg']}"}
                  for item in error.errors()]  # query and path parameters (bodies are read raw)
        return AuditJSON({"detail": "; ".join(e["message"] for e in errors), "errors": errors},
                         422)

    @api.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception):
        return AuditJSON({"detail": f"internal error ({type(error).__name__}); see the "
                                    f"daemon's log", "errors": []}, 500)

    @api.exception_handler(StoreUnavailable)
    async def store_down(_request: Request, error: StoreUnavailable):
        logger.warning("HTTP API: %s", error)
        return AuditJSON({"detail": f"{error}; try again (an order recorded meanwhile answers "
                                    f"409 with its record)", "errors": []},
                         503, headers={"Retry-After": "1"})


def _openapi_with_order(api: FastAPI) -> None:
    """The generated description plus the §3 order's schema (the POST /orders body is read
    raw, so that it takes exactly the path a Pub/Sub message takes)."""

    def openapi() -> dict:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version,
                                 description=api.description, routes=api.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                schemas.request_schemas())
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi
