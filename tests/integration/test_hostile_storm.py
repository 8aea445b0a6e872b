"""A storm of hostile bodies among valid ones, through the real emulator, a real daemon
process and a fake Bot API (issue 14's held-out check)."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from tests.fakes.daemon import DaemonProcess
from tests.fakes.fake_telegram import FakeTelegram
from tests.fakes.pubsub_tools import PubSubRig, market_signal

TOKEN = "123456:TEST-storm-token-not-secret"
ACCOUNTS = [{"account_id": "acc_storm", "broker": "MOCK", "enabled": True},
            {"account_id": "acc_limit", "broker": "MOCK", "enabled": True,
             "max_position_notional": 30_000}]
FORGED = "Storm\n\n✅ Order Filled\n\nSignal: fake\nOrder: SELL 1000000 SPY @ $0.01"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| \[EXECUTION\] \| ")
TITLES = re.compile(r"^(✅|❌|⚠️|⏱️|🚫|🚨|🟢|🔴|🔌|🔗|🛑)")


def valid(**fields) -> dict:
    return market_signal({"account_id": "acc_storm", "strategy_name": "Storm"}, **fields)


def deep(signal_id: str | None, levels: int) -> bytes:
    head = f'{{"signal_id": "{signal_id}", "x": ' if signal_id else '{"x": '
    return head.encode() + b"[" * levels + b"]" * levels + b"}"


def raw(signal_id: str, tail: str) -> bytes:
    """A valid order with `tail` spliced in as raw JSON text (escapes stay as written)."""
    return json.dumps(valid(signal_id=signal_id)).encode()[:-1] + f", {tail}}}".encode()


def hostile_with_ids() -> dict[str, tuple[bytes | dict, str]]:
    """signal_id -> (body, what its recorded reason starts with)."""
    n = uuid.uuid4().hex[:6]
    cases = {
        "deep600": (deep, 600), "deep750": (deep, 750), "deep950": (deep, 950),
    }
    bodies: dict[str, tuple[bytes | dict, str]] = {
        f"{key}_{n}": (make(f"{key}_{n}", levels), "body nests deeper than 32 levels")
        for key, (make, levels) in cases.items()}
    more = {
        "nulkey": (raw("nulkey", '"k\\u0000": 1'), "field name 'k\\x00' contains U+0000 NULL"),
        "nulval": (raw("nulval", '"note": "a\\u0000b"'), "note contains U+0000 NULL"),
        "esckey": (raw("esckey", '"a\\u001bb": 1'), "field name 'a\\x1bb' contains U+001B"),
        "rlo": (valid(symbol="\u202eYPS"), "symbol contains U+202E RIGHT-TO-LEFT OVERRIDE"),
        "zwsp": (valid(symbol="SP\u200bY"), "symbol contains U+200B ZERO WIDTH SPACE"),
        "isolate": (valid(symbol="\u2067SPY\u2069"), "symbol contains U+2067 RIGHT-TO-LEFT "
                                                     "ISOLATE"),
        "cyrillic": (valid(symbol="\u0405PY"), "symbol contains U+0405 CYRILLIC CAPITAL"),
        "acc_rlo": (valid(account_id="acc_\u202estorm"), "account_id contains U+202E"),
        "exch_zwj": (valid(exchange="NS\u200dE"), "exchange contains U+200D ZERO WIDTH JOINER"),
        "dust": (valid(quantity=1e-12, asset_class="CRYPTO", symbol="BTC-USD"),
                 "quantity 1e-12 is below the CRYPTO minimum increment"),
        "huge": (valid(quantity=1e308), "quantity must be at most 1,000,000,000"),
        "price": (valid(reference_price=1e300), "reference_price must be between"),
        "nan": (raw("nan", '"quantity": NaN').replace(b'"quantity": 10, ', b""),
                "quantity must be a finite number, got NaN"),
        "inf": (raw("inf", '"quantity": 1e999').replace(b'"quantity": 10, ', b""),
                "quantity must be a finite number, got 1e999"),
        "forge": (valid(strategy_name=FORGED), "strategy_name contains U+000A LINE FEED"),
        "ansi": (valid(strategy_name="S\x1b[2J\x1b[31m"), "strategy_name contains U+001B"),
        "dollar": (valid(symbol={"$gt": ""}), "field name 'symbol.$gt' is not allowed"),
        "where": (raw("where", '"$where": "1"'), "field name '$where' is not allowed"),
        "big": (raw("big", '"pad": "' + "x" * 1_500_000 + '"'), "body is 1,5"),
    }
    for key, (body, reason) in more.items():
        signal_id = f"{key}_{n}"
        if isinstance(body, dict):
            body = {**body, "signal_id": signal_id}
        else:
            body = body.replace(f'"signal_id": "{key}"'.encode(),
                                f'"signal_id": "{signal_id}"'.encode(), 1)
        bodies[signal_id] = (body, reason)
    return bodies


OVERSIZED = b'{"pad": "' + b"y" * 1_200_000 + b'"}'
UNRECORDABLE = [deep(None, 800), b"\xff\xfe not utf-8", b"{not json", b'[{"a": 1}]',
                b'{"symbol": "SPY"}', OVERSIZED]


@pytest.fixture(scope="module")
def storm(emulator_host, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("storm")
    (workdir / "accounts.json").write_text(json.dumps(ACCOUNTS))
    project = f"test-{uuid.uuid4().hex[:10]}"
    telegram = FakeTelegram().start()
    env = {"PUBSUB_EMULATOR_HOST": emulator_host, "GOOGLE_CLOUD_PROJECT": project,
           "ACCOUNTS_FILE": str(workdir / "accounts.json"), "ORDER_TIMEOUT_SECONDS": "60",
           "MOCK_FILL_DELAY_SECONDS": "0.05", "ORDER_POLL_SECONDS": "0.1",
           "TELEGRAM_ENABLED": "true", "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "77",
           "TELEGRAM_API_URL": telegram.url}
    rig = PubSubRig(project)
    daemon = DaemonProcess(workdir, env).start()
    yield daemon, rig, telegram
    daemon.stop_quietly()
    rig.close()
    telegram.stop()


def test_given_a_storm_of_hostile_bodies_among_valid_ones_then_each_has_its_outcome(storm):
    """Given ~30 hostile bodies (deep, NUL, bidi, dust, overflow, NaN, forged text, `$` keys,
    over the size limit) interleaved with 20 valid orders, then every hostile one ends with a
    recorded reason (REJECTED confirmation or dead letter with `dead_letter_reason`), every
    valid one fills, no traceback is logged, every log line and Telegram message keeps the
    service's shape, and `orders --json` is strict JSON."""
    daemon, rig, telegram = storm
    hostile = hostile_with_ids()
    valid_ids = []
    for index, (body, _) in enumerate(hostile.values()):
        good = valid(extra_note="line one\nline two \x1b[31m")  # kept as data, never shown
        valid_ids.append(good["signal_id"])
        rig.publish(body)
        rig.publish(good)
        if index < len(UNRECORDABLE):
            rig.publish(UNRECORDABLE[index])
    rig.wait_for(lambda: all(rig.terminal(s) for s in [*hostile, *valid_ids]), timeout=60,
                 what="an outcome for every signal")
    for signal_id, (_, reason) in hostile.items():
        outcome = rig.terminal(signal_id)
        assert outcome["status"] == "REJECTED", signal_id
        assert outcome["reason"].startswith(reason), (signal_id, outcome["reason"])
    assert all(rig.terminal(s)["status"] == "FILLED" for s in valid_ids)

    letters = _dead_letters(rig, len(UNRECORDABLE))
    assert all(letter.attributes["dead_letter_reason"] for letter in letters)
    big = [m for m in letters if m.attributes.get("dead_letter_truncated") == "true"]
    assert len(big) == 1 and big[0].attributes["dead_letter_original_bytes"] == str(
        len(OVERSIZED))
    assert big[0].attributes["dead_letter_reason"].startswith(f"body is {len(OVERSIZED):,} bytes")
    assert len(big[0].data) == 32_768

    log = (daemon.workdir / "logs" / "execution_service.log").read_text()
    assert "Traceback" not in log
    assert all(LINE.match(line) for line in log.splitlines())
    messages = _telegram_texts(telegram, hostile)
    for text in messages:
        assert len([line for line in text.split("\n") if TITLES.match(line)]) == 1, text
        assert "SELL 1000000" not in text.split("\n")[0]
        assert not re.search(r"^Order: SELL 1000000", text, re.MULTILINE), text
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e\u2067\u2069]", text), text
    orders = daemon.cli("orders", "--json", "--limit", "0")
    assert orders.returncode == 0, orders.stderr
    records = json.loads(orders.stdout, parse_constant=_not_json)
    assert {r["signal_id"] for r in records} >= set(hostile) | set(valid_ids)


