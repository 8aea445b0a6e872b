"""The HTTP API (SPEC §15): `create_api(desk)` builds the ASGI app, `ApiServer` serves it."""

from execution_service.adapters.http_api.app import create_api
from execution_service.adapters.http_api.server import ApiServer

__all__ = ["ApiServer", "create_api"]
