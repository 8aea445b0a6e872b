"""The `order_commands` collection: one document per cancel/modify request (`_id` is its
`request_id`), so a request is handled once, and one that was in flight at a crash is finished
after the restart (SPEC §11)."""

from __future__ import annotations

from datetime import datetime

from pymongo.errors import DuplicateKeyError

from execution_service.adapters.store import translating

COMMANDS = "order_commands"
RECEIVED, DONE = "RECEIVED", "DONE"


class CommandLog:
    def __init__(self, database) -> None:
        self.commands = database[COMMANDS]

    @translating
    def ensure_indexes(self) -> None:
        self.commands.create_index("state")

    @translating
    def receive(self, doc: dict) -> dict | None:
        """Keep a new request (state RECEIVED): None when it is new, else the request as
        already stored under this `request_id`."""
        try:
            self.commands.insert_one({**doc, "state": RECEIVED})
            return None
        except DuplicateKeyError:
            return self.commands.find_one({"_id": doc["_id"]})

    @translating
    def finish(self, request_id: str, outcome: dict, at: datetime) -> None:
        self.commands.update_one({"_id": request_id},
                                 {"$set": {"state": DONE, "finished_at": at, **outcome}})

    @translating
    def get(self, request_id: str) -> dict | None:
        return self.commands.find_one({"_id": request_id})

    @translating
    def unfinished(self) -> list[dict]:
        return list(self.commands.find({"state": RECEIVED}).sort("received_at", 1))
