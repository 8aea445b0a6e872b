"""Runs the real daemon as a child process (`python -m execution_service run`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from execution_service.adapters.store import Store, open_store


def daemon_env(emulator_host: str, workdir: Path, accounts: list[dict],
               **settings: str) -> dict[str, str]:
    """A daemon's environment: a project of its own on the session's emulator (in
    GOOGLE_CLOUD_PROJECT), these accounts in `workdir/accounts.json`, then `settings`."""
    (workdir / "accounts.json").write_text(json.dumps(accounts))
    return {"PUBSUB_EMULATOR_HOST": emulator_host,
            "GOOGLE_CLOUD_PROJECT": f"test-{uuid.uuid4().hex[:10]}",
            "ACCOUNTS_FILE": str(workdir / "accounts.json"), **settings}


class DaemonProcess:
    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir = workdir
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen | None = None
        self.output = workdir / "daemon.out"

    def start(self, wait_for_heartbeat: bool = True, timeout: float = 60.0) -> DaemonProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._output_from = len(self.read_output())  # a restart appends: wait for its own line
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "execution_service", "run"],
                                            cwd=self.workdir, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT)
        if wait_for_heartbeat:
            self._wait_started(timeout)
        return self

    def _wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n"
                                     f"{self.read_output()}")
            if "Running." in self.read_output()[self._output_from:]:
                return
            time.sleep(0.1)
        raise AssertionError(f"daemon did not start within {timeout}s:\n{self.read_output()}")

    def read_output(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def terminate(self, timeout: float = 15.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def read_new_subscription(self, name: str = "trading-orders-sub-restarted") -> None:
        """From the next start on, read orders from a subscription of its own (made at start,
        before the test publishes again). After a SIGKILL or a stop the emulator may keep
        handing new messages to the old consumer's stream for good (LIBRARY-NOTES), so a
        restarted daemon on the old subscription may never see them."""
        self.env["TRADING_ORDERS_SUBSCRIPTION"] = name

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """An operator's command against this daemon's store and Pub/Sub."""
        return subprocess.run([sys.executable, "-m", "execution_service", *args],
                              cwd=self.workdir, env=self.env, capture_output=True, text=True,
                              timeout=60)

    def store(self) -> tuple[object, Store]:
        """A reader on the daemon's store: its MONGODB_URI, else its embedded store (the test
        process only reads)."""
        uri = self.env.get("MONGODB_URI")
        handle = open_store(uri or None, self.env.get("MONGODB_DATABASE", "trading"),
                            None if uri else self.workdir / "data")
        return handle, Store(handle.database)
