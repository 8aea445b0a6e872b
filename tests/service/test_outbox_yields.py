"""The outbox's upkeep (signal_store rows, published marks) gives way to orders: while a
signal's store work waits for the store thread, it writes for its turn's slice (at least one
item) and lets it in, and still finishes everything, in order, with no gap; the slice grows
with the backlog, so upkeep keeps pace with a steady stream of signals."""

from __future__ import annotations

import pytest

from execution_service.errors import StoreUnavailable
from execution_service.service import outbox_marks
from execution_service.service.outbox import ConfirmationOutbox
from execution_service.service.outbox_marks import (
    UPKEEP_BACKLOG_ALLOWED,
    UPKEEP_SLICE_MAX_SECONDS,
    UPKEEP_SLICE_SECONDS,
    upkeep_slice,
)
from execution_service.service.store_thread import StoreThread
from tests.fakes.service_fakes import make_app, order_body, settle

pytestmark = pytest.mark.asyncio


class _SignalsAlwaysWaiting(StoreThread):
    """In place (as the embedded store runs), with order-path work always said to wait."""

    def __init__(self) -> None:
        super().__init__(inline=True)

    def order_path_waiting(self) -> bool:
        return True


def _outbox_on(app, publisher, store_thread: StoreThread) -> list[int]:
    """Replace the app's outbox by one on `store_thread`; returns, per store-thread call of
    the outbox, how many rows and marks it wrote."""
    app.outbox = ConfirmationOutbox(app.store, publisher, clock=app.clock,
                                    store_thread=store_thread, retry_base=0.01)
    app.journal._outbox = app.outbox
    per_call: list[int] = []
    write = app.outbox._write

    def counted(writes, marks):
        written, marked, error = write(writes, marks)
        per_call.append(len(written) + len(marked))
        return written, marked, error

    app.outbox._write = counted
    app.outbox.start()
    return per_call


@pytest.fixture
def no_slice(monkeypatch):
    """Upkeep turns with no time of their own: one item, then give way."""
    monkeypatch.setattr(outbox_marks, "upkeep_slice", lambda backlog: 0.0)


class _StoreTime:
    """The upkeep's clock, moved on 1 ms by every store write of the outbox."""

    def __init__(self, app) -> None:
        self.now = 0.0
        for name in ("update_signal", "mark_published"):
            write = getattr(app.store, name)

            def timed(*args, _write=write):
                self.now += 0.001
                return _write(*args)

            setattr(app.store, name, timed)

    def __call__(self) -> float:
        return self.now


async def test_given_signals_waiting_for_the_store_then_the_outbox_writes_one_item_per_call(
        no_slice):
    """Given three orders filled while order-path work waits for the store thread, and turns
    with no slice; when the outbox writes their signal_store rows and published marks; then
    each call writes one item and gives way, and in the end every row and every mark is
    written."""
    app, publisher = make_app(start_outbox=False)
    per_call = _outbox_on(app, publisher, _SignalsAlwaysWaiting())
    for n in range(3):
        app.processor.handle(order_body(signal_id=f"sig_{n}"))
    await settle(app)
    assert per_call and set(per_call) == {1}
    assert sum(per_call) >= 6  # three signal_store rows, three marks (at least)
    for n in range(3):
        record = app.store.get_record(f"sig_{n}")
        assert record["published_sequence"] == 2 and record["outbox_pending"] is False
        assert app.store.signals.find_one({"signal_id": f"sig_{n}"}) is not None
    await app.outbox.stop()


@pytest.mark.parametrize(("store_thread", "slice_seconds", "done"), [
    (StoreThread(inline=True), 0.0, 5), (_SignalsAlwaysWaiting(), 0.0, 1),
    (_SignalsAlwaysWaiting(), 0.0025, 3)],
    ids=["idle", "signals waiting", "signals waiting, a 2.5 ms slice"])
async def test_given_rows_and_marks_handed_over_then_all_are_written_unless_a_signal_waits(
        store_thread, slice_seconds, done):
    """Given three signal_store rows and two marks handed to the store thread in one call, each
    store write taking 1 ms; when no order-path work waits, then all five are written in that
    call (no needless hops); when some waits, then one is, or as many as the turn's slice
    has time for, and the call returns without an error (the rest stays queued)."""
    app, publisher = make_app(start_outbox=False)
    outbox = ConfirmationOutbox(app.store, publisher, clock=app.clock, store_thread=store_thread)
    outbox._upkeep_clock = _StoreTime(app)
    outbox._upkeep_slice = slice_seconds
    writes = {"sig_a": (2, {"status": "FILLED"}), "sig_b": (2, {"status": "FILLED"}),
              "sig_e": (2, {"status": "FILLED"})}
    marks = {"sig_c": 2, "sig_d": 2}
    written, marked, error = outbox._write(writes, marks)
    assert error is None
    assert len(written) + len(marked) == done
    assert list(written)[:1] == ["sig_a"]  # in the order handed over


