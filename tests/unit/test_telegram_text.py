"""compose_message: the Telegram texts of SPEC §7 and the ones in the same spirit."""

from __future__ import annotations

import pytest

from execution_service.domain.notices import (
    AlertKind,
    CancelCause,
    NoticeKind,
    OrderNotice,
    ServiceAlert,
)
from execution_service.domain.telegram_text import (
    MAX_MESSAGE_LENGTH,
    TRUNCATION_MARK,
    compose_message,
    format_duration,
    format_money,
    format_quantity,
    truncate,
)

SIGNAL = "sig_1732450800_5678"
STRATEGY = "SPX 1-Day Options"


def notice(kind: NoticeKind, **fields) -> OrderNotice:
    values = {
        "signal_id": SIGNAL,
        "strategy_name": STRATEGY,
        "account_id": "ibkr-main",
        "symbol": "SPY",
        "side": "BUY",
        "quantity": 100.0,
    }
    return OrderNotice(kind=kind, **{**values, **fields})


def test_given_a_full_fill_then_the_text_is_exactly_the_spec_example():
    event = notice(
        NoticeKind.FILLED,
        filled_quantity=100.0,
        avg_fill_price=235.15,
        commission=1.0,
        seconds_to_fill=2.0,
    )

    assert compose_message(event) == (
        "✅ Order Filled\n"
        "\n"
        "Signal: sig_1732450800_5678\n"
        "Strategy: SPX 1-Day Options\n"
        "Order: BUY 100 SPY @ $235.15\n"
        "Total: $23,515.00\n"
        "Commission: $1.00\n"
        "Time: 2 seconds"
    )


def test_given_a_rejection_with_an_account_name_then_the_text_is_exactly_the_spec_example():
    event = notice(
        NoticeKind.REJECTED, reason="Insufficient margin", account_name="IBKR Main Account"
    )

    assert compose_message(event) == (
        "❌ Order Rejected\n"
        "\n"
        "Signal: sig_1732450800_5678\n"
        "Strategy: SPX 1-Day Options\n"
        "Order: BUY 100 SPY\n"
        "Reason: Insufficient margin\n"
        "Account: IBKR Main Account"
    )


def test_given_a_partial_fill_then_the_text_is_exactly_the_spec_example():
    event = notice(
        NoticeKind.PARTIAL_FILL,
        filled_quantity=50.0,
        avg_fill_price=235.2,
        last_fill_quantity=50.0,
        last_fill_price=235.2,
    )

    assert compose_message(event) == (
        "⚠️ Partial Fill\n"
        "\n"
        "Signal: sig_1732450800_5678\n"
        "Order: BUY 100 SPY\n"
        "Filled: 50/100 @ $235.20\n"
        "Remaining: 50"
    )


def test_given_a_rejection_without_account_name_then_the_account_id_is_shown():
    text = compose_message(notice(NoticeKind.REJECTED, reason="Unknown symbol"))

    assert text.splitlines()[-1] == "Account: ibkr-main"


def test_given_a_rejection_without_reason_then_it_says_so():
    assert "Reason: not given" in compose_message(notice(NoticeKind.REJECTED))


def test_given_a_fill_without_price_commission_or_time_then_those_lines_are_left_out():
    text = compose_message(notice(NoticeKind.FILLED, filled_quantity=100.0))

    assert "Order: BUY 100 SPY" in text
    assert "Total" not in text and "Commission" not in text and "Time" not in text


@pytest.mark.parametrize(
    ("cause", "emoji", "line"),
    [
        (CancelCause.TIMEOUT, "⏱️", "Cause: Timeout"),
        (CancelCause.BROKER, "🚫", "Cause: Cancelled by broker"),
        (CancelCause.OPERATOR, "🚫", "Cause: Cancelled by operator"),
    ],
)
def test_given_a_cancel_then_the_cause_and_the_filled_part_are_shown(cause, emoji, line):
    event = notice(
        NoticeKind.CANCELLED,
        cancel_cause=cause,
        filled_quantity=50.0,
        avg_fill_price=235.2,
        reason="Not filled within 60 s",
    )

    assert compose_message(event) == (
        f"{emoji} Order Cancelled\n"
        "\n"
        "Signal: sig_1732450800_5678\n"
        "Strategy: SPX 1-Day Options\n"
        "Order: BUY 100 SPY\n"
        f"{line}\n"
        "Filled: 50/100 @ $235.20\n"
        "Reason: Not filled within 60 s\n"
        "Account: ibkr-main"
    )


