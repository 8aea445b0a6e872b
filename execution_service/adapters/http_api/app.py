"""The HTTP API (SPEC §15): routes over the service's OrderDesk port, API keys by scope.

Handlers run on the daemon's event loop, like the Pub/Sub consumer's hand-over: an order
posted here is accepted by the same `accept` call, claimed and tracked by the same tracker.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from execution_service import __version__
from execution_service.adapters.http_api import schemas
from execution_service.domain.api_keys import Scope, who
from execution_service.domain.intake import DEFAULT_MAX_BODY_BYTES
from execution_service.domain.records import json_default, strict_json
from execution_service.errors import StoreUnavailable, UnknownAccount
from execution_service.service.ports import Accepted, Intake, OrderDesk

logger = logging.getLogger(__name__)
MAX_LIMIT = 1000
_bearer = HTTPBearer(auto_error=False, description="An API key from `execution-service "
                                                   "api-keys create --scope read|trade`.")


class AuditJSON(JSONResponse):
    """JSON with dates as ISO-8601 ending in Z (SPEC §15)."""

    def render(self, content: Any) -> bytes:
        return strict_json(content, default=json_default, separators=(",", ":")).encode()


class ApiError(Exception):
    def __init__(self, status: int, detail: str, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.headers = status, headers
        self.body = {"detail": detail, "errors": errors or [], **extra}


def _errors(problems) -> list[dict]:
    return [{"field": problem.field, "message": problem.message} for problem in problems]


def create_api(desk: OrderDesk, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The app; bodies over `max_body_bytes` (MAX_MESSAGE_BYTES, as on trading-orders) are
    refused with 413 before they are read."""
    api = FastAPI(title="Execution service", version=__version__, openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None, default_response_class=AuditJSON,
                  description="Orders, positions and controls of the running daemon (SPEC §15). "
                              "Every route but /healthz needs `Authorization: Bearer <key>`.")
    api.state.max_body_bytes = max_body_bytes
    _handle_errors(api)
    _openapi_with_order(api)
    _read_routes(api, desk)
    _trade_routes(api, desk)
    return api


def _caller(desk: OrderDesk, needed: Scope):
    async def caller(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                            Depends(_bearer)]) -> dict:
        if credentials is None:
            raise ApiError(401, "missing API key: send Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": "Bearer"})
        key = desk.authenticate(credentials.credentials)
        if key is None:
            raise ApiError(401, "unknown or revoked API key",
                           headers={"WWW-Authenticate": "Bearer"})
        if not Scope(key["scope"]).allows(needed):
            raise ApiError(403, f"API key {key['name']!r} has scope {key['scope']}; this call "
                                f"needs {needed}")
        return key

    return caller


AUTH_ERRORS = {401: {"model": schemas.ErrorBody, "description": "no key, or a wrong one"},
               403: {"model": schemas.ErrorBody, "description": "a read key on a trade call"},
               503: {"model": schemas.ErrorBody, "description": "the store is unavailable"}}
BAD_REQUEST = {422: {"model": schemas.ErrorBody, "description": "a parameter or the body is "
                                                                "invalid: errors name them"}}
TOO_LARGE = {413: {"model": schemas.ErrorBody, "description": "a body over MAX_MESSAGE_BYTES "
                                                              "(the limit of trading-orders "
                                                              "bodies); nothing was recorded"}}


def _json_body(name: str, required: bool = True) -> dict:
    """openapi_extra for a body read raw (JSON whatever the Content-Type says)."""
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


async def _body(request: Request) -> bytes:
    """The raw body, refused (413) past the app's `max_body_bytes` without reading the rest."""
    limit = request.app.state.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {int(declared):,} bytes is over the {limit:,}-byte limit "
                            f"(MAX_MESSAGE_BYTES)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body is over the {limit:,}-byte limit (MAX_MESSAGE_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body as `model`, or 422 naming the fields; an empty body is an empty object."""
    raw = await _body(request)
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as invalid:
        errors = [{"field": ".".join(str(p) for p in item["loc"]) or None,
                   "message": f"{'.'.join(str(p) for p in item['loc']) or 'body'}: "
                              f"{item['msg']}"} for item in invalid.errors(include_url=False)]
        raise ApiError(422, "; ".join(error["message"] for error in errors), errors) from None


