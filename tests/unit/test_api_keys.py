"""API keys: made from 256 random bits, stored as SHA-256 only, scopes ordered read < trade."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from execution_service.domain.api_keys import KEY_PREFIX, Scope, key_hash, new_key, shown, who

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_given_a_new_key_then_only_its_hash_is_in_the_document():
    made = new_key(Scope.TRADE, "desk", NOW)
    assert made.secret.startswith(KEY_PREFIX) and len(made.secret) >= len(KEY_PREFIX) + 43
    assert made.doc["hash"] == hashlib.sha256(made.secret.encode()).hexdigest()
    assert made.secret not in repr(made.doc)
    assert made.doc == {"_id": made.doc["_id"], "name": "desk", "scope": "trade",
                        "hash": key_hash(made.secret), "created_at": NOW, "revoked_at": None}
    assert "hash" not in shown(made.doc) and who(made.doc) == "api:desk"


def test_given_many_keys_then_secrets_and_ids_never_repeat():
    made = [new_key(Scope.READ, None, NOW) for _ in range(200)]
    assert len({m.secret for m in made}) == 200 and len({m.doc["_id"] for m in made}) == 200
    assert all(m.doc["name"] == m.doc["_id"] for m in made), "the id names an unnamed key"


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "new\nline", "ok$"])
def test_given_a_bad_name_then_refused_naming_it(name):
    with pytest.raises(ValueError, match="^name must be 1-64 characters"):
        new_key(Scope.READ, name, NOW)


@pytest.mark.parametrize(("scope", "needed", "allowed"), [
    (Scope.READ, Scope.READ, True), (Scope.READ, Scope.TRADE, False),
    (Scope.TRADE, Scope.READ, True), (Scope.TRADE, Scope.TRADE, True)])
def test_given_scopes_then_trade_includes_read_and_read_excludes_trade(scope, needed, allowed):
    assert scope.allows(needed) is allowed
