"""The position book over a real store (two replicas sharing it), and the outbox marks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution_service.adapters.store import Store, open_store
from execution_service.domain.orders import RecordedFill
from execution_service.domain.positions import apply_fill
from execution_service.service.positions import PositionBook

AT = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
KEY = {"account_id": "acc_1", "strategy_name": "Strat", "symbol": "SPY"}


@pytest.fixture
def store():
    handle = open_store("mongomock://", "trading", None)
    store = Store(handle.database)
    store.ensure_indexes()
    yield store
    handle.close()


def record(signal_id: str, side: str) -> dict:
    return {**KEY, "signal_id": signal_id, "side": side, "order_id": f"ord_{signal_id}"}


def fill(exec_id: str, quantity: float, price: float) -> RecordedFill:
    return RecordedFill(exec_id, quantity, price, AT)


def expected(fills: list[tuple[str, float, float]]):
    position = None
    for side, quantity, price in fills:
        position = apply_fill(position, side, quantity, price).current
    return position


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 50),
                          st.integers(90, 110), st.integers(0, 1)), min_size=1, max_size=20))
def test_given_two_replicas_taking_turns_then_the_position_is_every_fill_once(fills):
    handle = open_store("mongomock://", "trading", None)
    shared = Store(handle.database)
    shared.ensure_indexes()
    replicas = [PositionBook(shared), PositionBook(shared)]
    for n, (side, quantity, price, replica) in enumerate(fills):
        replicas[replica].apply(record(f"sig_{n}", side), fill("E1", quantity, float(price)))
    want = expected([(side, quantity, float(price)) for side, quantity, price, _ in fills])
    got = shared.open_position(KEY)
    if want is None:
        assert got is None
    else:
        assert (got["side"], got["quantity"]) == (want.side, want.quantity)
        assert got["avg_entry_price"] == pytest.approx(want.avg_entry_price)
    handle.close()


def test_given_a_fill_replayed_after_a_restart_then_it_moves_the_position_once(store):
    PositionBook(store).apply(record("sig_1", "BUY"), fill("E1", 100, 235.15))
    PositionBook(store).apply(record("sig_2", "BUY"), fill("E1", 10, 236.0))
    restarted = PositionBook(store)
    restarted.apply(record("sig_1", "BUY"), fill("E1", 100, 235.15))  # the crash replay
    assert store.open_position(KEY)["quantity"] == 110


def test_given_another_replica_moved_it_then_the_remembered_copy_is_not_trusted(store):
    mine, theirs = PositionBook(store), PositionBook(store)
    mine.apply(record("sig_1", "BUY"), fill("E1", 100, 100.0))
    theirs.apply(record("sig_2", "SELL"), fill("E1", 40, 110.0))
    mine.apply(record("sig_3", "BUY"), fill("E1", 10, 120.0))
    position = store.open_position(KEY)
    assert position["quantity"] == 70 and position["realized_pnl"] == pytest.approx(400.0)
    assert position["version"] == 2


def test_given_a_flip_then_the_old_one_closes_and_the_next_fill_moves_the_new_one(store):
    book = PositionBook(store)
    book.apply(record("sig_1", "BUY"), fill("E1", 100, 100.0))
    book.apply(record("sig_2", "SELL"), fill("E1", 150, 105.0))
    book.apply(record("sig_3", "SELL"), fill("E1", 10, 104.0))
    position = store.open_position(KEY)
    assert (position["side"], position["quantity"]) == ("SHORT", 60)
    assert store.count_positions(KEY) == 2


# -- marks ------------------------------------------------------------------------------------


class CountingStore:
    """The real store, with the position book's calls to it counted by method name."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        method = getattr(self._store, name)

        def counted(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)
        return counted