def _read_routes(api: FastAPI, desk: OrderDesk) -> None:
    reader = [Depends(_caller(desk, Scope.READ))]
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
        return AuditJSON(desk.capabilities())

    @api.get("/status", response_model=schemas.Status, dependencies=reader,
             responses=AUTH_ERRORS)
    async def status():
        return AuditJSON(desk.status())

    @api.get("/orders", response_model=list[schemas.OrderRecord], dependencies=reader,
             responses={**AUTH_ERRORS, **BAD_REQUEST})
    async def orders(limit: int = limit, status: str | None = Query(None),
                     account_id: str | None = Query(None)):
        """Execution records, newest first."""
        return AuditJSON(desk.orders(limit or MAX_LIMIT, status, account_id))

    @api.get("/orders/{signal_id}", response_model=schemas.OrderRecord, dependencies=reader,
             responses={**AUTH_ERRORS, **BAD_REQUEST, 404: {"model": schemas.ErrorBody}})
    async def order(signal_id: str):
        """One record with its events and confirmations."""
        record = desk.order(signal_id)
        if record is None:
            raise ApiError(404, f"no order with signal_id {signal_id!r}")
        return AuditJSON(record)

    @api.get("/positions", response_model=list[schemas.Position], dependencies=reader,
             responses={**AUTH_ERRORS, **BAD_REQUEST})
    async def positions(all: bool = Query(False, description="closed positions too")):  # noqa: A002
        return AuditJSON(desk.positions(all))

    @api.get("/confirmations", response_model=list[schemas.Confirmation], dependencies=reader,
             responses={**AUTH_ERRORS, **BAD_REQUEST})
    async def confirmations(limit: int = limit):
        """Confirmations of every order, newest first, each with whether it was published."""
        return AuditJSON(desk.confirmations(limit or MAX_LIMIT))


def _trade_routes(api: FastAPI, desk: OrderDesk) -> None:
    trader = Depends(_caller(desk, Scope.TRADE))

    @api.post("/orders", status_code=201, response_model=schemas.StoredOrder, responses={
        **AUTH_ERRORS, **TOO_LARGE,
        409: {"model": schemas.DuplicateOrder, "description": "signal_id already recorded; "
                                                              "nothing was sent to a broker"},
        422: {"model": schemas.RejectedOrder, "description": "refused, with the reasons naming "
                                                             "the fields"}},
        openapi_extra=_json_body("Order"))
    async def post_order(request: Request, key: dict = trader):
        """Place a §3 order: the same validation, risk controls, claim and tracking as one
        from trading-orders. A refused order with a usable signal_id is recorded REJECTED (and
        confirmed) as it would be from Pub/Sub, so its signal_id is used."""
        intake = desk.submit_order(await _body(request), who(key))
        return _order_answer(desk, intake, key)

    @api.post("/halt", response_model=schemas.Halt,
              responses={**AUTH_ERRORS, **BAD_REQUEST, **TOO_LARGE},
              openapi_extra=_json_body("HaltRequest"))
    async def halt(request: Request, key: dict = trader):
        """Stop new orders (kill switch), for every account or one; as `halt`."""
        body = await _read(request, schemas.HaltRequest)
        try:
            doc = desk.halt(body.reason, body.account_id, body.cancel_open, who(key))
        except UnknownAccount as e:
            raise ApiError(422, str(e), [{"field": "account_id", "message": str(e)}]) from None
        return AuditJSON(doc)

    @api.post("/resume", response_model=schemas.Resumed,
              responses={**AUTH_ERRORS, **BAD_REQUEST, **TOO_LARGE},
              openapi_extra=_json_body("ResumeRequest", required=False))
    async def resume(request: Request, key: dict = trader):
        """Lift the global halt, or one account's; as `resume`. No body: the global halt."""
        body = await _read(request, schemas.ResumeRequest)
        lifted, remaining = desk.resume(body.account_id, who(key))
        return AuditJSON({"lifted": lifted, "still_halted": remaining})


def _order_answer(desk: OrderDesk, intake: Intake, key: dict) -> AuditJSON:
    if intake.kind is Accepted.CLAIMED:
        logger.info("Order %s accepted over HTTP from %s", intake.signal_id, who(key))
        return AuditJSON(intake.record, 201)
    if intake.kind is Accepted.DUPLICATE:
        raise ApiError(409, f"signal_id {intake.signal_id!r} is already recorded",
                       signal_id=intake.signal_id, record=desk.order(intake.signal_id))
    logger.info("Order %s refused over HTTP from %s: %s", intake.signal_id or "-", who(key),
                intake.reason)
    raise ApiError(422, intake.reason, _errors(intake.problems), signal_id=intake.signal_id,
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
