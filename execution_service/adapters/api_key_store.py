"""Where API keys live: the `api_keys` collection, one document per key, only its hash."""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from execution_service.adapters.store import translating

API_KEYS = "api_keys"


class KeyNameTaken(Exception):
    """Another key (revoked or not) already has this name: `by: api:<name>` must say who."""


class ApiKeyStore:
    def __init__(self, database) -> None:
        self.keys = database[API_KEYS]

    @translating
    def ensure_indexes(self) -> None:
        self.keys.create_index("hash", unique=True)
        self.keys.create_index("name", unique=True)

    @translating
    def insert(self, doc: dict) -> None:
        try:
            self.keys.insert_one(doc)
        except DuplicateKeyError as e:
            raise KeyNameTaken(doc["name"]) from e

    @translating
    def active_by_hash(self, digest: str) -> dict | None:
        return self.keys.find_one({"hash": digest, "revoked_at": None})

    @translating
    def list(self) -> list[dict]:
        return list(self.keys.find().sort("created_at", 1))

    @translating
    def revoke(self, id_or_name: str, at: datetime) -> dict | None:
        """Revoke the key with this id or name; the key as now stored, None when unknown."""
        return self.keys.find_one_and_update(
            {"$or": [{"_id": id_or_name}, {"name": id_or_name}]},
            {"$set": {"revoked_at": at}}, return_document=ReturnDocument.AFTER)
