"""The HTTP API served for real over the service wiring with fakes at the edges: uvicorn on a
free loopback port, httpx as the client."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx

from execution_service.adapters.http_api import ApiServer, create_api
from execution_service.bootstrap import build_desk
from execution_service.domain.api_keys import Scope, new_key
from tests.fakes.service_fakes import FlakyStore, make_app

NAMES = {Scope.READ: "dash", Scope.TRADE: "desk"}


class Api:
    """A served API over `make_app`, with a read key and a trade key."""

    def __init__(self, app, publisher, server: ApiServer, client: httpx.AsyncClient,
                 secrets: dict[Scope, str]):
        self.app, self.publisher, self.server, self.client = app, publisher, server, client
        self.secrets = secrets

    def auth(self, scope: Scope) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[scope]}"}

    async def get(self, path: str, scope: Scope = Scope.READ, **kwargs) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(scope), **kwargs)

    async def post(self, path: str, body: bytes | dict | None = None,
                   scope: Scope = Scope.TRADE) -> httpx.Response:
        content = json.dumps(body).encode() if isinstance(body, dict) else body
        return await self.client.post(path, content=content, headers=self.auth(scope))

    def broker_orders(self) -> int:
        return self.app.store.mock_ledger.count()


@contextlib.asynccontextmanager
async def serve(env: dict | None = None, broker=None, **api_options):
    """The API served on a free loopback port over `make_app` (a FlakyStore), with a read
    key (`dash`) and a trade key (`desk`); `api_options` go to `create_api`."""
    app, publisher = make_app(store_class=FlakyStore, env=env, broker=broker)
    app.metrics.bind(healthy=lambda: (True, "ok"))
    secrets = {}
    for scope in Scope:
        made = new_key(scope, NAMES[scope], app.clock())
        app.store.insert_api_key(made.doc)
        secrets[scope] = made.secret
    server = ApiServer(create_api(build_desk(app), **api_options), "127.0.0.1", 0).bind()
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield Api(app, publisher, server, client, secrets)
    await server.stop()
    await app.tracker.stop()
    await app.outbox.stop()


async def until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait on the event loop until `condition()` holds; fail past `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
