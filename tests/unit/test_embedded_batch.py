"""The embedded store's batches: the store thread's calls committed together, nothing visible
outside the process before the commit, a failed write undone alone, a failed commit failing
exactly the calls that touched its file, and other threads kept out of an open batch."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from collections import Counter
from pathlib import Path

import litemongo
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.errors import DuplicateKeyError

from execution_service.adapters.embedded_batch import WriteBatches
from execution_service.adapters.embedded_store import ServerStore
from execution_service.adapters.store import Store, open_store
from execution_service.errors import StoreUnavailable
from tests.unit.test_embedded_store import (
    documents,
    outcome,
    queries,
    rows_from_documents,
    rows_on_disk,
    writes,
)


@pytest.fixture
def opened(tmp_path):
    handle = open_store(None, "trading", tmp_path / "data")
    store = Store(handle.database)
    store.ensure_indexes()
    yield handle, store
    handle.close()


def on_disk(tmp_path: Path, collection: str) -> set[str]:
    """Document keys as another process sees them (committed only)."""
    with sqlite3.connect(tmp_path / "data" / "trading" / collection) as connection:
        return {key for (key,) in connection.execute("SELECT _id FROM documents")}


def statements(handle, collection: str) -> Counter:
    seen: Counter = Counter()
    connection = handle.database[collection]._wrapped._store._connection
    connection.set_trace_callback(lambda sql: seen.update([sql.split()[0].upper()]))
    return seen


def claim(store: Store, n: int) -> None:
    store.insert_record({"_id": f"exec_{n}", "signal_id": f"sig_{n}", "status": "PENDING"})


def test_given_three_claims_in_one_batch_then_one_commit_and_nothing_on_disk_before_it(
        opened, tmp_path):
    handle, store = opened
    claim(store, 0)  # the query index is built on first use
    seen = statements(handle, "execution_confirmations")
    with handle.batches.batch() as batch:
        for n in range(1, 4):
            batch.run(lambda n=n: claim(store, n))
        assert on_disk(tmp_path, "execution_confirmations") == {"s:exec_0"}
    assert [error for _, error in batch.outcomes()] == [None, None, None]
    assert on_disk(tmp_path, "execution_confirmations") == \
        {"s:exec_0", "s:exec_1", "s:exec_2", "s:exec_3"}
    assert (seen["BEGIN"], seen["COMMIT"]) == (1, 1)
    assert seen["PRAGMA"] <= 2  # the caches are checked once in the transaction, not per query


def test_given_a_duplicate_in_the_batch_then_it_alone_fails_and_the_others_commit(
        opened, tmp_path):
    handle, store = opened
    with handle.batches.batch() as batch:
        batch.run(lambda: claim(store, 1))
        batch.run(lambda: store.records.insert_one({"_id": "exec_x", "signal_id": "sig_1"}))
        batch.run(lambda: claim(store, 2))
    errors = [error for _, error in batch.outcomes()]
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], DuplicateKeyError)
    assert on_disk(tmp_path, "execution_confirmations") == {"s:exec_1", "s:exec_2"}


def test_given_a_write_that_fails_half_way_then_only_it_is_undone(opened, tmp_path):
    """Given a document that cannot be encoded (its index rows are written first); when it
    is written between two good ones; then its rows are rolled back to its savepoint and the
    batch commits the others with a query index that matches them."""
    handle, store = opened
    with handle.batches.batch() as batch:
        batch.run(lambda: claim(store, 1))
        batch.run(lambda: store.records.insert_one(
            {"_id": "exec_bad", "signal_id": "sig_bad", "status": "PENDING", "x": object()}))
        batch.run(lambda: claim(store, 2))
    assert [error is None for _, error in batch.outcomes()] == [True, False, True]
    assert on_disk(tmp_path, "execution_confirmations") == {"s:exec_1", "s:exec_2"}
    assert store.records.find_one({"signal_id": "sig_bad"}) is None
    assert [doc["_id"] for doc in store.records.find({"status": "PENDING"})] == \
        ["exec_1", "exec_2"]
    records = tmp_path / "data" / "trading" / "execution_confirmations"
    assert rows_on_disk(records) == rows_from_documents(records)


def fail_commits_of(handle, collection: str) -> None:
    connection = handle.database[collection]._wrapped._store._connection

    def commit() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    connection.commit = commit


def test_given_a_files_commit_fails_then_the_records_after_it_are_rolled_back_too(
        opened, tmp_path):
    """Given a batch writing records, signal_store and both (records touched first), and a
    read of records; when signal_store's commit fails; then records, committed after every
    other file, is rolled back as well: every call that touched either sees StoreUnavailable
    and neither file holds anything of the batch (a record never shows what did not land)."""
    handle, store = opened
    fail_commits_of(handle, "signal_store")
    failures = []
    handle.batches.on_failure = failures.append
    with handle.batches.batch() as batch:
        batch.run(lambda: claim(store, 1))
        batch.run(lambda: store.update_signal("sig_1", {"status": "PENDING"}, None))
        batch.run(lambda: (store.update_signal("sig_2", {}, None), claim(store, 2)))
        batch.run(lambda: store.records.find_one({"signal_id": "sig_1"}))
    outcomes = batch.outcomes()
    assert all(isinstance(error, StoreUnavailable) for _, error in outcomes)
    assert "disk I/O error" in str(outcomes[1][1])
    assert "earlier file's commit" in str(outcomes[0][1])
    assert on_disk(tmp_path, "signal_store") == set()
    assert on_disk(tmp_path, "execution_confirmations") == set()
    assert len(failures) == 1 and "disk I/O error" in str(failures[0])
    del handle.database["signal_store"]._wrapped._store._connection.commit
    store.update_signal("sig_1", {"status": "PENDING"}, None)  # the file works again
    assert len(on_disk(tmp_path, "signal_store")) == 1


def test_given_the_records_commit_fails_then_what_committed_before_it_stands(
        opened, tmp_path):
    """Given a batch with a call writing signal_store then records, and one writing only
    signal_store; when records' commit (the last) fails; then signal_store's writes stand
    (as if each write had committed alone and the writes stopped at the record), the
    signal_store-only call succeeds, and the call that wrote the record fails."""
    handle, store = opened
    fail_commits_of(handle, "execution_confirmations")
    with handle.batches.batch() as batch:
        batch.run(lambda: (store.update_signal("sig_1", {}, None), claim(store, 1)))
        batch.run(lambda: store.update_signal("sig_2", {}, None))
    first, second = batch.outcomes()
    assert isinstance(first[1], StoreUnavailable) and second[1] is None
    assert on_disk(tmp_path, "execution_confirmations") == set()
    assert len(on_disk(tmp_path, "signal_store")) == 2


def test_given_sqlite_rolled_the_transaction_back_then_later_calls_on_that_file_fail(
        opened, tmp_path):
    """Given a batch whose records transaction is rolled back under it (as sqlite does after
    a full disk); when a later call touches records; then it fails instead of writing
    outside the batch, and the earlier claim is reported lost, not done."""
    handle, store = opened
    connection = handle.database["execution_confirmations"]._wrapped._store._connection
    with handle.batches.batch() as batch:
        batch.run(lambda: claim(store, 1))
        batch.run(connection.rollback)
        batch.run(lambda: claim(store, 2))
    first, _, third = batch.outcomes()
    assert isinstance(first[1], StoreUnavailable)
    assert isinstance(third[1], StoreUnavailable)
    assert on_disk(tmp_path, "execution_confirmations") == set()


def test_given_a_batch_open_then_another_threads_read_waits_for_its_commit(opened):
    handle, store = opened
    seen = []
    reader_started = threading.Event()

    def read() -> None:
        reader_started.set()
        seen.append(store.records.find_one({"signal_id": "sig_1"}))

    reader = threading.Thread(target=read)
    with handle.batches.batch() as batch:
        batch.run(lambda: claim(store, 1))
        reader.start()
        reader_started.wait(10)
        reader.join(0.2)  # it cannot get in while the batch is open
        assert reader.is_alive() and seen == []
    reader.join(10)
    assert seen[0]["_id"] == "exec_1"


def test_given_no_batch_then_each_write_commits_on_its_own_as_litemongo(opened, tmp_path):
    handle, store = opened
    claim(store, 0)  # the query index is built on first use
    seen = statements(handle, "execution_confirmations")
    claim(store, 1)
    assert on_disk(tmp_path, "execution_confirmations") == {"s:exec_0", "s:exec_1"}
    claim(store, 2)
    assert seen["COMMIT"] == 2


def test_given_an_outage_then_a_write_ends_it_only_once_its_batch_has_committed(opened):
    """Given the store in an outage; when a heartbeat-like write succeeds in a batch whose
    commit then fails; then the outage goes on (one outage, not a new one); when the next
    batch commits, it is over."""
    handle, store = opened
    store.health.defer = handle.batches.defer
    handle.batches.on_failure = store.health.failed
    store.health.failed(StoreUnavailable("store unavailable: disk full"))
    fail_commits_of(handle, "service_status")
    with handle.batches.batch() as batch:
        batch.run(lambda: store.write_status({"_id": "me", "n": 1}))
    assert isinstance(batch.outcomes()[0][1], StoreUnavailable)
    assert store.health.down and store.health.outages == 1
    del handle.database["service_status"]._wrapped._store._connection.commit
    with handle.batches.batch() as batch:
        batch.run(lambda: store.write_status({"_id": "me", "n": 2}))
    assert not store.health.down and store.health.outages == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(writes(documents(), queries()),
                          st.builds(lambda q: lambda c: list(c.find(q)), queries())),
                min_size=1, max_size=14),
       st.integers(min_value=1, max_value=14))
def test_given_any_writes_in_batches_then_answers_and_index_rows_as_plain_litemongo(
        actions, per_batch):
    """Given any sequence of writes and finds, run `per_batch` at a time in one batch on the
    embedded store (its savepoints and what it remembers within a transaction) and one by
    one on plain litemongo; then every answer is the same and the query index rows on disk
    are exactly those of the stored documents."""
    with tempfile.TemporaryDirectory() as root:
        plain = litemongo.connect(str(Path(root) / "plain"), tz_aware=True)
        batches = WriteBatches(threading.RLock())
        indexed = litemongo.MongoClient(ServerStore(Path(root) / "indexed", batches),
                                        tz_aware=True)
        try:
            for client in (plain, indexed):
                client.trading.records.create_index("u", unique=True, sparse=True)
                for path in ("status", "tags", "owner.id", "n"):
                    client.trading.records.create_index(path)
            for start in range(0, len(actions), per_batch):
                group = actions[start:start + per_batch]
                expected = [outcome(action, plain.trading.records) for action in group]
                with batches.batch() as batch:
                    for action in group:
                        batch.run(lambda a=action: outcome(a, indexed.trading.records))
                assert [result for result, _ in batch.outcomes()] == expected
            assert outcome(lambda c: list(c.find()), indexed.trading.records) == \
                outcome(lambda c: list(c.find()), plain.trading.records)
            collection_file = Path(root) / "indexed" / "trading" / "records"
            assert rows_on_disk(collection_file) == rows_from_documents(collection_file)
        finally:
            plain.close()
            indexed.close()


def test_given_a_fills_position_commit_fails_then_the_ledger_stands_and_no_record_shows_it(
        opened, tmp_path):
    """Given one call that enters a fill in the ledger, moves the position and writes the
    record (the journal's order), after a claim touched records first; when the positions
    file's commit fails; then the ledger entry stands (committed before it), and neither the
    position nor the record lands: the fill is replayed later and moves the position once."""
    handle, store = opened
    fail_commits_of(handle, "positions")
    with handle.batches.batch() as batch:
        batch.run(lambda: claim(store, 0))
        batch.run(lambda: (store.claim_fill({"_id": "sig_1:E1", "signal_id": "sig_1"}),
                           store.insert_position({"_id": "pos_1", "status": "OPEN",
                                                  "fill_keys": ["sig_1:E1"], "version": 0}),
                           claim(store, 1)))
    assert all(isinstance(error, StoreUnavailable) for _, error in batch.outcomes())
    assert on_disk(tmp_path, "position_fills") == {"s:sig_1:E1"}
    assert on_disk(tmp_path, "positions") == set()
    assert on_disk(tmp_path, "execution_confirmations") == set()


def test_given_positions_touched_before_the_ledger_when_the_ledgers_commit_fails_then_no_move_lands(
        opened, tmp_path):
    """Given a batch where a read touches positions first, then a call enters a fill in the
    ledger and moves the position; when the ledger's commit fails; then the position is rolled
    back too (positions commit after the ledger whatever touched them first): no move lands
    without its ledger entry, so a replay after a close cannot move the position again."""
    handle, store = opened
    fail_commits_of(handle, "position_fills")
    with handle.batches.batch() as batch:
        batch.run(lambda: store.positions.find_one({"_id": "pos_1"}))
        batch.run(lambda: (store.claim_fill({"_id": "sig_1:E1", "signal_id": "sig_1"}),
                           store.insert_position({"_id": "pos_1", "status": "OPEN",
                                                  "fill_keys": ["sig_1:E1"], "version": 0})))
    assert all(isinstance(error, StoreUnavailable) for _, error in batch.outcomes())
    assert on_disk(tmp_path, "position_fills") == set()
    assert on_disk(tmp_path, "positions") == set()


def test_given_writes_of_one_statement_when_one_fails_in_sqlite_then_it_alone_is_undone(
        opened, tmp_path):
    """Given a collection without indexes (a write is its document's statement alone, so it
    opens no savepoint) and a trigger that aborts one document's statement; when it is
    written between good ones, and an unencodable one too; then those two alone fail, the
    others commit, and no SAVEPOINT was run (sqlite undoes a failed statement by itself)."""
    handle, _ = opened
    docs = handle.database["plain"]
    docs.insert_one({"_id": "seed"})
    connection = docs._wrapped._store._connection
    connection.execute("CREATE TRIGGER boom BEFORE INSERT ON documents WHEN NEW._id = 's:boom' "
                       "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    seen = statements(handle, "plain")
    with handle.batches.batch() as batch:
        batch.run(lambda: docs.insert_one({"_id": "a", "n": 1}))
        batch.run(lambda: docs.insert_one({"_id": "boom", "n": 2}))
        batch.run(lambda: docs.update_one({"_id": "seed"}, {"$set": {"n": 3}}))
        batch.run(lambda: docs.insert_one({"_id": "bad", "x": object()}))
        batch.run(lambda: docs.insert_one({"_id": "b", "n": 4}))
    assert [error is None for _, error in batch.outcomes()] == [True, False, True, False, True]
    assert on_disk(tmp_path, "plain") == {"s:seed", "s:a", "s:b"}
    assert docs.find_one({"_id": "seed"}) == {"_id": "seed", "n": 3}
    assert seen["SAVEPOINT"] == 0 and seen["COMMIT"] == 1


def test_given_a_write_changing_index_rows_then_it_has_its_savepoint_and_others_none(opened):
    """Given records (indexed); when a batch claims one (index rows and the document) and
    updates another's unindexed field only (the document alone); then one savepoint, the
    claim's."""
    handle, store = opened
    claim(store, 1)
    seen = statements(handle, "execution_confirmations")
    with handle.batches.batch() as batch:
        batch.run(lambda: claim(store, 2))
        batch.run(lambda: store.records.update_one({"_id": "exec_1"}, {"$set": {"note": "x"}}))
    assert [error for _, error in batch.outcomes()] == [None, None]
    assert (seen["SAVEPOINT"], seen["RELEASE"]) == (1, 1)
    assert store.records.find_one({"_id": "exec_1"})["note"] == "x"


def test_given_index_rows_written_when_the_documents_statement_fails_then_they_are_undone(
        opened, tmp_path):
    """Given records (indexed) and a trigger that aborts one record's document statement;
    when that record is claimed (its index rows written first) and then moved to another
    status, between good claims; then it alone fails, its rows are rolled back to its
    savepoint, and the file's rows are exactly those of its documents."""
    handle, store = opened
    claim(store, 0)
    connection = handle.database["execution_confirmations"]._wrapped._store._connection
    connection.execute("CREATE TRIGGER boom BEFORE INSERT ON documents WHEN NEW._id = "
                       "'s:exec_boom' BEGIN SELECT RAISE(ABORT, 'boom'); END")
    connection.commit()
    with handle.batches.batch() as batch:
        batch.run(lambda: claim(store, 1))
        batch.run(lambda: claim(store, "boom"))
        batch.run(lambda: store.records.update_one({"_id": "exec_0"},
                                                   {"$set": {"status": "FILLED"}}))
        batch.run(lambda: claim(store, 2))
    assert [error is None for _, error in batch.outcomes()] == [True, False, True, True]
    records = tmp_path / "data" / "trading" / "execution_confirmations"
    assert on_disk(tmp_path, "execution_confirmations") == {"s:exec_0", "s:exec_1", "s:exec_2"}
    assert rows_on_disk(records) == rows_from_documents(records)
    assert [doc["_id"] for doc in store.records.find({"status": "PENDING"})] == \
        ["exec_1", "exec_2"]
