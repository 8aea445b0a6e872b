"""Starts Google's Pub/Sub emulator (it ships with the Google Cloud CLI) on a free port."""

from __future__ import annotations

import ctypes
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
INSTALL_HINT = ("Pub/Sub emulator not found: install it with `sudo apt-get install "
                "google-cloud-cli-pubsub-emulator` (Google Cloud CLI from Debian/Ubuntu packages; "
                "with Google's own installer: `gcloud components install pubsub-emulator beta`), "
                "or set PUBSUB_EMULATOR_HOST to a running emulator")
PR_SET_PDEATHSIG = 1


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
                   timeout: float = 30.0, on_spawn=None) -> Emulator:
    """Start the emulator on 127.0.0.1 and wait until it answers."""
    launcher = find_launcher()
    if launcher is None:
        raise FatalConfigError(INSTALL_HINT)
    port = port or free_port()
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen([str(launcher), "--host=127.0.0.1", f"--port={port}"],
                               stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=_die_with_parent())
    emulator = Emulator(f"127.0.0.1:{port}", process)
    if on_spawn is not None:
        on_spawn(emulator)
    try:
        _wait_answering(emulator, timeout, log_path)
    except BaseException:  # a failed start, or Ctrl-C/SIGTERM while waiting: never leave it
        emulator.stop()
        raise
    return emulator


def _wait_answering(emulator: Emulator, timeout: float, log_path: Path | None) -> None:
    process = emulator.process
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FatalConfigError(f"Pub/Sub emulator exited at start (code {process.returncode})"
                                   f"; see {log_path}")
        if emulator_answers(emulator.host):
            return
        time.sleep(0.1)
    raise FatalConfigError(f"Pub/Sub emulator did not answer on {emulator.host} within "
                           f"{timeout:g}s")


def _die_with_parent():
    """Linux: the emulator (the launcher execs java, which keeps the setting) gets SIGTERM
    when the process that started it dies, even by kill -9. libc is looked up before the fork;
    the child only makes the one call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


def emulator_answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False