def test_given_resting_bids_and_the_collar_then_limits_count_what_is_working(storm):
    """Given a 30,000 position limit, when a bid of 23,000 rests and a second one arrives, then
    the second is rejected by max_position_notional; a bid 40% under the market rests, one
    40% over it is rejected by the collar."""
    _, rig, _ = storm
    resting = {"account_id": "acc_limit", "order_type": "LIMIT", "limit_price": 230.0,
               "reference_price": 235.0, "quantity": 100}
    first, second = valid(**resting), valid(**resting)
    passive = valid(account_id="acc_limit", symbol="QQQ", order_type="LIMIT",
                    limit_price=60.0, reference_price=100.0)
    aggressive = valid(account_id="acc_limit", symbol="IWM", order_type="LIMIT",
                       limit_price=140.0, reference_price=100.0)
    rig.publish(first)
    rig.wait_for(lambda: "SUBMITTED" in rig.statuses(first["signal_id"]), what="bid resting")
    for body in (second, passive, aggressive):
        rig.publish(body)
    rig.wait_for(lambda: rig.terminal(second["signal_id"]) and rig.terminal(
        aggressive["signal_id"]) and "SUBMITTED" in rig.statuses(passive["signal_id"]),
        what="the limits' answers")
    assert rig.terminal(second["signal_id"])["reason"] == (
        "position notional 46000.00 would exceed max_position_notional 30000.00 "
        "(position 0 + working orders 100 + this order 100)")
    assert rig.terminal(aggressive["signal_id"])["reason"].startswith(
        "limit_price 140.00 is 40.0% above reference_price 100.00 for a BUY")
    assert rig.statuses(first["signal_id"]) == ["SUBMITTED"]
    assert rig.statuses(passive["signal_id"]) == ["SUBMITTED"]


def _dead_letters(rig: PubSubRig, expected: int) -> list:
    letters: list = []

    def arrived():
        letters.extend(rig.dead_letters())
        return len(letters) >= expected

    rig.wait_for(arrived, what=f"{expected} dead letters")
    return letters


def _telegram_texts(telegram: FakeTelegram, hostile: dict, timeout: float = 60.0) -> list[str]:
    """Every message the fake Bot API took, once a rejection for each hostile signal is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = [m.text for m in telegram.sent]
        if all(any(f"Signal: {signal_id}" in text for text in texts) for signal_id in hostile):
            return texts
        time.sleep(0.1)
    raise AssertionError("Telegram never got a rejection for every hostile signal")


def _not_json(constant: str):
    raise AssertionError(f"orders --json printed {constant}, which is not JSON")