async def test_given_the_store_failing_mid_way_while_giving_way_then_nothing_is_lost(no_slice):
    """Given order-path work always waiting and the store refusing every other mark; when the
    outbox writes; then it retries what failed, and every record ends published and marked,
    none marked past a gap."""
    app, publisher = make_app(start_outbox=False)
    per_call = _outbox_on(app, publisher, _SignalsAlwaysWaiting())
    calls = await _marks_refused(app, 3, lambda call: call % 2 == 1)
    assert len(calls) >= 6 and per_call


async def _marks_refused(app, orders: int, refused) -> list[list[str]]:
    """Fill `orders` orders with the store refusing the mark calls numbered `refused(n)`;
    returns each call's signals, once every record is published and clear."""
    mark_published = app.store.mark_published
    calls: list[list[str]] = []

    def flaky(marks):
        calls.append(list(marks))
        if refused(len(calls)):
            raise StoreUnavailable("store down (test)")
        mark_published(marks)

    app.store.mark_published = flaky
    for n in range(orders):
        app.processor.handle(order_body(signal_id=f"sig_{n}"))
    await settle(app)
    for n in range(orders):
        record = app.store.get_record(f"sig_{n}")
        assert record["published_sequence"] == 2 and record["outbox_pending"] is False
    await app.outbox.stop()
    return calls


async def test_given_no_signal_waiting_then_marks_go_in_batches_and_a_failed_batch_is_redone():
    """Given twelve orders filled while no order-path work waits, and the store refusing the
    first batch of marks; when the outbox marks them; then marks are written several per
    store call (MARKS_PER_WRITE at most), the refused batch is written again, and every
    record ends published and clear."""
    from execution_service.service.outbox_marks import MARKS_PER_WRITE

    app, publisher = make_app(start_outbox=False)
    _outbox_on(app, publisher, StoreThread(inline=True))
    calls = await _marks_refused(app, 12, lambda call: call == 1)
    assert max(len(c) for c in calls) > 1 and all(len(c) <= MARKS_PER_WRITE for c in calls)
    assert set(calls[0]) <= {s for c in calls[1:] for s in c}  # the refused batch, again


async def test_the_slice_is_none_within_the_allowance_then_grows_with_the_backlog_bounded():
    allowed = UPKEEP_BACKLOG_ALLOWED
    assert upkeep_slice(0) == upkeep_slice(allowed) == 0.0
    slices = [upkeep_slice(allowed + n) for n in (1, 10, 100, 1000, 100_000)]
    assert slices[0] == pytest.approx(UPKEEP_SLICE_SECONDS, rel=0.1)
    assert slices == sorted(slices) and slices[2] > slices[0]
    assert slices[-1] == UPKEEP_SLICE_MAX_SECONDS


@pytest.mark.parametrize("slices", [False, True], ids=["no slice", "slices"])
async def test_given_a_steady_stream_of_signals_then_upkeep_keeps_pace_with_fewer_turns(
        monkeypatch, slices):
    """Given 40 orders filled while order-path work always waits (a steady stream), each store
    write taking 1 ms, and a backlog beyond the allowance; when the outbox writes their rows
    and marks; then every one is written and marked, and with slices it took fewer turns than
    items (several per turn while the backlog is long), without them one turn per item."""
    if not slices:
        monkeypatch.setattr(outbox_marks, "upkeep_slice", lambda backlog: 0.0)
    else:  # 40 signals behind is beyond the allowance here
        monkeypatch.setattr(outbox_marks, "UPKEEP_BACKLOG_ALLOWED", 0)
    app, publisher = make_app(start_outbox=False)
    per_call = _outbox_on(app, publisher, _SignalsAlwaysWaiting())
    app.outbox._upkeep_clock = _StoreTime(app)
    for n in range(40):
        app.processor.handle(order_body(signal_id=f"sig_{n}"))
    await settle(app)
    for n in range(40):
        record = app.store.get_record(f"sig_{n}")
        assert record["published_sequence"] == 2 and record["outbox_pending"] is False
    assert sum(per_call) >= 80  # 40 rows, 40 marks (at least)
    if slices:
        assert len(per_call) < sum(per_call) / 2 and max(per_call) > 2
    else:
        assert set(per_call) == {1}
    await app.outbox.stop()
