"""Moves positions by fills (SPEC §5), before the record that shows the fill is written.

A fill moves a position exactly once, whenever a crash strikes. Its key (`signal_id:exec_id`)
is entered in the fill ledger (`position_fills`) first, then pushed onto the position in the
same compare-and-set that moves it, then the ledger entry is marked applied. A fill replayed
after a crash (the record never showed it, the broker reports it again) finds its ledger
entry: applied, it is done; not yet, the position documents (open or closed, each keeps its
last FILL_KEYS_KEPT keys) say whether the move happened. The ledger outlives every position
document, so closes and flips lose nothing.

The open position this process last wrote is kept in memory and used for the next
compare-and-set without reading it first; when another process moved it meanwhile, the
version no longer matches, and it is read again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from datetime import datetime

from execution_service.domain.positions import (
    FILL_KEYS_KEPT,
    Position,
    PositionChange,
    apply_fill,
)
from execution_service.service.ports import PositionStore

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 20
POSITIONS_CACHED = 256  # each holds up to FILL_KEYS_KEPT keys: ~20 KB


def position_key(record: dict) -> dict:
    return {"account_id": record["account_id"], "strategy_name": record["strategy_name"],
            "symbol": record["symbol"]}


class PositionBook:
    def __init__(self, store: PositionStore) -> None:
        self._store = store
        self._last_written: OrderedDict[tuple, dict] = OrderedDict()

    def apply(self, record: dict, fill) -> None:
        """Move the record's position by one fill (anything with exec_id, quantity, price,
        at), once."""
        key = position_key(record)
        fill_key = f"{record['signal_id']}:{fill.exec_id}"
        earlier = self._store.claim_fill(_ledger_entry(key, fill_key, record, fill))
        if earlier is not None:
            if earlier.get("applied"):
                return
            self._forget(key)  # a crash or failure struck mid-move: the store knows best
            if self._finish_if_moved(key, fill_key):
                return
        for _ in range(MAX_ATTEMPTS):
            if self._try_apply(key, fill_key, record, fill):
                self._store.mark_fill_applied(fill_key)
                return
            self._forget(key)
            if self._finish_if_moved(key, fill_key):
                return
        raise RuntimeError(f"position {key} kept changing under us; fill {fill_key} not applied")

    def _finish_if_moved(self, key: dict, fill_key: str) -> bool:
        applied = self._store.position_with_fill(key, fill_key)
        if applied is None:
            return False
        self._open_carry(key, applied, fill_key)
        self._store.mark_fill_applied(fill_key)
        return True

    def _try_apply(self, key: dict, fill_key: str, record: dict, fill) -> bool:
        current = self._last_written.get(_cache_key(key)) or self._store.open_position(key)
        change = apply_fill(_position_of(current), record["side"], fill.quantity, fill.price)
        order_id = record.get("order_id")
        if current is None:
            return self._open(key, change.current, fill.at, order_id, fill_key)
        if change.closed is None:
            fields = _fields(change.current, order_id, current)
            if not self._store.update_position(current, fields, fill_key):
                return False
            self._remember(key, {**current, **fields, "version": current["version"] + 1,
                                 "fill_keys": [*current["fill_keys"], fill_key][-FILL_KEYS_KEPT:]})
            return True
        self._forget(key)
        return self._close_and_flip(key, current, change, fill.at, order_id, fill_key)

    def _remember(self, key: dict, doc: dict) -> None:
        cache_key = _cache_key(key)
        self._last_written[cache_key] = doc
        self._last_written.move_to_end(cache_key)
        if len(self._last_written) > POSITIONS_CACHED:
            self._last_written.popitem(last=False)

    def _forget(self, key: dict) -> None:
        self._last_written.pop(_cache_key(key), None)

    def _open(self, key: dict, position: Position, at: datetime, order_id: str | None,
              fill_key: str) -> bool:
        if self._store.position_with_fill(key, fill_key) is not None:
            return False  # the fill that opened it was applied before: let apply() see it
        ordinal = self._store.count_positions(key) + 1
        return self._store.insert_position(_new_doc(key, ordinal, position, at, order_id,
                                                    fill_key))

    def _close_and_flip(self, key: dict, current: dict, change: PositionChange, at: datetime,
                        order_id: str | None, fill_key: str) -> bool:
        fields = {**_fields(change.closed, order_id, current), "status": "CLOSED",
                  "closed_at": at, "quantity": 0.0, "carry": None}
        if change.current is not None:  # crossing zero: what the opposite side opens with
            fields["carry"] = {"side": change.current.side, "quantity": change.current.quantity,
                               "avg_entry_price": change.current.avg_entry_price,
                               "order_id": order_id}
        if not self._store.update_position(current, fields, fill_key):
            return False
        self._open_carry(key, {**current, **fields}, fill_key)
        logger.info("Position closed: %s %s realized PnL %.2f", key["symbol"], key["account_id"],
                    change.closed.realized_pnl)
        return True

    def _open_carry(self, key: dict, closed: dict, fill_key: str) -> None:
        """Open the opposite position a flip left behind, once (idempotent by origin)."""
        carry = closed.get("carry")
        if not carry or self._store.position_opened_from(closed["_id"]) is not None:
            return
        position = Position(carry["side"], carry["quantity"], carry["avg_entry_price"])
        doc = _new_doc(key, self._store.count_positions(key) + 1, position,
                       closed["closed_at"], carry["order_id"], fill_key)
        doc["opened_from"] = closed["_id"]
        self._store.insert_position(doc)


def _ledger_entry(key: dict, fill_key: str, record: dict, fill) -> dict:
    return {"_id": fill_key, **key, "signal_id": record["signal_id"], "exec_id": fill.exec_id,
            "side": record["side"], "quantity": fill.quantity, "price": fill.price,
            "at": fill.at}


def _cache_key(key: dict) -> tuple:
    return key["account_id"], key["strategy_name"], key["symbol"]


def _position_of(doc: dict | None) -> Position | None:
    if doc is None:
        return None
    return Position(doc["side"], doc["quantity"], doc["avg_entry_price"], doc["realized_pnl"])


ORDER_IDS_KEPT = 50  # the latest orders that moved the position (every fill rewrites it)


def _fields(position: Position, order_id: str | None, current: dict) -> dict:
    order_ids = list(current.get("order_ids", []))
    if order_id and order_id not in order_ids:
        order_ids = [*order_ids, order_id][-ORDER_IDS_KEPT:]
    return {"side": position.side, "quantity": position.quantity,
            "avg_entry_price": position.avg_entry_price, "realized_pnl": position.realized_pnl,
            "order_ids": order_ids}


def _new_doc(key: dict, ordinal: int, position: Position, at: datetime, order_id: str | None,
             fill_key: str) -> dict:
    digest = hashlib.sha256("|".join(key.values()).encode()).hexdigest()[:12]
    return {"_id": f"pos_{digest}_{ordinal}", **key, "side": position.side,
            "quantity": position.quantity, "avg_entry_price": position.avg_entry_price,
            "opened_at": at, "status": "OPEN", "order_ids": [order_id] if order_id else [],
            "realized_pnl": position.realized_pnl, "closed_at": None, "version": 0,
            "fill_keys": [fill_key]}
