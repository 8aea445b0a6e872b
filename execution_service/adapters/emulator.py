"""Starts Google's Pub/Sub emulator (it ships with the Google Cloud CLI) on a free port."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from execution_service.errors import FatalConfigError

logger = logging.getLogger(__name__)
INSTALL_HINT = ("Pub/Sub emulator not found: install the Google Cloud CLI and run "
                "`gcloud components install pubsub-emulator beta` (or set PUBSUB_EMULATOR_HOST "
                "to a running emulator)")


def find_launcher() -> Path | None:
    """The emulator's own launcher under the SDK, found from `gcloud` on PATH."""
    candidates = []
    gcloud = shutil.which("gcloud")
    if gcloud:
        candidates.append(Path(os.path.realpath(gcloud)).parent.parent)
    candidates += [Path("/usr/lib/google-cloud-sdk"), Path("/usr/share/google-cloud-sdk"),
                   Path.home() / "google-cloud-sdk"]
    for root in candidates:
        launcher = root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if launcher.exists():
            return launcher
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Emulator:
    host: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start_emulator(log_path: Path | None = None, port: int | None = None,
                   timeout: float = 30.0) -> Emulator:
    """Start the emulator on 127.0.0.1 and wait until it answers."""
    launcher = find_launcher()
    if launcher is None:
        raise FatalConfigError(INSTALL_HINT)
    port = port or free_port()
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen([str(launcher), "--host=127.0.0.1", f"--port={port}"],
                               stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True)
    emulator = Emulator(f"127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FatalConfigError(f"Pub/Sub emulator exited at start (code {process.returncode})"
                                   f"; see {log_path}")
        if _answers(emulator.host):
            return emulator
        time.sleep(0.1)
    emulator.stop()
    raise FatalConfigError(f"Pub/Sub emulator did not answer on {emulator.host} within "
                           f"{timeout:g}s")


def _answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False
