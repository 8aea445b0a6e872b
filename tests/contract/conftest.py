"""The store contract's backends: every `store` test runs on the in-memory store
(`mongomock://`), the embedded store and a real MongoDB wire-protocol server (`mongodb://`,
secantusdb), all opened through the product's own open_store. Add cases in
tests/contract/test_store_*.py using the `store` fixture (and `second_store` for a second
process on the same data)."""

from __future__ import annotations

import pytest

from execution_service.adapters.server_settings import ServerSettings
from execution_service.adapters.store import Store, open_store

STORE_BACKENDS = ("mongomock", "embedded", "mongodb")


@pytest.fixture(params=STORE_BACKENDS)
def store_handle(request, tmp_path):
    if request.param == "mongomock":
        handle = open_store("mongomock://", "trading", None)
    elif request.param == "embedded":
        handle = open_store(None, "trading", tmp_path / "data")
    else:
        server = request.getfixturevalue("wire_mongo")
        database = server.fresh_database()
        handle = open_store(server.uri, database, None, ServerSettings())
        request.addfinalizer(lambda: server.drop(database))
    yield handle
    handle.close()


@pytest.fixture
def store(store_handle) -> Store:
    store = Store(store_handle.database)
    store.ensure_indexes()
    return store


@pytest.fixture
def second_store(store_handle) -> Store:
    """Another Store on the same data: another replica, as far as the store can tell."""
    return Store(store_handle.database)
