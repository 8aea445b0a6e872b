"""Moves positions by fills (SPEC §5), before the record that shows the fill is written.

A fill moves a position exactly once, whenever a crash strikes. Its key (`signal_id:exec_id`)
is entered in the fill ledger (`position_fills`) first, then put on the position in the same
compare-and-set that moves it. A fill replayed after a crash (the record never showed it, the
broker reports it again) finds its ledger entry: `applied`, it is done; not yet, the position
documents (open or closed) say whether the move happened, and it is marked applied. The ledger
outlives every position document, so closes and flips lose nothing.

What a position costs to write does not grow with its history: a document holds only the
keys whose ledger entries are not marked applied, at most UNMARKED_FILL_KEYS. When the open
document holds that many, the writer marks them all applied in one write (each is on the
position, so its move happened) and drops them in its compare-and-set (on the embedded
store's batches, in the first write after the mark's commit); nothing marks a fill one by one
on the ordinary path. A key leaves a document only after its entry says applied,
so "entry not applied and key on no document" still means "not moved" provided the ledger is
read after the position: every move made from a position read from the store (not from this
process's own last write) first asks the ledger again. Closed documents keep their last keys.

Fills of one position queue in order: every store call runs on the one store thread (or
inline, on the embedded store), so this process never races itself. What this process last
wrote for a position key is kept in memory (`_Known`): the open document, or that the key is
flat, and how many position documents the key has. The next fill moves the position from
that without reading it first, so an add, a close and an open each cost one write (a flip
two: the close and the opposite position's insert), besides the ledger's entry. When another
process moved the position meanwhile, the version or the next document's _id (the count + 1)
no longer matches, the write is refused, and the store is read again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from execution_service.domain.positions import (
    ORDER_IDS_KEPT,
    UNMARKED_FILL_KEYS,
    Position,
    PositionChange,
    apply_fill,
)
from execution_service.service.ports import PositionStore

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 20
POSITIONS_CACHED = 256  # each a position document (bounded lists): ~2 KB


def position_key(record: dict) -> dict:
    return {"account_id": record["account_id"], "strategy_name": record["strategy_name"],
            "symbol": record["symbol"]}


@dataclass(frozen=True)
class _Known:
    """A position key as this process last wrote it."""

    open: dict | None  # the open document, None when flat
    count: int | None  # position documents of the key (open and closed), when known


class PositionBook:
    def __init__(self, store: PositionStore, unmarked_max: int = UNMARKED_FILL_KEYS) -> None:
        self._store = store
        self._unmarked_max = unmarked_max
        self._last_written: OrderedDict[tuple, _Known] = OrderedDict()
        # per position key, fill keys marked applied: committed (a write may drop them), and
        # written but not yet committed (the embedded store commits a batch of calls at once)
        self._marked: dict[tuple, frozenset[str]] = {}
        self._marking: dict[tuple, frozenset[str]] = {}

    def apply(self, record: dict, fill) -> None:
        """Move the record's position by one fill (anything with exec_id, quantity, price,
        at), once."""
        key = position_key(record)
        try:
            self._apply(key, record, fill)
        except BaseException:
            self._forget(key)  # a write may have landed or not: the store knows
            raise

    def _apply(self, key: dict, record: dict, fill) -> None:
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
        self._store.mark_fills_applied([fill_key], applied["_id"], key)
        return True

    def _try_apply(self, key: dict, fill_key: str, record: dict, fill) -> bool:
        """One attempt: True when the fill's move is done (by this write, or by another
        process, the ledger says), False when the write was refused. The fill is known not to
        have moved the position when the attempt began (a new ledger entry, or
        _finish_if_moved found no move)."""
        known = self._last_written.get(_cache_key(key))
        if known is None:
            current, count = self._store.open_position(key), None
            # read after the position: a move this read cannot show (its key marked and
            # dropped meanwhile) is one the ledger shows
            if self._store.fill_applied(fill_key):
                return True
        else:
            current, count = known.open, known.count
        change = apply_fill(_position_of(current), record["side"], fill.quantity, fill.price)
        order_id = record.get("order_id")
        if current is None:
            return self._open(key, change.current, fill.at, order_id, fill_key, count)
        kept = self._kept_keys(key, current)
        if change.closed is None:
            fields = _fields(change.current)
            if not self._store.update_position(current, fields, fill_key, kept, order_id):
                return False
            self._dropped(key)
            self._remember(key, _Known(_after(current, fields, kept, fill_key, order_id),
                                       count))
            return True
        return self._close_and_flip(key, current, count, change, fill.at, order_id, fill_key,
                                    kept)

    def _kept_keys(self, key: dict, current: dict) -> list[str]:
        """The fill keys the open document keeps on its next write: all but those whose
        marks are committed. Once `unmarked_max` are neither, they are marked applied (being
        on the position, their moves happened): dropped at once when that write is committed
        at once, else by the first write after its commit (never in the same batch: a failed
        commit of the ledger must not leave the drop standing)."""
        cache_key = _cache_key(key)
        marked = self._marked.get(cache_key, frozenset())
        kept = [k for k in current["fill_keys"] if k not in marked]
        marking = self._marking.get(cache_key, frozenset())
        if len(kept) >= 3 * self._unmarked_max:
            marking = frozenset()  # a commit failed: mark them again
        unmarked = [k for k in kept if k not in marking]
        if len(unmarked) < self._unmarked_max:
            return kept
        self._store.mark_fills_applied(unmarked, current["_id"], key)
        self._marking[cache_key] = marking.union(unmarked)
        self._store.when_written(lambda: self._committed(cache_key, unmarked))
        marked = self._marked.get(cache_key, frozenset())
        return [k for k in kept if k not in marked]

    def _committed(self, cache_key: tuple, keys: list[str]) -> None:
        self._marked[cache_key] = self._marked.get(cache_key, frozenset()).union(keys)
        marking = self._marking.pop(cache_key, frozenset()).difference(keys)
        if marking:
            self._marking[cache_key] = marking

    def _dropped(self, key: dict) -> None:
        """The open document was written without the committed marks' keys."""
        self._marked.pop(_cache_key(key), None)

    def _remember(self, key: dict, known: _Known) -> None:
        cache_key = _cache_key(key)
        self._last_written[cache_key] = known
        self._last_written.move_to_end(cache_key)
        if len(self._last_written) > POSITIONS_CACHED:
            self._last_written.popitem(last=False)

    def _forget(self, key: dict) -> None:
        self._last_written.pop(_cache_key(key), None)

    def _open(self, key: dict, position: Position, at: datetime, order_id: str | None,
              fill_key: str, count: int | None) -> bool:
        """Insert the key's next position document; refused (False) when the _id is taken:
        another process opened one meanwhile."""
        ordinal = (self._store.count_positions(key) if count is None else count) + 1
        doc = _new_doc(key, ordinal, position, at, order_id, fill_key)
        if not self._store.insert_position(doc):
            return False
        self._remember(key, _Known(doc, ordinal))
        return True

    def _close_and_flip(self, key: dict, current: dict, count: int | None,
                        change: PositionChange, at: datetime, order_id: str | None,
                        fill_key: str, kept: list[str]) -> bool:
        fields = {**_fields(change.closed), "status": "CLOSED",
                  "closed_at": at, "quantity": 0.0, "carry": None}
        if change.current is not None:  # crossing zero: what the opposite side opens with
            fields["carry"] = {"side": change.current.side, "quantity": change.current.quantity,
                               "avg_entry_price": change.current.avg_entry_price,
                               "order_id": order_id}
        if not self._store.update_position(current, fields, fill_key, kept, order_id):
            return False
        self._dropped(key)
        logger.info("Position closed: %s %s realized PnL %.2f", key["symbol"], key["account_id"],
                    change.closed.realized_pnl)
        if change.current is None:
            if count is None:  # flat is only safe to remember with the next _id to insert
                self._forget(key)
            else:
                self._remember(key, _Known(None, count))
            return True
        # this compare-and-set closed it, so nothing was opened from it yet: no lookup
        self._forget(key)
        ordinal = (self._store.count_positions(key) if count is None else count) + 1
        carry = {**_new_doc(key, ordinal, change.current, at, order_id, fill_key),
                 "opened_from": current["_id"]}
        if self._store.insert_position(carry):
            self._remember(key, _Known(carry, ordinal))
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


def _after(doc: dict, fields: dict, kept: list[str], fill_key: str,
           order_id: str | None) -> dict:
    """The document as update_position leaves it."""
    order_ids = doc.get("order_ids", [])
    if order_id and order_id not in order_ids:
        order_ids = [*order_ids, order_id][-ORDER_IDS_KEPT:]
    return {**doc, **fields, "version": doc["version"] + 1, "fill_keys": [*kept, fill_key],
            "order_ids": order_ids}


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


def _fields(position: Position) -> dict:
    return {"side": position.side, "quantity": position.quantity,
            "avg_entry_price": position.avg_entry_price, "realized_pnl": position.realized_pnl}


def _new_doc(key: dict, ordinal: int, position: Position, at: datetime, order_id: str | None,
             fill_key: str) -> dict:
    digest = hashlib.sha256("|".join(key.values()).encode()).hexdigest()[:12]
    return {"_id": f"pos_{digest}_{ordinal}", **key, "side": position.side,
            "quantity": position.quantity, "avg_entry_price": position.avg_entry_price,
            "opened_at": at, "status": "OPEN", "order_ids": [order_id] if order_id else [],
            "realized_pnl": position.realized_pnl, "closed_at": None, "version": 0,
            "fill_keys": [fill_key]}
