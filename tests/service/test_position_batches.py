"""Bounded fill keys on the embedded store's batches (embedded_batch.py): a key leaves a
position only in a batch after the one that committed its ledger mark, so a batch whose
ledger commit fails while its position writes stand drops nothing it had marked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from execution_service.adapters.store import Store, open_store
from execution_service.domain.orders import RecordedFill
from execution_service.errors import StoreUnavailable
from execution_service.service.positions import PositionBook
from tests.unit.test_embedded_batch import fail_commits_of

T0 = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
KEY = {"account_id": "acc_1", "strategy_name": "Strat", "symbol": "SPY"}


@pytest.fixture
def batched(tmp_path):
    handle = open_store(None, "trading", tmp_path / "data")
    store = Store(handle.database)
    store.ensure_indexes()
    store.health.defer = handle.batches.defer  # as bootstrap wires it
    yield handle, store
    handle.close()


def _apply_in_one_batch(handle, book: PositionBook, numbers: range) -> list:
    with handle.batches.batch() as batch:
        for n in numbers:
            batch.run(lambda n=n: book.apply(
                {**KEY, "signal_id": f"s{n}", "side": "BUY", "order_id": f"O-{n}"},
                RecordedFill("E1", 1.0, 100.0, T0)))
    return [error for _, error in batch.outcomes()]


def test_given_a_batch_whose_ledger_commit_fails_then_the_keys_it_marked_stay_on_the_position(
        batched):
    """Given a bound of 2 and two fills committed, when the next batch's fills mark the
    first two applied and its ledger file's commit fails while the positions file commits,
    then both keys are still on the position (their marks were lost, so must their drop
    be); when a later batch commits, then the keys marked and committed are dropped."""
    handle, store = batched
    book = PositionBook(store, unmarked_max=2)
    assert _apply_in_one_batch(handle, book, range(2)) == [None, None]
    fail_commits_of(handle, "position_fills")
    errors = _apply_in_one_batch(handle, book, range(2, 5))
    assert all(isinstance(error, StoreUnavailable) for error in errors)
    assert {"s0:E1", "s1:E1"} <= set(store.open_position(KEY)["fill_keys"])
    assert store.fill_applied("s0:E1") is False
    del handle.database["position_fills"]._wrapped._store._connection.commit
    book = PositionBook(store, unmarked_max=2)  # the tracker replays the failed fills
    assert _apply_in_one_batch(handle, book, range(2, 5)) == [None] * 3
    assert _apply_in_one_batch(handle, book, range(5, 7)) == [None] * 2
    position = store.open_position(KEY)
    assert position["quantity"] == 7.0
    assert "s0:E1" not in position["fill_keys"] and store.fill_applied("s0:E1")
