"""Protective exits (SPEC §12) through the real emulator and a real daemon process (mock paper
broker, embedded store). Every order fills in two chunks, so exits grow with their entry and
one exit's partial fill shrinks the other before it is cancelled. Each test trades its own
symbol: the mock broker's market is per symbol, and another strategy's order moves it."""

from __future__ import annotations

import json
import uuid

import pytest

from execution_service.domain.brackets import OCO_REASON, POSITION_CLOSED_REASON
from tests.fakes.daemon import DaemonProcess
from tests.fakes.pubsub_tools import PubSubRig, market_signal

ACCOUNTS = [{"account_id": "acc_brk", "broker": "MOCK"}]
ENTRY = {"account_id": "acc_brk", "strategy_name": "Brackets", "stop_loss": 95.0,
         "take_profit": 110.0}


def desk_env(emulator_host: str, project: str, workdir) -> dict[str, str]:
    """Mock broker fills in two chunks 0.2 s apart; the daemon polls every 0.1 s."""
    (workdir / "accounts.json").write_text(json.dumps(ACCOUNTS))
    return {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
            "ACCOUNTS_FILE": str(workdir / "accounts.json"), "ORDER_TIMEOUT_SECONDS": "120",
            "MOCK_FILL_DELAY_SECONDS": "0.2", "MOCK_FILL_CHUNKS": "2",
            "ORDER_POLL_SECONDS": "0.1"}


