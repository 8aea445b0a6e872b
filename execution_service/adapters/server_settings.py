"""How the `mongodb://` backend talks to a real server: write concern, read preference,
timeouts. Every value is set explicitly here, so the driver's defaults (and a URI's options)
never decide silently how durable an acknowledged write is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    # "majority": an acknowledged claim survives the loss of the primary (a write only on
    # the old primary is rolled back after a failover, and the signal would be placed twice)
    write_concern: str | int = "majority"
    # journaled: acknowledged only once in the on-disk journal, so a crash of the whole set
    # loses nothing that was acknowledged
    journal: bool = True
    # a write that cannot reach its concern in this long fails (the message is nacked)
    write_timeout_ms: int = 10_000
    server_selection_timeout_ms: int = 3_000

    @classmethod
    def from_settings(cls, settings) -> ServerSettings:
        concern = settings.MONGODB_WRITE_CONCERN
        return cls(int(concern) if concern.isdigit() else concern, settings.MONGODB_JOURNAL,
                   settings.MONGODB_WRITE_TIMEOUT_MS,
                   settings.MONGODB_SERVER_SELECTION_TIMEOUT_MS)


def server_client_options(server: ServerSettings) -> dict:
    """Keyword arguments for pymongo.MongoClient (they override the URI's own options)."""
    return {"tz_aware": True, "w": server.write_concern, "journal": server.journal,
            "wTimeoutMS": server.write_timeout_ms,
            # claims and compare-and-set read what they just wrote: only the primary has it
            "readPreference": "primary",
            "serverSelectionTimeoutMS": server.server_selection_timeout_ms}
