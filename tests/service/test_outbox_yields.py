"""The outbox's upkeep (signal_store rows, published marks) gives way to orders: while a
signal's store work waits for the store thread, it writes one item per call and lets it in,
and still finishes everything, in order, with no gap."""

from __future__ import annotations

import pytest

from execution_service.errors import StoreUnavailable
from execution_service.service.outbox import ConfirmationOutbox
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


async def test_given_signals_waiting_for_the_store_then_the_outbox_writes_one_item_per_call():
    """Given three orders filled while order-path work waits for the store thread; when the
    outbox writes their signal_store rows and published marks; then each call writes one
    item and gives way, and in the end every row and every mark is written."""
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


@pytest.mark.parametrize(("store_thread", "done"), [
    (StoreThread(inline=True), 4), (_SignalsAlwaysWaiting(), 1)], ids=["idle", "signals waiting"])
async def test_given_rows_and_marks_handed_over_then_all_are_written_unless_a_signal_waits(
        store_thread, done):
    """Given two signal_store rows and two marks handed to the store thread in one call; when
    no order-path work waits, then all four are written in that call (no needless hops);
    when some waits, then one is, and the call returns without an error (the rest stays
    queued)."""
    app, publisher = make_app(start_outbox=False)
    outbox = ConfirmationOutbox(app.store, publisher, clock=app.clock, store_thread=store_thread)
    writes = {"sig_a": (2, {"status": "FILLED"}), "sig_b": (2, {"status": "FILLED"})}
    marks = {"sig_c": 2, "sig_d": 2}
    written, marked, error = outbox._write(writes, marks)
    assert error is None
    assert len(written) + len(marked) == done
    assert list(written)[:1] == ["sig_a"]  # in the order handed over


async def test_given_the_store_failing_mid_way_while_giving_way_then_nothing_is_lost():
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
