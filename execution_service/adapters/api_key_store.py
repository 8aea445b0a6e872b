"""Where API keys live: the `api_keys` collection, one document per key, only its hash. A
mixin of `Store` (store.py), like store_operations.py."""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from execution_service.adapters.store_errors import translating

API_KEYS = "api_keys"


class KeyNameTaken(Exception):
    """Another key (revoked or not) already has this name: `by: api:<name>` must say who."""


class ApiKeyQueries:
    """Needs `self.db`."""

    @translating
    def insert_api_key(self, doc: dict) -> None:
        try:
            self.db[API_KEYS].insert_one(doc)
        except DuplicateKeyError as e:
            raise KeyNameTaken(doc["name"]) from e

    @translating
    def active_api_key(self, digest: str) -> dict | None:
        """The key with this hash, unless revoked."""
        return self.db[API_KEYS].find_one({"hash": digest, "revoked_at": None})

    @translating
    def list_api_keys(self) -> list[dict]:
        return list(self.db[API_KEYS].find().sort("created_at", 1))

    @translating
    def revoke_api_key(self, id_or_name: str, at: datetime) -> dict | None:
        """Revoke the key with this id or name; the key as now stored, None when unknown."""
        return self.db[API_KEYS].find_one_and_update(
            {"$or": [{"_id": id_or_name}, {"name": id_or_name}]},
            {"$set": {"revoked_at": at}}, return_document=ReturnDocument.AFTER)

    @translating
    def ensure_api_key_indexes(self) -> None:
        """Unique hash and name (also from the CLI, which may run before any daemon did)."""
        self.db[API_KEYS].create_index("hash", unique=True)
        self.db[API_KEYS].create_index("name", unique=True)
