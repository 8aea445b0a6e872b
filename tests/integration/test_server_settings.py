"""The `mongodb://` backend's production settings, against the wire server: explicit write
concern (majority, journaled, with a timeout), primary reads, and the indexes its own queries
need; and a bad setting is one line naming the variable (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pymongo import ReadPreference

from execution_service.adapters.server_settings import ServerSettings
from execution_service.adapters.store import Store, open_store
from execution_service.config import load_settings
from execution_service.errors import FatalConfigError


@pytest.fixture
def server_database(wire_mongo):
    database = wire_mongo.fresh_database()
    yield wire_mongo, database
    wire_mongo.drop(database)


def test_given_default_settings_when_opened_then_majority_journaled_primary(server_database):
    server, database = server_database
    settings = load_settings(environ={"MONGODB_URI": server.uri})
    handle = open_store(server.uri + "&w=1&journal=false", database, None,
                        ServerSettings.from_settings(settings))
    try:
        assert handle.database.write_concern.document == {"w": "majority", "j": True,
                                                          "wtimeout": 10_000}
        assert handle.database.read_preference == ReadPreference.PRIMARY
    finally:
        handle.close()


def test_given_write_concern_settings_then_the_client_uses_them(server_database):
    server, database = server_database
    settings = load_settings(environ={"MONGODB_URI": server.uri, "MONGODB_WRITE_CONCERN": "1",
                                      "MONGODB_JOURNAL": "false",
                                      "MONGODB_WRITE_TIMEOUT_MS": "2500"})
    handle = open_store(server.uri, database, None, ServerSettings.from_settings(settings))
    try:
        assert handle.database.write_concern.document == {"w": 1, "j": False, "wtimeout": 2500}
        Store(handle.database).upsert_account("acc_1", {"enabled": True},
                                             datetime(2026, 11, 24, tzinfo=UTC))
    finally:
        handle.close()


def test_given_a_server_store_when_indexes_ensured_then_its_listing_queries_are_indexed(
        server_database):
    server, database = server_database
    handle = open_store(server.uri, database, None, ServerSettings())
    try:
        store = Store(handle.database)
        store.ensure_indexes()
        records = [spec["key"] for spec in store.records.index_information().values()]
        for key in ([("received_at", -1), ("_id", -1)], [("outbox_pending", 1)],
                    [("status", 1)], [("signal_id", 1)],
                    [("account_id", 1), ("received_at", -1)]):
            assert key in records, (key, records)
        positions = [spec["key"] for spec in store.positions.index_information().values()]
        assert [("account_id", 1), ("symbol", 1), ("status", 1)] in positions
    finally:
        handle.close()


@pytest.mark.parametrize("name,value,message", [
    ("MONGODB_WRITE_CONCERN", "most", "must be majority or a number of members >= 1"),
    ("MONGODB_WRITE_CONCERN", "0", "must be majority or a number of members >= 1"),
    ("MONGODB_JOURNAL", "perhaps", "MONGODB_JOURNAL"),
    ("MONGODB_WRITE_TIMEOUT_MS", "0", "MONGODB_WRITE_TIMEOUT_MS"),
])
def test_given_a_bad_store_setting_then_one_line_naming_it(name, value, message):
    with pytest.raises(FatalConfigError, match=name) as raised:
        load_settings(environ={name: value})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_given_a_bad_write_concern_when_the_daemon_starts_then_exit_2_and_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "execution_service", "status"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "MONGODB_WRITE_CONCERN": "most"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: configuration: MONGODB_WRITE_CONCERN: must be majority or a number of members >= 1 "
        "(got 'most')"]



@pytest.mark.parametrize("command", [["show", "sig_1"], ["halt", "--reason", "desk"],
                                     ["status"], ["accounts", "update", "acc_1", "--name", "A"]])
def test_given_no_server_at_the_uri_when_a_command_runs_then_one_line_and_exit_2(command,
                                                                                tmp_path):
    """Every command reads and writes through the store port: an unreachable server is one
    line naming the store, never a driver traceback."""
    from execution_service.adapters.emulator import free_port

    env = {"PATH": "/usr/bin:/bin", "MONGODB_SERVER_SELECTION_TIMEOUT_MS": "300",
           "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"}
    result = subprocess.run([sys.executable, "-m", "execution_service", *command],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: store unavailable:"), lines
