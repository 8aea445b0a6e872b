"""Serves the HTTP API with uvicorn inside the daemon's event loop.

The socket is bound by `bind()` before the daemon starts, so a port in use stops `run` with one
line naming API_PORT (uvicorn would log and `sys.exit` on its own). uvicorn's own signal
handlers are left out: SIGTERM and SIGINT belong to the daemon, which stops the API first.
Should uvicorn stop or fail by itself, it is started again (same port) after a back-off, and
`serving` says so meanwhile (the daemon's health check reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from execution_service.domain.backoff import compute_backoff
from execution_service.errors import FatalConfigError

logger = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield


class ApiServer:
    name = "HTTP API"

    def __init__(self, app, host: str, port: int, restart_backoff: float = 0.5):
        self.host = host
        self._app = app
        self._port = port
        self._backoff = restart_backoff
        self._server: _EmbeddedServer | None = None
        self._socket: socket.socket | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._stop_asked = asyncio.Event()
        self.restarts = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.started and not self._stopping

    def bind(self) -> ApiServer:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self._port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as e:
            raise FatalConfigError(f"API_PORT {self._port} on API_HOST {self.host}: "
                                   f"{e.strerror or e}") from None
        sock.setblocking(False)
        self._socket = sock
        self._port = sock.getsockname()[1]  # the port chosen when API_PORT is 0
        return self

    async def start(self) -> None:
        if self._socket is None:
            self.bind()
        self._task = asyncio.create_task(self._serve_until_stopped(), name="http-api")
        while not self.serving and not self._task.done():
            await asyncio.sleep(0.01)
        logger.info("HTTP API on %s (OpenAPI at %s/openapi.json)", self.url, self.url)

    async def _serve_until_stopped(self) -> None:
        failures = 0
        while not self._stopping:
            if self._socket is None:  # uvicorn closes the sockets it was given when it stops
                try:
                    self.bind()
                except FatalConfigError as e:
                    logger.error("HTTP API cannot listen again: %s", e)
            served = False
            if self._socket is not None:
                self._server = _EmbeddedServer(uvicorn.Config(
                    self._app, log_config=None, access_log=False, lifespan="off",
                    server_header=False, timeout_graceful_shutdown=2))
                try:
                    await self._server.serve(sockets=[self._socket])
                except Exception:
                    logger.exception("HTTP API failed")
                served = self._server.started
                self._server = self._socket = None
            if self._stopping:
                return
            failures = 1 if served else failures + 1
            self.restarts += 1
            wait = compute_backoff(failures, self._backoff, 10.0)
            logger.warning("HTTP API stopped by itself; serving again in %.1fs", wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_asked.wait(), wait)

    async def stop(self) -> None:
        self._stopping = True
        self._stop_asked.set()
        if self._task is None:
            if self._socket is not None:
                self._socket.close()
            return
        if self._server is not None:
            self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 5)
        except TimeoutError:
            if self._server is not None:
                self._server.force_exit = True
            await asyncio.wait_for(self._task, 2)
        if self._socket is not None:
            self._socket.close()
        self._task = None
