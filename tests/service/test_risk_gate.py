"""The risk gate over a real pymongo-API store, and the operators' halt/resume/update commands."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import click
import pytest
from click.testing import CliRunner

from execution_service import cli
from execution_service.adapters.store import Store, open_store
from execution_service.cli import accounts as cli_accounts
from execution_service.domain.signals import Signal
from execution_service.errors import StoreUnavailable
from execution_service.service.risk import (
    RiskGate,
    active_halts,
    clear_halt,
    halt_alert,
    resume_alert,
    set_halt,
    watch_halts,
)
from tests.fakes.stores import down_store, memory_store

NOW = datetime(2024, 11, 24, 10, 30, tzinfo=UTC)
ACCOUNT = {"_id": "acc_1", "broker": "MOCK", "enabled": True}


class Timer:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SpyStore:
    """The store, noting which of its methods are called."""

    def __init__(self, store) -> None:
        self.store = store
        self.used: list[str] = []

    def __getattr__(self, name: str):
        self.used.append(name)
        return getattr(self.store, name)


@pytest.fixture
def db():
    """The store (through the product's factory) the gate and the halt commands use."""
    return memory_store()[1]


@pytest.fixture
def timer():
    return Timer()


@pytest.fixture
def gate(db, timer):
    return RiskGate(db, lambda: NOW, timer=timer, working_orders=db.working_orders)


def signal(**overrides) -> Signal:
    fields = {"signal_id": "sig_1", "account_id": "acc_1", "strategy_name": "Strat",
              "symbol": "SPY", "side": "BUY", "quantity": 100, "order_type": "MARKET",
              "reference_price": 100.0, **overrides}
    return Signal(**fields)


def record(db, n: int, *, account_id="acc_1", ago=10.0, status="FILLED") -> None:
    db.records.insert_one({
        "_id": f"exec_{account_id}_{n}", "signal_id": f"{account_id}_{n}",
        "account_id": account_id, "status": status,
        "received_at": NOW - timedelta(seconds=ago)})


# -- halts -----------------------------------------------------------------------------------


def test_given_a_global_halt_in_the_store_when_checked_then_every_account_is_refused(db, gate):
    set_halt(db, "fat finger on desk 3", at=NOW)
    for account_id in ("acc_1", "acc_2"):
        breach = gate.check(signal(account_id=account_id), {**ACCOUNT, "_id": account_id})
        assert breach.control == "halt"
        assert breach.reason == "trading halted: fat finger on desk 3"


def test_given_an_account_halt_then_only_that_account_is_refused(db, gate):
    set_halt(db, "margin call", "acc_1", at=NOW)
    breach = gate.check(signal(), ACCOUNT)
    assert breach.control == "halt" and "acc_1" in breach.reason
    assert gate.check(signal(account_id="acc_2"), {**ACCOUNT, "_id": "acc_2"}) is None


def test_given_halts_cached_then_a_new_halt_is_obeyed_once_the_window_passes(db, gate, timer):
    assert gate.check(signal(), ACCOUNT) is None
    set_halt(db, "stop now", at=NOW)
    timer.now += 0.2
    assert gate.check(signal(), ACCOUNT) is None  # still inside the 0.5 s cache window
    timer.now += 0.3
    assert gate.check(signal(), ACCOUNT).control == "halt"
    clear_halt(db)
    timer.now += 0.5
    assert gate.check(signal(), ACCOUNT) is None


def test_given_no_cache_then_a_halt_is_obeyed_at_the_next_order(db):
    gate = RiskGate(db, lambda: NOW, halt_cache_seconds=0)
    assert gate.check(signal(), ACCOUNT) is None
    set_halt(db, "stop now", at=NOW)
    assert gate.check(signal(), ACCOUNT).control == "halt"


def test_given_halt_storage_then_documents_have_the_agreed_shape(db):
    set_halt(db, "acc halt", "acc_1", cancel_open=True, at=NOW, by="telegram:42:desk")
    set_halt(db, "  everything  ", at=NOW)
    set_halt(db, "Kite session expired", at=NOW, by="kite", broker="ZERODHA")
    assert active_halts(db) == [
        {"_id": "global", "account_id": None, "reason": "everything", "cancel_open": False,
         "halted_at": NOW},
        {"_id": "account:acc_1", "account_id": "acc_1", "reason": "acc halt",
         "cancel_open": True, "halted_at": NOW, "by": "telegram:42:desk"},
        {"_id": "broker:ZERODHA", "account_id": None, "reason": "Kite session expired",
         "cancel_open": False, "halted_at": NOW, "by": "kite", "broker": "ZERODHA"}]
    assert clear_halt(db, broker="ZERODHA")["_id"] == "broker:ZERODHA"
    assert clear_halt(db)["_id"] == "global"
    assert clear_halt(db) is None
    assert [doc["_id"] for doc in active_halts(db)] == ["account:acc_1"]
    with pytest.raises(ValueError):
        set_halt(db, " ", at=NOW)


def test_given_the_store_down_when_checked_then_store_unavailable_so_the_message_is_nacked():
    gate = RiskGate(down_store()[0], lambda: NOW)
    with pytest.raises(StoreUnavailable):
        gate.check(signal(), ACCOUNT)
    with pytest.raises(StoreUnavailable):
        set_halt(down_store()[0], "x", at=NOW)


def test_given_a_broker_halt_then_only_that_brokers_accounts_are_refused(db, timer):
    gate = RiskGate(db, lambda: NOW, timer=timer)
    set_halt(db, "Kite session expired", at=NOW, by="kite", broker="ZERODHA")
    breach = gate.check(signal(), {**ACCOUNT, "broker": "ZERODHA"})
    assert breach.control == "halt" and breach.reason == "trading halted: Kite session expired"
    assert gate.check(signal(), {**ACCOUNT, "broker": "MOCK"}) is None
    assert gate.halt_for("acc_1", "ZERODHA")["reason"] == "Kite session expired"
    assert gate.halt_for("acc_1", "MOCK") is None


def test_given_halts_then_halt_for_answers_per_account_even_with_the_store_down(db, timer):
    store, flaky = down_store(db.db)
    gate = RiskGate(store, lambda: NOW, halt_cache_seconds=0)
    set_halt(db, "runaway", "acc_1", cancel_open=True, at=NOW)
    assert gate.halt_for("acc_1")["cancel_open"] is True
    assert gate.halt_for("acc_2") is None
    flaky.down = True  # the last halts read still answer
    assert gate.halt_for("acc_1")["reason"] == "runaway"


# -- orders per minute -----------------------------------------------------------------------


def test_given_records_in_the_last_minute_then_they_count_across_replicas(db, gate):
    account = {**ACCOUNT, "max_orders_per_minute": 3}
    record(db, 1)
    record(db, 2, status="SUBMITTED")
    record(db, 3, status="REJECTED")  # refused orders do not count
    record(db, 4, ago=60.5)  # outside the sliding minute
    record(db, 5, account_id="acc_2")  # another account
    assert gate.check(signal(), account) is None  # 2 before it: the 3rd passes
    record(db, 6, ago=0.1)
    breach = gate.check(signal(), account)
    assert breach.reason == "orders in the last minute 3 reached max_orders_per_minute 3"


def test_given_no_rate_or_position_limit_then_records_and_positions_are_not_read(db, timer):
    spy = SpyStore(db)
    gate = RiskGate(spy, lambda: NOW, timer=timer)
    gate.check(signal(), {**ACCOUNT, "max_order_quantity": 1000})
    assert set(spy.used) == {"list_halts"}
    spy.used.clear()
    gate.check(signal(), {**ACCOUNT, "max_orders_per_minute": 5, "max_position_notional": 1e6})
    assert set(spy.used) == {"count_orders_since", "open_positions_for"}  # halts still cached


# -- position notional -----------------------------------------------------------------------


def test_given_open_positions_of_two_strategies_then_the_account_symbol_total_is_limited(db,
                                                                                        gate):
    positions = db.positions
    positions.insert_many([
        {"_id": "p1", "account_id": "acc_1", "strategy_name": "A", "symbol": "SPY",
         "side": "LONG", "quantity": 120, "avg_entry_price": 99.0, "status": "OPEN"},
        {"_id": "p2", "account_id": "acc_1", "strategy_name": "B", "symbol": "SPY",
         "side": "LONG", "quantity": 80, "avg_entry_price": 101.0, "status": "OPEN"},
        {"_id": "p3", "account_id": "acc_1", "strategy_name": "A", "symbol": "SPY",
         "side": "LONG", "quantity": 900, "avg_entry_price": 99.0, "status": "CLOSED"},
        {"_id": "p4", "account_id": "acc_1", "strategy_name": "A", "symbol": "QQQ",
         "side": "LONG", "quantity": 900, "avg_entry_price": 99.0, "status": "OPEN"},
        {"_id": "p5", "account_id": "acc_2", "strategy_name": "A", "symbol": "SPY",
         "side": "LONG", "quantity": 900, "avg_entry_price": 99.0, "status": "OPEN"},
    ])
    account = {**ACCOUNT, "max_position_notional": 25_000}
    breach = gate.check(signal(), account)
    assert breach.control == "max_position_notional"
    assert breach.reason == ("position notional 30000.00 would exceed max_position_notional "
                             "25000.00 (position 200 + this order 100)")
    assert gate.check(signal(quantity=50), account) is None  # 250 x 100 is exactly the limit
    assert gate.check(signal(side="SELL", quantity=150), account) is None  # reduces


# -- stats -----------------------------------------------------------------------------------


def test_given_rejections_then_stats_count_them_by_control_and_show_halts(db, gate, timer):
    limited = {**ACCOUNT, "max_order_quantity": 10}
    gate.check(signal(), limited)
    gate.check(signal(), limited)
    gate.check(signal(order_type="LIMIT", limit_price=150.0), ACCOUNT)
    gate.check(signal(quantity=1), limited)  # passes
    set_halt(db, "desk closed", "acc_1", at=NOW)
    timer.now += 1
    gate.check(signal(), ACCOUNT)
    stats = gate.stats()
    assert stats["rejections_by_control"] == {"max_order_quantity": 2, "price_collar": 1,
                                              "halt": 1}
    assert stats["halted"] == {"account:acc_1": {"account_id": "acc_1", "reason": "desk closed",
                                                 "cancel_open": False, "halted_at": NOW,
                                                 "broker": None, "by": None}}


# -- halt changes for the daemon -------------------------------------------------------------


def test_given_halts_set_and_lifted_then_poll_reports_each_change_once(db, timer):
    gate = RiskGate(db, lambda: NOW, halt_cache_seconds=0)
    assert gate.poll_halts().started == ()
    set_halt(db, "runaway strategy", "acc_1", cancel_open=True, at=NOW)
    changes = gate.poll_halts()
    assert [doc["_id"] for doc in changes.started] == ["account:acc_1"] and not changes.ended
    assert gate.poll_halts().started == ()
    set_halt(db, "runaway again", "acc_1", cancel_open=True, at=NOW + timedelta(seconds=5))
    assert [doc["reason"] for doc in gate.poll_halts().started] == ["runaway again"]
    clear_halt(db, "acc_1")
    assert [doc["_id"] for doc in gate.poll_halts().ended] == ["account:acc_1"]
    alert = halt_alert(changes.started[0])
    assert alert.text == "Trading halted for account acc_1: runaway strategy " \
                         "(cancelling open orders)"
    assert resume_alert(changes.started[0]).text == "Trading resumed for account acc_1"
    asked = set_halt(db, "desk review", at=NOW, by="api:desk")
    assert halt_alert(asked).text == "Trading halted for all accounts: desk review by api:desk"


async def test_given_a_failing_handler_then_the_halt_is_offered_again(db):
    gate = RiskGate(db, lambda: NOW, halt_cache_seconds=0)
    set_halt(db, "kill", cancel_open=True, at=NOW)
    seen, stop = [], asyncio.Event()

    async def on_change(changes):
        seen.append([doc["_id"] for doc in changes.started])
        if len(seen) == 1:
            raise RuntimeError("broker down (test)")
        stop.set()

    await asyncio.wait_for(watch_halts(gate, stop, on_change, interval=0.01), timeout=5)
    assert seen == [["global"], ["global"]]


# -- operators' commands ---------------------------------------------------------------------


@pytest.fixture
def run_cli(tmp_path):
    runner = CliRunner()
    env = {"MONGODB_URI": f"embedded://{tmp_path}/data", "ACCOUNTS_FILE": ""}

    def invoke(*args: str):
        return runner.invoke(cli.main, list(args), env=env)

    invoke.data = tmp_path / "data"
    assert invoke("accounts", "add", "acc_1", "--broker", "MOCK").exit_code == 0
    return invoke


def read_store(path, read):
    handle = open_store(None, "trading", path)
    try:
        return read(Store(handle.database))
    finally:
        handle.close()


def test_given_halt_then_a_gate_on_the_store_refuses_and_resume_lifts_it(run_cli):
    result = run_cli("halt", "--reason", "fat finger on desk 3", "--cancel-open")
    assert result.exit_code == 0, result.output
    assert result.output == ("trading halted for all accounts: fat finger on desk 3; running "
                             "daemons will cancel open orders\n")

    def check(store):
        return RiskGate(store, lambda: NOW, halt_cache_seconds=0).check(signal(), ACCOUNT)

    breach = read_store(run_cli.data, check)
    assert breach.reason == "trading halted: fat finger on desk 3"
    assert read_store(run_cli.data, lambda s: active_halts(s))[0]["cancel_open"] is True
    result = run_cli("resume")
    assert result.exit_code == 0 and result.output == "trading resumed for all accounts\n"
    assert read_store(run_cli.data, check) is None
    assert run_cli("resume").output == "no halt was active for all accounts\n"


def test_given_an_account_halt_then_resume_of_the_global_says_what_is_still_halted(run_cli):
    assert run_cli("halt", "--reason", "margin", "--account", "acc_1").output == \
        "trading halted for account acc_1: margin\n"
    assert run_cli("halt", "--reason", "all", "--account", "acc_9").output == \
        "error: no account 'acc_9'\n"
    run_cli("halt", "--reason", "everything")
    assert run_cli("resume").output == "trading resumed for all accounts (still halted: acc_1)\n"
    assert run_cli("resume", "--account", "acc_1").output == \
        "trading resumed for account acc_1\n"
    assert run_cli("halt", "--reason", "  ").exit_code == 2


def test_given_accounts_update_then_limits_are_stored_as_top_level_fields(run_cli):
    result = run_cli("accounts", "update", "acc_1", "--max-order-quantity", "100",
                     "--max-order-notional", "10000", "--max-position-notional", "25000",
                     "--max-orders-per-minute", "3", "--symbols", "spy,qqq", "--name", "Desk")
    assert result.exit_code == 0, result.output
    assert result.output == ("account acc_1: max_order_quantity 100, max_order_notional "
                             "10000.00, max_position_notional 25000.00, max_orders_per_minute "
                             "3, symbols SPY,QQQ\n")
    account = read_store(run_cli.data, lambda s: s.get_account("acc_1"))
    assert (account["max_order_quantity"], account["max_orders_per_minute"]) == (100, 3)
    assert account["display_name"] == "Desk" and account["broker"] == "MOCK"
    result = run_cli("accounts", "update", "acc_1", "--clear", "max_order_notional",
                     "--symbols", "", "--json")
    shown = json.loads(result.output)
    assert "max_order_notional" not in shown and shown["allowed_symbols"] == []
    assert shown["max_order_quantity"] == 100


@pytest.mark.parametrize(("args", "message"), [
    (("--max-order-quantity", "1.5"), "max_order_quantity must be a positive whole number"),
    (("--max-order-notional", "0"), "max_order_notional must be a positive number, got 0.0"),
    (("--max-orders-per-minute", "3", "--clear", "max_orders_per_minute"), "not both"),
    ((), "nothing to update"),
])
def test_given_bad_update_options_then_usage_error_and_nothing_written(run_cli, args, message):
    result = run_cli("accounts", "update", "acc_1", *args)
    assert result.exit_code == 2 and message in result.output
    account = read_store(run_cli.data, lambda s: s.get_account("acc_1"))
    assert not any(name.startswith("max_") for name in account)


def test_given_an_unknown_account_when_updated_then_error_and_not_created(run_cli):
    result = run_cli("accounts", "update", "acc_9", "--max-order-quantity", "5")
    assert result.exit_code == 2 and result.output == "error: no account 'acc_9'\n"
    assert read_store(run_cli.data, lambda s: s.get_account("acc_9")) is None


def test_given_add_limit_options_then_a_command_receives_validated_limits():
    @click.command()
    @cli_accounts.add_limit_options
    def add(**limits):
        click.echo(json.dumps(cli_accounts.limits_from_options(limits), sort_keys=True))

    result = CliRunner().invoke(add, ["--max-order-quantity", "100", "--max-order-notional", "5"])
    assert json.loads(result.output) == {"max_order_notional": 5.0, "max_order_quantity": 100}


# -- working orders count toward max_position_notional (issue 14) ---------------------------


def working(db, n: int, *, side="BUY", quantity=100, filled=0.0, price=230.0, status="SUBMITTED",
            account_id="acc_1", symbol="SPY") -> None:
    db.records.insert_one({
        "_id": f"exec_w{n}", "signal_id": f"w{n}", "account_id": account_id, "symbol": symbol,
        "side": side, "quantity": quantity, "filled_quantity": filled, "order_type": "LIMIT",
        "limit_price": price, "status": status, "received_at": NOW})


def test_given_a_resting_bid_of_23000_when_a_second_arrives_under_30000_then_it_is_refused(
        db, gate):
    """Given one resting bid of 23,000 (written by any replica: it is read from the store), when
    a second bid of 23,000 arrives against a 30,000 limit, then it is refused naming both."""
    account = {**ACCOUNT, "max_position_notional": 30_000}
    bid = signal(order_type="LIMIT", limit_price=230.0, reference_price=231.0)
    assert gate.check(bid, account) is None
    working(db, 1)
    breach = gate.check(bid, account)
    assert breach.control == "max_position_notional"
    assert breach.reason == ("position notional 46000.00 would exceed max_position_notional "
                             "30000.00 (position 0 + working orders 100 + this order 100)")


def test_given_working_orders_then_only_their_unfilled_part_on_this_side_counts(db, gate):
    """Given a partly filled bid (60 of 100 left), a resting offer, other symbols and accounts
    and a filled order, when checked, then only the 40 still working on the BUY side count."""
    working(db, 1, filled=60)
    working(db, 2, side="SELL", quantity=500)
    working(db, 3, symbol="QQQ", quantity=900)
    working(db, 4, account_id="acc_2", quantity=900)
    working(db, 5, quantity=900, filled=900, status="FILLED")
    working(db, 6, quantity=900, status="CANCELLED")
    account = {**ACCOUNT, "max_position_notional": 32_200}  # (40 + 100) x 230
    bid = signal(order_type="LIMIT", limit_price=230.0, reference_price=231.0)
    assert gate.check(bid, account) is None
    assert gate.check(signal(order_type="LIMIT", limit_price=230.0, reference_price=231.0,
                             quantity=101), account).control == "max_position_notional"


def test_given_resting_offers_when_a_sell_reduces_a_long_then_it_passes(db, gate):
    """Given long 100 and no resting offers, a sell of 100 reduces the position and passes;
    given resting offers of 300 already, a further sell is checked as adding to a short."""
    db.positions.insert_one({"_id": "p1", "account_id": "acc_1", "strategy_name": "A",
                             "symbol": "SPY", "side": "LONG", "quantity": 100,
                             "avg_entry_price": 100.0, "status": "OPEN"})
    account = {**ACCOUNT, "max_position_notional": 25_000}
    assert gate.check(signal(side="SELL"), account) is None
    working(db, 1, side="SELL", quantity=300, price=100.0)
    breach = gate.check(signal(side="SELL"), account)
    assert breach.reason.startswith("position notional 30000.00 would exceed")


def test_given_the_store_down_when_reading_working_orders_then_the_message_is_nacked(db):
    """Given positions readable but the working-orders read failing, then StoreUnavailable
    (the processor nacks): never a check that silently skipped what it could not read."""
    gate = RiskGate(db, lambda: NOW, halt_cache_seconds=0,
                    working_orders=down_store()[0].working_orders)
    with pytest.raises(StoreUnavailable):
        gate.check(signal(), {**ACCOUNT, "max_position_notional": 30_000})
