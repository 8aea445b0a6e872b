"""Accounts at start: ACCOUNTS_FILE (or, with neither a file nor any account, the demo paper
account) upserted into `accounts`, credentials never stored in clear (credentials.py), and the
one Kite session the ZERODHA accounts share."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from brokers.factory import BrokerFactory
from execution_service.adapters.store import Store
from execution_service.clock import utc_now
from execution_service.config import Settings
from execution_service.credentials import (
    CREDENTIAL_FIELDS,
    ENCRYPTED,
    SecretBox,
    split_credentials,
    stored_credentials,
    stored_fields,
)
from execution_service.domain.accounts import parse_symbols
from execution_service.domain.risk import limits_from_row
from execution_service.errors import FatalConfigError

logger = logging.getLogger(__name__)
DEMO_ACCOUNT = {"_id": "acc_abc123", "broker": "MOCK", "enabled": True, "allowed_symbols": [],
                "display_name": "Demo Paper Account"}


def seed_accounts(settings: Settings, store: Store, clock=utc_now) -> list[str]:
    """ACCOUNTS_FILE upserted into `accounts`; with neither a file nor any account, the demo
    paper account, so the README's sample signal fills. Credentials in a row are never written
    as given (credentials.py); any left in clear by an older version are sealed or removed."""
    box = SecretBox.from_settings(settings)
    if settings.ACCOUNTS_FILE is not None:
        entries = load_accounts_file(settings.ACCOUNTS_FILE)
    elif store.count_accounts() == 0:
        entries = [(dict(DEMO_ACCOUNT), {})]
    else:
        entries = []
    for doc, credentials in entries:
        fields = {key: value for key, value in doc.items() if key != "_id"}
        unset = sorted(CREDENTIAL_FIELDS)
        if credentials:
            fields.update(stored_fields(credentials, box))
            if box is None:
                unset.append(ENCRYPTED)
        store.upsert_account(doc["_id"], fields, clock(), unset=unset)
    _seal_clear_credentials(store, box, clock)
    return [doc["_id"] for doc, _ in entries]


def _seal_clear_credentials(store: Store, box: SecretBox | None, clock) -> None:
    for account in store.list_accounts():
        _, clear = split_credentials(account)
        if not clear:
            continue
        kept = {**stored_credentials(account, box), **clear}
        fields = stored_fields(kept, box)
        store.upsert_account(account["_id"], fields, clock(),
                             unset=sorted(clear) + ([] if box else [ENCRYPTED]))
        logger.warning("Account %s held credentials in clear (%s): %s", account["_id"],
                       ", ".join(sorted(clear)),
                       "now encrypted with CREDENTIALS_KEY" if box else
                       "removed from the store (set CREDENTIALS_KEY to keep them encrypted)")


def account_credentials(settings: Settings, store: Store) -> dict[str, dict[str, str]]:
    """Each account's credentials: ACCOUNTS_FILE's, else those sealed in the store."""
    box = SecretBox.from_settings(settings)
    found = {account["_id"]: stored_credentials(account, box)
             for account in store.list_accounts()}
    if settings.ACCOUNTS_FILE is not None:
        found.update({doc["_id"]: credentials
                      for doc, credentials in load_accounts_file(settings.ACCOUNTS_FILE)
                      if credentials})
    return {account_id: values for account_id, values in found.items() if values}


def use_account_credentials(settings: Settings, store: Store, brokers: BrokerFactory) -> None:
    """Kite runs one session per process: KITE_API_KEY / KITE_ACCESS_TOKEN from the
    environment win; otherwise the ZERODHA accounts' own credentials, which must agree."""
    credentials = account_credentials(settings, store)
    sessions: dict[tuple, list[str]] = {}
    for account in store.list_accounts():
        values = credentials.get(account["_id"])
        if values and str(account.get("broker", "")).upper() == "ZERODHA":
            pair = (values.get("api_key"), values.get("access_token"))
            sessions.setdefault(pair, []).append(account["_id"])
    if len(sessions) > 1:
        raise FatalConfigError("ZERODHA accounts carry different Kite credentials ("
                               + "; ".join(", ".join(ids) for ids in sessions.values())
                               + "): one Kite session per daemon")
    if sessions:
        ((api_key, access_token),) = sessions
        update = {name: value for name, value in (("KITE_API_KEY", api_key),
                                                  ("KITE_ACCESS_TOKEN", access_token))
                  if value and not getattr(settings, name)}
        brokers.update_settings(update)


def load_accounts_file(path: Path) -> list[tuple[dict, dict[str, str]]]:
    """(account document, its credentials) per row."""
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise FatalConfigError(f"ACCOUNTS_FILE {path}: {e}") from None
    if not isinstance(rows, list):
        raise FatalConfigError(f"ACCOUNTS_FILE {path}: must be a JSON list of accounts")
    entries = []
    for n, row in enumerate(rows, start=1):
        credentials = split_credentials(row)[1] if isinstance(row, dict) else {}
        entries.append((account_document(row, f"ACCOUNTS_FILE {path} entry {n}"), credentials))
    return entries


def account_document(row: dict, where: str) -> dict:
    """The `accounts` document for a row: its credential fields are left out."""
    if not isinstance(row, dict) or not isinstance(row.get("account_id"), str) \
            or not row["account_id"]:
        raise FatalConfigError(f"{where}: needs a string account_id")
    row, _ = split_credentials(row)
    broker = str(row.get("broker", "MOCK")).upper()
    symbols = row.get("allowed_symbols") or []
    if isinstance(symbols, str):
        symbols = parse_symbols(symbols)
    doc = {key: value for key, value in row.items() if key not in ("account_id",)}
    doc.update({"_id": row["account_id"], "broker": broker,
                "enabled": bool(row.get("enabled", True)),
                "allowed_symbols": [str(s).upper() for s in symbols]})
    try:
        doc.update(limits_from_row(row))
    except ValueError as e:
        raise FatalConfigError(f"{where}: {e}") from None
    return doc

