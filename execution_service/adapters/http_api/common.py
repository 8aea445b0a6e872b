"""What every route of the HTTP API shares: the JSON answer, errors, keys, bodies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from execution_service.adapters.http_api import schemas
from execution_service.domain.api_keys import Scope
from execution_service.domain.records import json_default, strict_json
from execution_service.service.ports import OrderDesk

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


def problem_errors(problems) -> list[dict]:
    return [{"field": problem.field, "message": problem.message} for problem in problems]


def caller_with(desk: OrderDesk, needed: Scope):
    async def caller(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                            Depends(_bearer)]) -> dict:
        if credentials is None:
            raise ApiError(401, "missing API key: send Authorization: Bearer <key>",
                           headers={"WWW-Authenticate": "Bearer"})
        key = await desk.authenticate(credentials.credentials)
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


def json_body(name: str, required: bool = True) -> dict:
    """openapi_extra for a body read raw (JSON whatever the Content-Type says)."""
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


async def read_body(request: Request) -> bytes:
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


async def read_model(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body as `model`, or 422 naming the fields; an empty body is an empty object."""
    raw = await read_body(request)
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as invalid:
        errors = [{"field": ".".join(str(p) for p in item["loc"]) or None,
                   "message": f"{'.'.join(str(p) for p in item['loc']) or 'body'}: "
                              f"{item['msg']}"} for item in invalid.errors(include_url=False)]
        raise ApiError(422, "; ".join(error["message"] for error in errors), errors) from None
