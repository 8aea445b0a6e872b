"""Cheaper equivalents of the internals of litemongo's vendored mongomock that profiles show
costing the most CPU per store call, in both engines that run it (`mongomock://` and the
embedded store). Installed by `open_store`; nothing else in the process is touched.

Each replacement returns what the library's own code returns, for every value the store can
hold: it takes a fast path only for the exact types whose handling it reproduces (dict,
list, and immutable BSON scalars) and hands anything else (dict or list subclasses such as
SON or OrderedDict, RawBSONDocument, tuples, Binary, Timestamp, Regex, datetimes of other
classes or with a tzinfo other than `timezone` / bson's `FixedOffset`, unknown types) to the
library's own function. The fast copies drop `copy.deepcopy`'s memo (shared sub-objects
copied once): a stored document has none to keep, since the engine builds every one afresh
(`patch_datetime_awareness_in_document` on the way in, `bson.decode` in the embedded store),
and BSON cannot hold a cycle.

What each one saves, per call, library's vs this (thread CPU, best of 9 x 2,000 on the shared
machine at load ~5, on a FILLED execution record of 122 objects from `core_ops.py`'s run):
- `copy.deepcopy` of a stored document, which `Collection._update` takes before every update
  (its rollback snapshot): 70-91 us vs 16-27 us (memo upkeep, `__reduce_ex__` per datetime).
- `_bson_encode`, a validation whose bytes are thrown away, run on every `$set` field (22 in
  a record's FILLED update) and every inserted document, built a new pymongo `CodecOptions`
  each time: 3.0-3.1 us vs 0.34-0.36 us for a str field (cached options; a one-field document
  whose value always encodes is not encoded), 3.8-4.1 us vs 2.1 us for a list of fills.
- `patch_datetime_awareness_in_document` (every filter, update and inserted document): 42-70
  us vs 24-39 us on the record's update, 55-56 us vs 31 us on the record.
- `make_datetime_timezone_aware_in_document` and `_copy_field` (every document read): 37-54
  us vs 29-33 us, 36-61 us vs 21-37 us.
- The walks and copies above keep a value of an IMMUTABLE type without a call each (113 of
  the record's 122 objects): patch 35.1 -> 26.3 us, make-aware 30.6 -> 21.1 us, deep copy
  17.0 -> 12.9 us, `_copy_field` 22.7 -> 12.9 us (thread CPU, min of 7 x 5,000, medians of
  3 alternating runs at load ~6).
- `CollectionIndexes.add` (the in-memory engine re-indexes every indexed field on every
  write): 4.3 us vs 2.6-2.8 us with four indexed fields, one changed.
- `Collection._ensure_uniques` (after every write to a collection with a unique index: the
  records and the signals, three writes per signal) read back and decoded every document
  the index's candidates named, the written one included: now it reads none when the
  candidates are at most the written document. Embedded: 4.2 of 62.3 SQL statements per
  signal (`core_ops.py`); thread CPU of a record's insert and two updates plus a signal's
  insert and update, min of 9 x 300, 3 runs each alternating, load ~3.4: 479-484 us vs
  404-422 us.
Over the daemon's own calls (`benchmarks/store_calls.py`), the store's CPU per signal went
from 1.16 to 0.76 ms in memory and from 2.21 to 1.88 ms embedded (README, issue 20).
Applied only to the litemongo version it was written and tested against: any other leaves
the library as it is (one DEBUG line).
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
import types
from collections.abc import Callable
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.tz_util import FixedOffset

logger = logging.getLogger(__name__)

WRITTEN_FOR = "0.2.0"  # litemongo's version: its vendored mongomock is what is replaced

# Values no operation mutates in place: a copy may be the value itself. (bool and Int64 are
# listed apart from int: the fast paths compare exact types.)
IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes, bson.ObjectId, bson.Int64,
                       bson.Decimal128})
_DATETIME = datetime.datetime
_IMMUTABLE_TZINFO = frozenset({datetime.timezone, FixedOffset})

_installed: dict[str, Any] = {}
_installing = threading.Lock()


def _immutable(value: Any) -> bool:
    kind = type(value)
    return kind in IMMUTABLE or (kind is _DATETIME and (
        value.tzinfo is None or type(value.tzinfo) in _IMMUTABLE_TZINFO))


def bson_deepcopy(value: Any, memo: dict | None = None) -> Any:
    """`copy.deepcopy` for BSON values."""
    kind = type(value)
    if kind is dict:
        return {key if type(key) is str else bson_deepcopy(key):
                item if type(item) in IMMUTABLE else bson_deepcopy(item)
                for key, item in value.items()}
    if kind is list:
        return [item if type(item) in IMMUTABLE else bson_deepcopy(item) for item in value]
    if kind in IMMUTABLE or kind is _DATETIME and (
            value.tzinfo is None or type(value.tzinfo) in _IMMUTABLE_TZINFO):
        return value
    return copy.deepcopy(value, memo)


def bson_copy(value: Any) -> Any:
    """`copy.copy` for BSON values."""
    return value if _immutable(value) else copy.copy(value)


def fast_copy_field(library: Callable) -> Callable:
    """mongomock's `_copy_field(obj, container)`: a copy of a value read out."""
    def copy_field(value: Any, container: type) -> Any:
        kind = type(value)
        if kind is dict and container is dict:
            return {key: item if type(item) in IMMUTABLE else copy_field(item, dict)
                    for key, item in value.items()}
        if kind is list:
            return [item if type(item) in IMMUTABLE else copy_field(item, container)
                    for item in value]
        if _immutable(value):
            return value
        return library(value, container)
    return copy_field


