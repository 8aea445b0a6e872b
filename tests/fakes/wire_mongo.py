"""A MongoDB wire-protocol server for the suite: secantusdb (PyPI, GPL-2.0, WiredTiger inside)
run as its own process, never imported. pymongo and mongosh talk to it as to a one-node
replica set."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
from pymongo.errors import PyMongoError

from execution_service.adapters.emulator import free_port


def _die_with_parent() -> None:
    """In the child before exec: a SIGKILLed test session takes its server along."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def find_server() -> str | None:
    beside = Path(sys.executable).parent / "secantusd-py"
    return str(beside) if beside.exists() else shutil.which("secantusd-py")


class WireMongo:
    """`secantusd-py` on 127.0.0.1 and a port of its own, data under `directory`. With
    --sync-on-commit every acknowledged write is on disk, as with journaled majority writes
    on a real replica set, so a kill -9 of the server loses none of them."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log = directory / "secantusd.log"

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def database_uri(self, database: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}?directConnection=true"

    def start(self, timeout: float = 60.0) -> WireMongo:
        server = find_server()
        if server is None:
            raise RuntimeError("secantusd-py not found: pip install -e '.[test]'")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "secantusd.toml"  # an empty one: no config is picked up
        config.touch()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [server, "--config", str(config), "--host", "127.0.0.1", "--port",
                 str(self.port), "--storage-path", str(self.directory / "data"),
                 "--sync-on-commit", "--log-level", "WARNING"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
        self._wait_answering(timeout)
        return self

    def _wait_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"secantusd-py exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            if self.answers():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"secantusd-py did not answer on port {self.port} in {timeout:g}s")

    def answers(self) -> bool:
        client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def fresh_database(self) -> str:
        """A database name no other test uses."""
        return f"test_{uuid.uuid4().hex[:12]}"

    def drop(self, database: str) -> None:
        client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=3000)
        try:
            client.drop_database(database)
        finally:
            client.close()


def daemon_store_env(request, backend: str) -> dict[str, str]:
    """The environment that puts a daemon on `backend`: "embedded" (its ./data) or "mongodb"
    (a database of its own on the session's wire server, dropped after the test)."""
    if backend == "embedded":
        return {}
    server: WireMongo = request.getfixturevalue("wire_mongo")
    database = server.fresh_database()
    request.addfinalizer(lambda: server.drop(database))
    return {"MONGODB_URI": server.uri, "MONGODB_DATABASE": database}
