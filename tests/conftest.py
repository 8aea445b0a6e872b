"""Shared fixtures: Google's Pub/Sub emulator and a MongoDB wire-protocol server for the
session."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from execution_service.adapters.emulator import find_launcher, start_emulator
from tests.fakes.wire_mongo import WireMongo

# No property test may fail for taking long: a loaded CI machine stalls a single example for
# hundreds of milliseconds (hypothesis' default deadline is 200 ms) without anything wrong.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

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


@pytest.fixture(scope="session")
def wire_mongo(tmp_path_factory):
    """One MongoDB wire-protocol server (secantusdb) for the whole session, on a free loopback
    port; each test takes a database of its own (`wire_mongo.fresh_database()`)."""
    server = WireMongo(tmp_path_factory.mktemp("wire-mongo")).start()
    yield server
    server.stop()
