"""A fill moves a position exactly once, whatever the moment of a crash, across opens, adds,
reductions, closes and flips: the fill ledger outlives every position document."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import mongomock
import pytest

from execution_service.adapters.store import Store
from execution_service.domain.positions import apply_fill
from execution_service.service.positions import PositionBook
from tests.fakes.faults import FaultAtCall, Killed

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
KEY = {"account_id": "acc_1", "strategy_name": "Strat", "symbol": "SPY"}


@dataclass(frozen=True)
class F:
    exec_id: str
    quantity: float
    price: float
    at: datetime


# open long 10, add 5, reduce 3, close (sell 12), open short 4, flip to long 6, close
STREAM = [("s1", "BUY", 10, 100.0), ("s2", "BUY", 5, 102.0), ("s3", "SELL", 3, 101.0),
          ("s4", "SELL", 12, 103.0), ("s5", "SELL", 4, 104.0), ("s6", "BUY", 10, 99.0),
          ("s7", "SELL", 6, 100.0)]


def _record(signal_id: str, side: str) -> dict:
    return {**KEY, "signal_id": signal_id, "side": side, "order_id": f"O-{signal_id}"}


def _fill(n: int, quantity: float, price: float) -> F:
    return F(f"E{n}", quantity, price, T0 + timedelta(seconds=n))


def _apply_all(book: PositionBook, stream) -> None:
    for n, (signal_id, side, quantity, price) in enumerate(stream):
        book.apply(_record(signal_id, side), _fill(n, quantity, price))


def _expected(stream) -> tuple[float, float]:
    """(net quantity, realized PnL) by the position rules alone."""
    position, realized = None, 0.0
    for _signal_id, side, quantity, price in stream:
        change = apply_fill(position, side, quantity, price)
        if change.closed is not None:
            realized += change.closed.realized_pnl
        position = change.current
    net = 0.0 if position is None else position.signed_quantity
    return net, realized + (position.realized_pnl if position else 0.0)


def _held(store: Store) -> tuple[float, float]:
    docs = list(store.positions.find(KEY))
    open_docs = [d for d in docs if d["status"] == "OPEN"]
    assert len(open_docs) <= 1, open_docs
    net = sum((1 if d["side"] == "LONG" else -1) * d["quantity"] for d in open_docs)
    return net, sum(d["realized_pnl"] for d in docs)


def _clean_run_calls() -> int:
    store = FaultAtCall(mongomock.MongoClient(tz_aware=True)["trading"])
    store.arm(None)
    _apply_all(PositionBook(store), STREAM)
    return store.calls


def test_given_a_clean_run_then_positions_follow_the_rules():
    store = Store(mongomock.MongoClient(tz_aware=True)["trading"])
    _apply_all(PositionBook(store), STREAM)
    assert _held(store) == pytest.approx(_expected(STREAM))


@pytest.mark.parametrize("kill_at", range(1, _clean_run_calls() + 1))
def test_given_a_kill_at_any_store_call_when_every_fill_is_replayed_then_each_moved_once(
        kill_at):
    """Given a stream that opens, adds, reduces, closes and flips; when the process dies at
    store call `kill_at` and a new process replays every fill (the broker reports them all
    again), twice; then positions equal the fills."""
    database = mongomock.MongoClient(tz_aware=True)["trading"]
    dying = FaultAtCall(database)
    dying.arm(kill_at, lambda name: Killed(name))
    with pytest.raises(Killed):
        _apply_all(PositionBook(dying), STREAM)
    restarted = Store(database)
    _apply_all(PositionBook(restarted), STREAM)
    _apply_all(PositionBook(restarted), STREAM)
    assert _held(restarted) == pytest.approx(_expected(STREAM)), f"killed at {dying.failed}"


def test_given_buy_10_then_sell_15_when_the_sell_is_replayed_then_short_5():
    store = Store(mongomock.MongoClient(tz_aware=True)["trading"])
    book = PositionBook(store)
    stream = [("b", "BUY", 10, 100.0), ("s", "SELL", 15, 101.0)]
    _apply_all(book, stream)
    PositionBook(store).apply(_record("s", "SELL"), _fill(1, 15, 101.0))
    assert _held(store)[0] == -5


def test_given_a_flip_then_a_reopen_when_the_flipping_fill_is_replayed_then_nothing_moves():
    """Given BUY 10, SELL 15 (flip), BUY 5 (close), BUY 3 (a new long: a document that never
    saw the SELL's key); when the SELL is replayed; then the long 3 stays."""
    store = Store(mongomock.MongoClient(tz_aware=True)["trading"])
    stream = [("b", "BUY", 10, 100.0), ("s", "SELL", 15, 101.0), ("c", "BUY", 5, 99.0),
              ("r", "BUY", 3, 98.0)]
    _apply_all(PositionBook(store), stream)
    PositionBook(store).apply(_record("s", "SELL"), _fill(1, 15, 101.0))
    assert _held(store) == pytest.approx(_expected(stream))


# -- bounded fill keys: marked together, then dropped -----------------------------------------

BOUND = 2  # keys a document holds before they are marked and dropped: every third fill marks
LONG_STREAM = [*STREAM, ("s8", "BUY", 2, 101.0), ("s9", "BUY", 3, 102.0),
               ("s10", "SELL", 1, 103.0), ("s11", "BUY", 4, 98.0), ("s12", "SELL", 9, 97.0),
               ("s13", "SELL", 2, 99.0)]


def _clean_run_calls_bounded() -> int:
    store = FaultAtCall(mongomock.MongoClient(tz_aware=True)["trading"])
    store.arm(None)
    _apply_all(PositionBook(store, BOUND), LONG_STREAM)
    return store.calls


def _unmarked_and_off_every_position(store: Store) -> list[str]:
    """Ledger entries neither marked applied nor on a position: fills recorded as moved
    nowhere (none may be left once every fill was applied)."""
    on_positions = {k for doc in store.positions.find(KEY) for k in doc["fill_keys"]}
    return [e["_id"] for e in store.position_fills.find({"applied": False})
            if e["_id"] not in on_positions]


@pytest.mark.parametrize("lands", [False, True], ids=["before-the-write", "after-the-write"])
@pytest.mark.parametrize("kill_at", range(1, _clean_run_calls_bounded() + 1))
def test_given_bounded_keys_and_a_kill_at_any_store_call_when_replayed_then_each_moved_once(
        kill_at, lands):
    """Given keys marked and dropped every BOUND fills over opens, adds, closes and flips; when
    the process dies at store call `kill_at` (before its write, or after it landed) and a new
    process replays every fill twice; then positions equal the fills, no document holds more
    than BOUND keys, and every fill is marked applied or still on a position."""
    database = mongomock.MongoClient(tz_aware=True)["trading"]
    dying = FaultAtCall(database)
    dying.arm(kill_at, lambda name: Killed(name), lands=lands)
    with pytest.raises(Killed):
        _apply_all(PositionBook(dying, BOUND), LONG_STREAM)
    restarted = Store(database)
    _apply_all(PositionBook(restarted, BOUND), LONG_STREAM)
    _apply_all(PositionBook(restarted, BOUND), LONG_STREAM)
    assert _held(restarted) == pytest.approx(_expected(LONG_STREAM)), f"killed at {dying.failed}"
    assert max(len(d["fill_keys"]) for d in restarted.positions.find(KEY)) <= BOUND
    assert _unmarked_and_off_every_position(restarted) == []


class DiesAfterThePositionWrite(Store):
    def update_position(self, *args, **kwargs) -> bool:
        super().update_position(*args, **kwargs)
        raise Killed("after update_position landed")


def test_given_a_crash_after_the_position_write_and_260_more_fills_when_replayed_then_once():
    """Given a fill whose position write landed and whose process then died (the record never
    showed it, its ledger entry never marked), when 260 other fills move the same position and
    then the broker reports the fill again, then it does not move the position a second time
    (a document keeping its last 200 keys would have forgotten it)."""
    database = mongomock.MongoClient(tz_aware=True)["trading"]
    store = Store(database)
    book = PositionBook(store)
    book.apply(_record("s0", "BUY"), _fill(0, 10, 100.0))
    with pytest.raises(Killed):
        PositionBook(DiesAfterThePositionWrite(database)).apply(_record("lost", "BUY"),
                                                                _fill(1, 7, 101.0))
    for n in range(260):
        book.apply(_record(f"o{n}", "BUY"), _fill(2 + n, 1, 102.0))
    PositionBook(store).apply(_record("lost", "BUY"), _fill(1, 7, 101.0))  # the replay
    position = store.open_position(KEY)
    assert position["quantity"] == 10 + 7 + 260
    assert store.fill_applied("lost:E1") is True
