"""The embedded store's caches of what a file holds: exact whatever another connection
commits, whatever a batch rolls back."""

from __future__ import annotations

from execution_service.adapters.embedded_store import COMPLETE_PATHS
from tests.unit.test_embedded_store import embedded, raw, record, rows_from_documents, rows_on_disk


def test_given_indexed_paths_cached_when_another_connection_adds_an_index_then_it_is_planned(
        tmp_path):
    """Given a collection queried here (its indexed paths cached); when another client
    creates an index on it; then the next query here plans from the new index's rows (not a
    full scan) and leaves them on disk, and dropping it here is seen there too."""
    first, second = embedded(tmp_path), embedded(tmp_path)
    try:
        mine, theirs = first.trading.records, second.trading.records
        mine.create_index("signal_id", unique=True)
        mine.insert_many([record(1), record(2, status="FILLED")])
        assert mine.find_one({"signal_id": "sig_1"})["_id"] == "exec_1"
        store = first._store["trading"]["records"]
        assert store._declared_paths() == {"signal_id"}

        theirs.create_index("status")
        assert [doc["_id"] for doc in mine.find({"status": "FILLED"})] == ["exec_2"]
        assert store._declared_paths() == {"signal_id", "status"}
        assert store._get_query_index().candidates({"status": "FILLED"}) == {"s:exec_2"}
        collection_file = tmp_path / "trading" / "records"
        with raw(collection_file) as connection:
            marked = {path for (path,) in connection.execute(f"SELECT path FROM {COMPLETE_PATHS}")}
        assert marked == {"signal_id", "status"}
        assert rows_on_disk(collection_file) == rows_from_documents(collection_file)

        mine.drop_index("status_1")
        assert theirs.find_one({"status": "FILLED"})["_id"] == "exec_2"
        assert second._store["trading"]["records"]._declared_paths() == {"signal_id"}
        assert store._declared_paths() == {"signal_id"}
    finally:
        first.close()
        second.close()
