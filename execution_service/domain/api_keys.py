"""API keys for the HTTP API (SPEC §15): made once, kept only as a hash, checked by scope.

A key is 32 random bytes (256 bits) from `secrets`. It is stored as its SHA-256: with that
much entropy no dictionary or brute-force search can get back from the hash to the key, so a
slow password hash (bcrypt, scrypt) would buy nothing and cost every request its time.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

KEY_PREFIX = "esk_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Scope(StrEnum):
    READ = "read"  # every GET
    TRADE = "trade"  # also orders, cancel, modify, halt, resume

    def allows(self, needed: Scope) -> bool:
        return self is Scope.TRADE or needed is Scope.READ


@dataclass(frozen=True)
class NewKey:
    """A key just made: `secret` is shown once and never stored; `doc` is what is stored."""

    secret: str
    doc: dict


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_key(scope: Scope, name: str | None, at: datetime) -> NewKey:
    key_id = f"key_{secrets.token_hex(4)}"
    name = name if name is not None else key_id
    if not NAME_PATTERN.match(name):
        raise ValueError(f"name must be 1-64 characters of A-Z a-z 0-9 _ . : -, got {name!r}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    doc = {"_id": key_id, "name": name, "scope": str(scope), "hash": key_hash(secret),
           "created_at": at, "revoked_at": None}
    return NewKey(secret, doc)


def who(doc: dict) -> str:
    """How a change made with this key is recorded (`by`)."""
    return f"api:{doc['name']}"


def shown(doc: dict) -> dict:
    """A key as `api-keys list` shows it: never its hash."""
    return {key: value for key, value in doc.items() if key != "hash"}
