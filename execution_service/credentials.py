"""Broker credentials: never stored or shown in clear.

They come from the environment (or SECRETS_FILE, see config.py), or from ACCOUNTS_FILE rows.
An account row's credential fields (`CREDENTIAL_FIELDS`) are split off before the row is
written to `accounts`: with CREDENTIALS_KEY set they are kept there only as one Fernet token
(`credentials_encrypted`, from the `cryptography` package; the key is never in the store),
without it they live in this process's memory only. The document records which fields are set
(`credentials_set`), which is all any command shows. Every value is registered with the
redactor the moment it is read.

`SecretBox` is the one Fernet helper: other secrets kept in the store (a broker session's
access token, say) should go through it too.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken

from execution_service.errors import FatalConfigError
from execution_service.redaction import REDACTED, protect

# Field names in an ACCOUNTS_FILE row that hold credentials (compared case-insensitively)
CREDENTIAL_FIELDS = frozenset({"api_key", "api_secret", "access_token", "request_token",
                               "refresh_token", "password", "secret", "token", "private_key",
                               "pin", "totp_secret"})
ENCRYPTED = "credentials_encrypted"
PRESENT = "credentials_set"
STORED = "credentials_stored"


def is_credential(field: str) -> bool:
    return field.lower() in CREDENTIAL_FIELDS


def split_credentials(row: dict) -> tuple[dict, dict[str, str]]:
    """(the row without credentials, the credentials); registers every value for redaction."""
    credentials = {key: str(value) for key, value in row.items()
                   if is_credential(key) and value not in (None, "")}
    protect(credentials.values())
    return {key: value for key, value in row.items() if not is_credential(key)}, credentials


def shown(doc: dict) -> dict:
    """An account document as commands may show it: credentials as set/unset, never values
    (also for a store written before credentials were kept out of it)."""
    out = {key: (REDACTED if is_credential(key) else value) for key, value in doc.items()
           if key != ENCRYPTED}
    names = sorted(set(doc.get(PRESENT) or []) | {key for key in doc if is_credential(key)})
    out["credentials"] = {name: "set" for name in names}
    return out


class SecretBox:
    """Fernet encryption with a key that is not in the store (CREDENTIALS_KEY)."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError):
            raise FatalConfigError(
                "configuration: CREDENTIALS_KEY: must be a Fernet key (32 url-safe base64 "
                "bytes); make one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`") from None

    @classmethod
    def from_settings(cls, settings) -> SecretBox | None:
        return None if not settings.CREDENTIALS_KEY else cls(settings.CREDENTIALS_KEY)

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, values: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode()

    def open(self, token: str, what: str) -> dict[str, str]:
        try:
            values = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError):
            raise FatalConfigError(f"{what}: the stored credentials cannot be decrypted with "
                                   f"CREDENTIALS_KEY (a different key?)") from None
        protect(values.values())
        return values


def stored_fields(credentials: dict[str, str], box: SecretBox | None) -> dict:
    """What an account document keeps of its credentials."""
    fields: dict = {PRESENT: sorted(credentials), STORED: box is not None and bool(credentials)}
    if box is not None and credentials:
        fields[ENCRYPTED] = box.seal(credentials)
    return fields


def stored_credentials(doc: dict, box: SecretBox | None) -> dict[str, str]:
    """The credentials an account document holds (decrypted), or {}."""
    if box is None or not doc.get(ENCRYPTED):
        return {}
    return box.open(doc[ENCRYPTED], f"account {doc.get('_id')}")
