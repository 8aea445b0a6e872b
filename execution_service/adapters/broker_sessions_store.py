"""The store's `broker_sessions`: one document per broker holding its session (the Kite
access token from `kite login`). A mixin of `Store`; the token is never logged."""

from __future__ import annotations

from execution_service.adapters.store_errors import translating

BROKER_SESSIONS = "broker_sessions"


class BrokerSessionQueries:
    """Needs `self.db`."""

    @translating
    def save_broker_session(self, broker: str, fields: dict) -> None:
        self.db[BROKER_SESSIONS].replace_one({"_id": broker}, {"_id": broker, **fields},
                                             upsert=True)

    @translating
    def get_broker_session(self, broker: str) -> dict | None:
        return self.db[BROKER_SESSIONS].find_one({"_id": broker})