def bson_walk(leaf: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A function that rebuilds plain dicts and lists around `leaf` of every other value.
    `leaf` must return IMMUTABLE values as they are: they are kept without calling it (most of
    a document's values, a call each saved)."""
    def walk(value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            return {key: item if type(item) in IMMUTABLE else walk(item)
                    for key, item in value.items()}
        if kind is list:
            return [item if type(item) in IMMUTABLE else walk(item) for item in value]
        return leaf(value)
    return walk


def fast_patch_datetimes(library: Callable) -> Callable:
    """mongomock's `patch_datetime_awareness_in_document`: datetimes to naive UTC, in ms."""
    def patch(value: Any) -> Any:
        kind = type(value)
        if kind in IMMUTABLE:
            return value
        if kind is _DATETIME:  # the library's own arithmetic
            mongo_us = (value.microsecond // 1000) * 1000
            if value.tzinfo:
                offset = value.utcoffset()
                if offset:  # (UTC's, the usual, is zero: nothing to subtract)
                    value = value - offset
                return value.replace(tzinfo=None, microsecond=mongo_us)
            return value.replace(microsecond=mongo_us)
        return library(value)  # Timestamp, tuples, dict subclasses, ...
    return bson_walk(patch)


def fast_make_aware(library: Callable, utc: datetime.tzinfo) -> Callable:
    """mongomock's `make_datetime_timezone_aware_in_document`: stored naive UTC datetimes
    come back with `utc`."""
    def make_aware(value: Any) -> Any:
        kind = type(value)
        if kind is _DATETIME:
            return value.replace(tzinfo=utc)
        if kind in IMMUTABLE:
            return value
        return library(value)
    return bson_walk(make_aware)


def fast_index_add(doc_keys: Callable) -> Callable:
    """litemongo's `CollectionIndexes.add` (re-index a stored document) without removing and
    re-adding the entries of the fields whose keys did not change, which is most of them."""
    def add(self: Any, store_key: Any, doc: dict) -> None:
        seq = self._docs.get(store_key)
        if seq is None:
            seq = self._next_seq
            self._next_seq += 1
            for index in self._fields.values():
                index.add(store_key, doc)
        else:
            for index in self._fields.values():
                if index._doc_keys.get(store_key, _MISSING) != doc_keys(doc, index.path):
                    index.remove(store_key)
                    index.add(store_key, doc)
        self._docs[store_key] = seq
    return add


def fast_ensure_uniques(library: Callable, get_value_by_dot: Callable) -> Callable:
    """mongomock's `_ensure_uniques(new_data)` (after a write: does a unique index's key now
    match another document?) without reading any document back when the query index's
    candidates for the key (a superset of the matches) are at most the written one: then at
    most one document matches, which the library's count accepts. Taken only for scalar key
    values of a document with a str or ObjectId id in a collection without TTL indexes (whose
    expiry runs before a query); any other case is the library's."""
    def ensure_uniques(self: Any, new_data: dict) -> None:
        store = self._store
        own = new_data.get("_id")
        if type(own) not in _PLAIN_IDS or store._ttl_indexes:
            return library(self, new_data)
        own_keys = {store._index_key(own)}
        for index in store.indexes.values():
            if not index.get("unique"):
                continue
            find_kwargs = {}
            for key, _ in index.get("key"):
                try:
                    find_kwargs[key] = get_value_by_dot(new_data, key)
                except KeyError:
                    find_kwargs[key] = None
            if not all(_immutable(value) for value in find_kwargs.values()):
                return library(self, new_data)
            partial = index.get("partialFilterExpression")
            if partial is not None:
                find_kwargs = {"$and": [partial, find_kwargs]}
            found = store._get_query_index().candidates(find_kwargs)
            if found is None or not found <= own_keys:
                return library(self, new_data)
        return None
    return ensure_uniques


_PLAIN_IDS = frozenset({str, bson.ObjectId})
_MISSING = object()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ENCODABLE = frozenset({float, bool, type(None), bson.ObjectId, bson.Decimal128})
_INTEGERS = frozenset({int, bson.Int64})  # BSON refuses either beyond int64


def _one_plain_field(document: Any) -> bool:
    """A one-field document (what `$set` validates, field by field) that BSON encodes
    whatever the options: a str key without NUL, and a value of a type that always encodes, an
    int (or Int64) in int64's range, an ASCII str, or a naive datetime."""
    if type(document) is not dict or len(document) != 1:
        return False
    [(key, value)] = document.items()
    if type(key) is not str or "\0" in key:
        return False
    kind = type(value)
    return (kind in _ENCODABLE or kind in _INTEGERS and _INT64_MIN <= value <= _INT64_MAX
            or kind is str and value.isascii()
            or kind is _DATETIME and value.tzinfo is None)


def fast_bson_encode(library: Callable, mongomock_options: type,
                     default_registry: Any) -> Callable:
    """mongomock's `_bson_encode` (a validation: the bytes are thrown away) without building
    pymongo's CodecOptions again on every call (they are immutable: one per distinct set)."""
    converted: dict[tuple, CodecOptions] = {}

    def bson_encode(document: Any, check_keys: bool, codec_options: Any) -> None:
        if type(codec_options) is not mongomock_options or (
                codec_options.type_registry is not default_registry):
            return library(document, check_keys, codec_options)
        key = (codec_options.uuid_representation, codec_options.unicode_decode_error_handler)
        options = converted.get(key)
        if options is None:  # first, so options pymongo refuses are refused every time
            options = converted[key] = codec_options.to_pymongo()
        if check_keys or not _one_plain_field(document):
            bson.encode(document, check_keys, options)
        return None
    return bson_encode


def install() -> bool:
    """Replace the internals above in litemongo's vendored mongomock, once per process.
    False (and the library left as it is) when litemongo is not the version they were
    written for."""
    import litemongo

    with _installing:  # twice would take the fast functions for the library's
        if _installed:
            return True
        return _install(litemongo.__version__)


def _install(version: str) -> bool:
    if version != WRITTEN_FOR:
        logger.debug("store engine speedups not applied: written for litemongo %s, found %s",
                     WRITTEN_FOR, version)
        return False
    from litemongo._vendor.mongomock import codec_options, collection, helpers, indexing

    _installed.update(copy=collection.copy, _copy_field=collection._copy_field,
                      _bson_encode=collection._bson_encode,
                      patch=helpers.patch_datetime_awareness_in_document,
                      make_aware=helpers.make_datetime_timezone_aware_in_document,
                      index_add=indexing.CollectionIndexes.add,
                      ensure_uniques=collection.Collection._ensure_uniques)
    collection.copy = types.SimpleNamespace(deepcopy=bson_deepcopy, copy=bson_copy)
    collection._copy_field = fast_copy_field(_installed["_copy_field"])
    collection._bson_encode = fast_bson_encode(
        _installed["_bson_encode"], codec_options.CodecOptions,
        codec_options._DEFAULT_TYPE_REGISTRY)
    helpers.patch_datetime_awareness_in_document = fast_patch_datetimes(_installed["patch"])
    helpers.make_datetime_timezone_aware_in_document = fast_make_aware(
        _installed["make_aware"], helpers.utc)
    indexing.CollectionIndexes.add = fast_index_add(indexing._doc_keys)
    collection.Collection._ensure_uniques = fast_ensure_uniques(
        _installed["ensure_uniques"], helpers.get_value_by_dot)
    return True
