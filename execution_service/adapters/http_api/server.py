"""Serves the HTTP API with uvicorn inside the daemon's event loop.

The socket is bound by `bind()` before the daemon starts, so a port in use stops `run` with one
line naming API_PORT (uvicorn would log and `sys.exit` on its own). uvicorn's own signal
handlers are left out: SIGTERM and SIGINT belong to the daemon, which stops the API first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from execution_service.errors import FatalConfigError

logger = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield


class ApiServer:
    def __init__(self, app, host: str, port: int):
        self.host = host
        self._port = port
        self._server = _EmbeddedServer(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False,
            timeout_graceful_shutdown=2))
        self._socket: socket.socket | None = None
        self._task: asyncio.Task | None = None

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1] if self._socket else self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

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
        return self

    async def start(self) -> None:
        if self._socket is None:
            self.bind()
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]),
                                         name="http-api")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
        logger.info("HTTP API on %s (OpenAPI at %s/openapi.json)", self.url, self.url)

    async def stop(self) -> None:
        if self._task is None:
            if self._socket is not None:
                self._socket.close()
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 5)
        except TimeoutError:
            self._server.force_exit = True
            await asyncio.wait_for(self._task, 2)
        self._socket.close()
        self._task = None