def test_given_a_hot_position_then_open_add_close_cost_one_write_and_a_flip_two(store):
    """Given one book moving one position through open, add, close, open, flip, close, when
    each fill's store calls are counted, then every fill is its ledger entry and one position
    write (two for a flip: the close and the opposite position): no reads, no mark."""
    counting = CountingStore(store)
    book = PositionBook(counting)
    steps = [("BUY", 1, "insert"), ("BUY", 2, "update"), ("SELL", 3, "update"),
             ("SELL", 1, "insert"), ("BUY", 3, "update+insert"), ("SELL", 2, "update"),
             ("BUY", 1, "insert")]
    book.apply(record("warm", "BUY"), fill("E1", 1, 100.0))  # the first open reads the store
    book.apply(record("warm2", "SELL"), fill("E1", 1, 100.0))
    for n, (side, quantity, writes) in enumerate(steps):
        counting.calls.clear()
        book.apply(record(f"sig_{n}", side), fill("E1", quantity, 100.0 + n))
        moves = ["insert_position" if w == "insert" else "update_position"
                 for w in writes.split("+")]
        assert counting.calls == ["claim_fill", *moves], (n, side)
    want = expected([(side, q, 100.0 + n) for n, (side, q, _) in enumerate(steps)])
    got = store.open_position(KEY)
    assert (got["side"], got["quantity"]) == (want.side, want.quantity)
    assert store.count_positions(KEY) == 5  # warm, three opens, the flip's opposite


def test_given_a_flat_key_opened_by_another_replica_then_the_next_fill_adds_to_it(store):
    """Given a book that closed a position (it remembers the key flat), when another replica
    opens one meanwhile, then this book's next fill is refused as a new document and adds to
    the other's instead of opening a second open position."""
    mine, other = PositionBook(store), PositionBook(store)
    mine.apply(record("s1", "BUY"), fill("E1", 1, 100.0))
    mine.apply(record("s2", "SELL"), fill("E1", 1, 101.0))
    other.apply(record("s3", "BUY"), fill("E1", 2, 102.0))
    mine.apply(record("s4", "BUY"), fill("E1", 3, 103.0))
    opened = list(store.positions.find({**KEY, "status": "OPEN"}))
    assert [(d["side"], d["quantity"]) for d in opened] == [("LONG", 5.0)]


def test_given_the_store_fails_on_a_close_then_the_retried_fill_moves_it_once(store):
    """Given the position write of a close that fails after it landed, when the same fill is
    applied again (a retry), then the position closed once and the book's memory of the key
    did not survive the failure (the next open is not stale)."""
    book = PositionBook(store)
    book.apply(record("s1", "BUY"), fill("E1", 2, 100.0))
    real = store.update_position

    def lands_then_fails(*args, **kwargs):
        real(*args, **kwargs)
        raise ConnectionError("connection lost after the write")
    store.update_position = lands_then_fails
    with pytest.raises(ConnectionError):
        book.apply(record("s2", "SELL"), fill("E1", 2, 101.0))
    store.update_position = real
    book.apply(record("s2", "SELL"), fill("E1", 2, 101.0))
    book.apply(record("s3", "SELL"), fill("E1", 1, 99.0))
    closed = list(store.positions.find({**KEY, "status": "CLOSED"}))
    assert [d["realized_pnl"] for d in closed] == [2.0]
    assert (store.open_position(KEY)["side"], store.open_position(KEY)["quantity"]) == \
        ("SHORT", 1.0)


def test_given_a_newer_confirmation_then_an_older_mark_leaves_the_outbox_pending(store):
    store.records.insert_one({"_id": "exec_sig_1", "signal_id": "sig_1", "status": "FILLED",
                              "confirmation_sequence": 3, "published_sequence": 0,
                              "outbox_pending": True})
    store.mark_published({"sig_1": 2})
    assert _mark_of(store) == (2, True)
    store.mark_published({"sig_1": 3})
    assert _mark_of(store) == (3, False)
    store.mark_published({"sig_1": 1})  # a late answer never moves the mark back
    assert _mark_of(store) == (3, False)


def _mark_of(store) -> tuple[int, bool]:
    doc = store.get_record("sig_1")
    return doc["published_sequence"], doc["outbox_pending"]
