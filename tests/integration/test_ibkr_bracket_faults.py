"""IB's native bracket (SPEC §12) when something fails right where it is placed: the store while
the children are claimed, TWS before or while the bracket is sent, the daemon between the claims
and the send. Whatever fails, the bracket reaches TWS once or not at all, and the records say
which. ib_async's real IB() on FakeTws, the real service over mongomock."""

from __future__ import annotations

import asyncio

import pytest

from execution_service.adapters.store import Store
from execution_service.errors import StoreUnavailable
from execution_service.service.processor import Action
from tests.contract.harness_ibkr import IbkrHarness
from tests.fakes.service_fakes import (
    RecordingNotifier,
    make_app,
    order_body,
    status_of,
    wait_until,
)
from tests.integration.test_ibkr_brackets import (
    ENTRY,
    EXITS,
    bracket_placed,
    placed_ids,
    record,
    restarted,
    stop,
    venue_id,
)

pytestmark = pytest.mark.asyncio
ALL = ("sig_1", *EXITS)


class StopLossClaimFailsOnce(Store):
    """The store goes away once, right after the take-profit child is claimed and before the
    stop-loss child is."""

    failures = 0

    def insert_record(self, doc: dict) -> None:
        if doc["signal_id"].endswith(":SL") and not type(self).failures:
            type(self).failures += 1
            raise StoreUnavailable("store unavailable: injected fault")
        super().insert_record(doc)


def tags(tws) -> list[str]:
    return sorted({order.orderRef for _, _, order in tws.received})


async def test_given_store_fails_between_the_two_child_claims_then_bracket_sent_once_whole():
    harness = IbkrHarness()
    broker = await harness.start()
    StopLossClaimFailsOnce.failures = 0
    app, _ = make_app(broker=broker, store_class=StopLossClaimFailsOnce)
    assert app.processor.handle(order_body(**ENTRY)).action is Action.ACK
    await wait_until(lambda: all(status_of(app, s) == "SUBMITTED" for s in ALL),
                     what="bracket at TWS after the store came back")
    assert StopLossClaimFailsOnce.failures == 1
    assert len(harness.tws.received) == 3 and tags(harness.tws) == sorted(ALL)
    assert all(record(app, s)["order_id"] == str(o) for s, (o, _, _) in
               zip(("sig_1", "sig_1:TP", "sig_1:SL"), harness.tws.received, strict=True))
    await stop(app, harness)


async def test_given_tws_unreachable_then_entry_and_children_rejected_and_nothing_sent():
    harness = IbkrHarness()
    broker = await harness.start()
    harness.tws.reachable = False
    harness.tws.drop_connection()
    app, _ = make_app(broker=broker)
    assert app.processor.handle(order_body(**ENTRY)).action is Action.ACK
    await wait_until(lambda: all(status_of(app, s) == "REJECTED" for s in ALL),
                     what="entry and children rejected")
    assert "broker connection failed" in record(app, "sig_1")["reject_reason"]
    child_reason = record(app, "sig_1:SL")["reject_reason"]
    assert "its entry sig_1 ended REJECTED before reaching the broker" in child_reason
    assert harness.tws.received == []
    await wait_until(lambda: record(app, "sig_1").get("exits_settled") is True, what="settled")
    await stop(app, harness)


async def test_given_connection_lost_while_the_bracket_is_sent_then_found_by_tag_never_resent():
    harness = IbkrHarness()
    broker = await harness.start()
    tws = harness.tws
    tws.acknowledge = False
    loop = asyncio.get_running_loop()
    drops = []

    def drop_once(_trade) -> None:
        if not drops:
            drops.append(loop.call_soon(tws.drop_connection))

    harness.ib.newOrderEvent += drop_once
    app, _ = make_app(broker=broker)
    assert app.processor.handle(order_body(**ENTRY)).action is Action.ACK
    await wait_until(lambda: record(app, "sig_1").get("placement_uncertain_at") is not None,
                     what="placement uncertain")
    await wait_until(lambda: all(record(app, s)["order_id"] for s in ALL),
                     what="entry and children found by tag after the reconnect")
    assert len(tws.received) == 3 and tags(tws) == sorted(ALL)
    tws.fill_next(venue_id(app, "sig_1"))
    await wait_until(lambda: status_of(app, "sig_1") == "FILLED", what="entry filled")
    assert len(placed_ids(tws)) == 3
    await stop(app, harness)


async def test_given_crash_after_children_claimed_before_sent_when_restarted_then_sent_once():
    """Given the entry and both children claimed but the daemon gone before anything reached
    TWS, when it restarts, then the bracket is sent once, with the records it claimed."""
    harness, first = await bracket_placed()
    tws = harness.tws
    await stop(first, harness)
    tws.book.clear()  # as if the crash came before the send
    first.store.records.update_many({}, {"$set": {"status": "PENDING", "order_id": None}})
    second, second_tws, broker = await restarted(first, tws)
    await wait_until(lambda: all(status_of(second, s) == "SUBMITTED" for s in ALL),
                     what="bracket sent after the restart")
    assert len(second_tws.received) == 3 and tags(second_tws) == sorted(ALL)
    for signal_id in EXITS:
        assert [e["event"] for e in record(second, signal_id)["events"]].count("CLAIMED") == 1
    await second.brackets.stop()
    await second.tracker.stop()
    await broker.close()


async def test_given_ib_lost_a_child_when_its_entry_is_found_then_rejected_and_operator_alerted():
    """Given a restart that finds the entry (filled meanwhile) and its take-profit at TWS but
    no stop-loss, when an order timeout has passed since the entry was found, then the stop's
    record is REJECTED saying so and the operator is alerted; nothing is sent in its place."""
    harness, first = await bracket_placed()
    tws = harness.tws
    ids = {s: venue_id(first, s) for s in ALL}
    await stop(first, harness)
    tws.fill_next(ids["sig_1"])
    del tws.book[ids["sig_1:SL"]]
    first.store.records.update_many({}, {"$set": {"status": "PENDING", "order_id": None}})
    notifier = RecordingNotifier()
    second, second_tws, broker = await restarted(first, tws, {"ORDER_TIMEOUT_SECONDS": "0.5"},
                                                 notifier=notifier)
    await wait_until(lambda: status_of(second, "sig_1:SL") == "REJECTED", what="stop rejected")
    assert "shows no child order tagged" in record(second, "sig_1:SL")["reject_reason"]
    assert any("sig_1" in getattr(event, "text", "") for event in notifier.events)
    assert (status_of(second, "sig_1"), status_of(second, "sig_1:TP")) == ("FILLED", "SUBMITTED")
    assert second_tws.received == []
    await second.brackets.stop()
    await second.tracker.stop()
    await broker.close()