@pytest.fixture(scope="module")
def desk(emulator_host, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("brackets")
    project = f"test-{uuid.uuid4().hex[:10]}"
    rig = PubSubRig(project)
    daemon = DaemonProcess(workdir, desk_env(emulator_host, project, workdir)).start()
    yield daemon, rig
    daemon.stop_quietly()
    rig.close()


def of(rig: PubSubRig, signal_id: str) -> list[dict]:
    return sorted((c for c in rig.confirmations if c["signal_id"] == signal_id),
                  key=lambda c: c["sequence"])


def wait_status(rig: PubSubRig, signal_id: str, status: str) -> dict:
    return rig.wait_for(lambda: next((c for c in of(rig, signal_id) if c["status"] == status),
                                     None), what=f"{status} of {signal_id}")


def protected_entry(rig: PubSubRig, symbol: str) -> str:
    entry = market_signal(ENTRY, symbol=symbol)
    rig.publish(entry)
    signal_id = entry["signal_id"]
    wait_status(rig, signal_id, "FILLED")
    for exit_id in (f"{signal_id}:SL", f"{signal_id}:TP"):
        rig.wait_for(lambda e=exit_id: any(c.get("quantity") == 10 for c in of(rig, e)),
                     what=f"{exit_id} protecting all 10")
    return signal_id


def move_market(rig: PubSubRig, symbol: str, price: float) -> None:
    """Another strategy trades the symbol at `price`: the mock broker's market moves there.
    Sent once: a daemon restarted after a SIGKILL reads a subscription of its own, so a mover
    that is never processed is a lost message, not the emulator's doing."""
    mover = market_signal({"account_id": "acc_brk", "strategy_name": "Mover"},
                          symbol=symbol, quantity=1, reference_price=price)
    rig.publish(mover)
    rig.wait_for(lambda: rig.terminal(mover["signal_id"]), timeout=60.0,
                 what=f"the market mover for {symbol}")


def read(daemon: DaemonProcess, action):
    handle, store = daemon.store()
    try:
        return action(store)
    finally:
        handle.close()


def ledger_counts(daemon: DaemonProcess, signal_id: str) -> dict[str, int]:
    tags = [signal_id, f"{signal_id}:SL", f"{signal_id}:TP"]
    return read(daemon, lambda store: {tag: store.db["mock_broker_orders"].count_documents(
        {"signal_id": tag}) for tag in tags})


def position(daemon: DaemonProcess, symbol: str) -> dict:
    return read(daemon, lambda store: store.db["positions"].find_one(
        {"strategy_name": "Brackets", "symbol": symbol}, sort=[("opened_at", -1)]))


def test_given_entry_with_both_levels_when_filled_then_both_exits_protect_it(desk):
    daemon, rig = desk
    signal_id = protected_entry(rig, "AAPL")
    stop_loss, take_profit = of(rig, f"{signal_id}:SL"), of(rig, f"{signal_id}:TP")
    assert stop_loss[0]["status"] == take_profit[0]["status"] == "SUBMITTED"
    assert {stop_loss[0]["role"], take_profit[0]["role"]} == {"STOP_LOSS", "TAKE_PROFIT"}
    assert stop_loss[0]["parent_signal_id"] == signal_id and stop_loss[0]["side"] == "SELL"
    quantities = [c["quantity"] for c in stop_loss]
    assert quantities == sorted(quantities) and quantities[-1] == 10  # grew, never shrank
    # The entry's note of its exits is written on the store thread, a moment after they confirm.
    record = rig.wait_for(lambda: (r := read(daemon, lambda store: store.get_record(signal_id)))
                          .get("exits") and r, what="the entry's list of exits")
    assert record["exits"] == [f"{signal_id}:SL", f"{signal_id}:TP"]
    ledger = read(daemon, lambda store: {d["signal_id"]: d for d in store.db[
        "mock_broker_orders"].find({"signal_id": {"$in": record["exits"]}})})
    assert (ledger[f"{signal_id}:SL"]["order_type"], ledger[f"{signal_id}:SL"]["stop_price"],
            ledger[f"{signal_id}:SL"]["quantity"]) == ("STOP", 95.0, 10)
    assert (ledger[f"{signal_id}:TP"]["order_type"], ledger[f"{signal_id}:TP"]["limit_price"],
            ledger[f"{signal_id}:TP"]["time_in_force"]) == ("LIMIT", 110.0, "GTC")
    assert ledger_counts(daemon, signal_id) == {signal_id: 1, f"{signal_id}:SL": 1,
                                                f"{signal_id}:TP": 1}


@pytest.mark.parametrize(("symbol", "price", "fills", "cancelled", "fill_price", "pnl"), [
    ("MSFT", 112.0, "TP", "SL", 110.0, 100.0),  # a sell limit fills at its limit
    ("NVDA", 94.0, "SL", "TP", 94.0, -60.0),  # a sell stop fills at the market through it
], ids=["take_profit", "stop_loss"])
def test_given_protected_long_when_price_through_one_exit_then_it_closes_and_the_other_cancelled(
        desk, symbol, price, fills, cancelled, fill_price, pnl):
    daemon, rig = desk
    signal_id = protected_entry(rig, symbol)
    move_market(rig, symbol, price)
    filled = wait_status(rig, f"{signal_id}:{fills}", "FILLED")
    assert filled["avg_fill_price"] == fill_price and filled["filled_quantity"] == 10
    assert wait_status(rig, f"{signal_id}:{cancelled}", "CANCELLED")["reason"] == OCO_REASON
    rig.wait_for(lambda: position(daemon, symbol)["status"] == "CLOSED", what="closed")
    assert position(daemon, symbol)["realized_pnl"] == pytest.approx(pnl)
    assert ledger_counts(daemon, signal_id) == {signal_id: 1, f"{signal_id}:SL": 1,
                                                f"{signal_id}:TP": 1}


def test_given_protected_long_when_closed_by_an_opposite_order_then_both_exits_cancelled(desk):
    daemon, rig = desk
    signal_id = protected_entry(rig, "AMZN")
    rig.publish(market_signal({"account_id": "acc_brk", "strategy_name": "Brackets"},
                              symbol="AMZN", side="SELL", reference_price=101.0))
    for exit_id in (f"{signal_id}:SL", f"{signal_id}:TP"):
        assert wait_status(rig, exit_id, "CANCELLED")["reason"] == POSITION_CLOSED_REASON
    rig.wait_for(lambda: position(daemon, "AMZN")["status"] == "CLOSED", what="closed")
    assert position(daemon, "AMZN")["realized_pnl"] == pytest.approx(10.0)
    assert ledger_counts(daemon, signal_id) == {signal_id: 1, f"{signal_id}:SL": 1,
                                                f"{signal_id}:TP": 1}
    assert daemon.process.poll() is None


def test_given_sigkill_after_exits_placed_when_restarted_then_resumed_never_placed_again(
        emulator_host, project_id, tmp_path):
    """Given a protected entry and a daemon killed with SIGKILL, when a new daemon starts on
    the same store and the price goes through the take-profit, then the resumed exits close
    the position one-cancels-other, and each order is at the broker exactly once."""
    rig = PubSubRig(project_id)
    daemon = DaemonProcess(tmp_path, desk_env(emulator_host, project_id, tmp_path)).start()
    try:
        signal_id = protected_entry(rig, "TSLA")
        daemon.kill()
        daemon.read_new_subscription()  # made at start, before the market mover is sent
        daemon.start()
        move_market(rig, "TSLA", 112.0)
        assert wait_status(rig, f"{signal_id}:TP", "FILLED")["filled_quantity"] == 10
        assert wait_status(rig, f"{signal_id}:SL", "CANCELLED")["reason"] == OCO_REASON
        rig.wait_for(lambda: position(daemon, "TSLA")["status"] == "CLOSED", what="closed")
        assert position(daemon, "TSLA")["realized_pnl"] == pytest.approx(100.0)
        assert ledger_counts(daemon, signal_id) == {signal_id: 1, f"{signal_id}:SL": 1,
                                                    f"{signal_id}:TP": 1}
        for exit_id in (f"{signal_id}:SL", f"{signal_id}:TP"):
            events = [e["event"] for e in read(daemon, lambda s, e=exit_id: s.get_record(e))[
                "events"]]
            assert events.count("CLAIMED") == 1 and events.count("SUBMITTED") == 1
    finally:
        daemon.stop_quietly()
        rig.close()