def test_given_a_cancel_with_nothing_filled_then_it_shows_zero_without_a_price():
    text = compose_message(notice(NoticeKind.CANCELLED, cancel_cause=CancelCause.TIMEOUT))

    assert "Filled: 0/100\n" in text
    assert "Reason" not in text


def test_given_a_fill_after_cancel_then_the_late_fill_and_a_check_are_shown():
    event = notice(
        NoticeKind.LATE_FILL,
        filled_quantity=70.0,
        avg_fill_price=235.22,
        last_fill_quantity=20.0,
        last_fill_price=235.3,
        account_name="IBKR Main Account",
    )

    assert compose_message(event) == (
        "🚨 Fill After Cancel\n"
        "\n"
        "Signal: sig_1732450800_5678\n"
        "Strategy: SPX 1-Day Options\n"
        "Order: BUY 100 SPY\n"
        "Late fill: 20 @ $235.30\n"
        "Filled: 70/100 @ $235.22\n"
        "Account: IBKR Main Account\n"
        "Action: the order was cancelled but still filled; check the position"
    )


@pytest.mark.parametrize(
    ("kind", "title"),
    [
        (AlertKind.SERVICE_STARTED, "🟢 Execution Service Started"),
        (AlertKind.SERVICE_STOPPING, "🔴 Execution Service Stopping"),
        (AlertKind.BROKER_CONNECTION_LOST, "🔌 Broker Connection Lost"),
        (AlertKind.BROKER_CONNECTION_RESTORED, "🔗 Broker Connection Restored"),
        (AlertKind.OPERATOR, "🛑 Operator Action Needed"),
    ],
)
def test_given_a_service_alert_then_a_title_line_a_blank_line_and_its_text(kind, title):
    alert = ServiceAlert(kind=kind, text="Broker: IBKR\nError: connection refused", key="ibkr")

    assert compose_message(alert) == f"{title}\n\nBroker: IBKR\nError: connection refused"


def test_given_an_alert_without_text_then_only_the_title():
    assert compose_message(ServiceAlert(kind=AlertKind.SERVICE_STARTED, text="  ")) == (
        "🟢 Execution Service Started"
    )


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0, "$0.00"),
        (1, "$1.00"),
        (235.15, "$235.15"),
        (23515.000000000004, "$23,515.00"),
        (1234567.891, "$1,234,567.89"),
        (0.005, "$0.01"),
        (-12.5, "-$12.50"),
    ],
)
def test_money_has_a_dollar_sign_two_decimals_and_thousands_separators(amount, shown):
    assert format_money(amount) == shown


@pytest.mark.parametrize(
    ("quantity", "shown"),
    [
        (100.0, "100"),
        (100, "100"),
        (0.5, "0.5"),
        (0.1 + 0.2, "0.3"),
        (0.0, "0"),
        (1500.0, "1500"),
        (-0.0, "0"),
    ],
)
def test_quantities_drop_a_trailing_point_zero(quantity, shown):
    assert format_quantity(quantity) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (2.0, "2 seconds"),
        (1.0, "1 second"),
        (1.04, "1 second"),
        (0.43, "0.4 seconds"),
        (0.01, "under 0.1 seconds"),
        (2.35, "2.4 seconds"),
        (45.4, "45 seconds"),
        (200, "3 minutes 20 seconds"),
        (3600, "1 hour"),
        (3725, "1 hour 2 minutes"),
    ],
)
def test_durations_are_rounded_for_reading(seconds, shown):
    assert format_duration(seconds) == shown


def test_given_markdown_and_html_symbols_then_they_pass_through_as_plain_text():
    reason = "Bad *symbol* _name_ [SPY](x) <b>&amp; `tick`"
    text = compose_message(notice(NoticeKind.REJECTED, reason=reason, symbol="BRK_B*"))

    assert f"Reason: {reason}" in text
    assert "Order: BUY 100 BRK_B*" in text


def test_given_a_huge_reason_then_the_text_is_cut_to_telegrams_limit_and_marked():
    text = compose_message(notice(NoticeKind.REJECTED, reason="x" * 10_000))

    assert len(text) == MAX_MESSAGE_LENGTH
    assert text.endswith(TRUNCATION_MARK)
    assert text.startswith("❌ Order Rejected\n\nSignal: sig_1732450800_5678\n")


def test_given_astral_emoji_then_the_limit_counts_utf16_units():
    text = truncate("🚀" * 3000)

    assert len(text.encode("utf-16-le")) // 2 <= MAX_MESSAGE_LENGTH
    assert text.endswith(TRUNCATION_MARK)


def test_given_a_text_within_the_limit_then_it_is_unchanged():
    text = "a" * MAX_MESSAGE_LENGTH

    assert truncate(text) == text
