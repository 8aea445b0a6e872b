"""Shared fixtures: Google's Pub/Sub emulator for the session, and a daemon process runner."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from execution_service.adapters.emulator import find_launcher, start_emulator

REPO = Path(__file__).resolve().parent.parent
SIGNALS = REPO / "tests" / "signals"


@pytest.fixture(scope="session")
def emulator_host(tmp_path_factory):
    """One real emulator for the whole session, on a free loopback port."""
    if find_launcher() is None:
        from execution_service.adapters.emulator import INSTALL_HINT

        pytest.fail(f"Google's Pub/Sub emulator is required. {INSTALL_HINT}")
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    emulator = start_emulator(log)
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    yield emulator.host
    emulator.stop()
    if previous is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous


@pytest.fixture
def project_id() -> str:
    """A project of its own per test, so topics and subscriptions never collide."""
    return f"test-{uuid.uuid4().hex[:10]}"
