"""Settings from the environment, validated once at start (SPEC §9)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from execution_service.credentials import SecretBox
from execution_service.domain.intake import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DEPTH
from execution_service.errors import FatalConfigError
from execution_service.redaction import REDACTED, protect, redact, uri_password

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Settings whose whole value is a secret: never shown (only "set"/"unset"), always redacted.
# MONGODB_URI is shown with its password redacted.
SECRET_SETTINGS = ("KITE_API_KEY", "KITE_ACCESS_TOKEN", "KITE_API_SECRET", "TELEGRAM_BOT_TOKEN",
                   "CREDENTIALS_KEY")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=True, extra="ignore")

    GOOGLE_CLOUD_PROJECT: str = "local-project"
    PUBSUB_EMULATOR_HOST: str | None = None
    TRADING_ORDERS_TOPIC: str = "trading-orders"
    TRADING_ORDERS_SUBSCRIPTION: str = "trading-orders-sub"
    EXECUTION_CONFIRMATIONS_TOPIC: str = "execution-confirmations"
    DEAD_LETTER_TOPIC: str = "trading-orders-dead-letter"
    PUBSUB_MAX_IN_FLIGHT: int = Field(default=200, ge=1)
    PUBSUB_STREAMS: int = Field(default=1, ge=1, le=32)

    MONGODB_URI: str | None = Field(default=None, repr=False)
    MONGODB_DATABASE: str = "trading"
    MONGODB_WRITE_CONCERN: str = "majority"
    MONGODB_JOURNAL: bool = True
    MONGODB_WRITE_TIMEOUT_MS: int = Field(default=10_000, ge=1)
    MONGODB_SERVER_SELECTION_TIMEOUT_MS: int = Field(default=3_000, ge=1)
    DATA_DIR: Path = Path("data")

    USE_MOCK_BROKER: bool = True
    IBKR_HOST: str = "127.0.0.1"
    IBKR_PORT: int = Field(default=4002, ge=1, le=65535)
    IBKR_CLIENT_ID: int = 1
    IBKR_CONNECT_TIMEOUT_SECONDS: float = Field(default=4.0, gt=0)
    KITE_API_KEY: str | None = Field(default=None, repr=False)
    KITE_ACCESS_TOKEN: str | None = Field(default=None, repr=False)
    KITE_API_SECRET: str | None = Field(default=None, repr=False)
    KITE_API_URL: str = "https://api.kite.trade"
    KITE_ORDERS_PER_SECOND: float = Field(default=10.0, gt=0)

    ORDER_TIMEOUT_SECONDS: float = Field(default=60.0, gt=0)
    MAX_RETRY_ATTEMPTS: int = Field(default=3, ge=1)
    RETRY_BACKOFF_SECONDS: float = Field(default=0.5, ge=0)
    ORDER_POLL_SECONDS: float = Field(default=0.5, gt=0)
    LATE_FILL_GRACE_SECONDS: float = Field(default=1.0, ge=0)

    TELEGRAM_ENABLED: bool = False
    TELEGRAM_BOT_TOKEN: str | None = Field(default=None, repr=False)
    TELEGRAM_CHAT_ID: str | None = None
    TELEGRAM_API_URL: str = "https://api.telegram.org"
    TELEGRAM_COMMANDS: bool = False
    TELEGRAM_ADMIN_CHAT_IDS: str = ""

    LOG_DIR: Path = Path("logs")
    LOG_LEVEL: str = "INFO"
    ACCOUNTS_FILE: Path | None = None
    SECRETS_FILE: Path | None = None  # KEY=VALUE lines (dotenv); the environment wins
    CREDENTIALS_KEY: str | None = Field(default=None, repr=False)  # Fernet key: credentials.py

    MOCK_FILL_DELAY_SECONDS: float = Field(default=0.05, ge=0)
    MOCK_FILL_CHUNKS: int = Field(default=1, ge=1)
    MOCK_REJECT_RATE: float = Field(default=0.0, ge=0, le=1)
    MOCK_SLIPPAGE_BPS: float = Field(default=0.0, ge=0)
    MOCK_COMMISSION_PER_ORDER: float = Field(default=1.0, ge=0)
    MOCK_SEED: int | None = None

    HEARTBEAT_SECONDS: float = Field(default=2.0, gt=0)
    PRICE_COLLAR_PCT: float | None = Field(default=10.0, gt=0)
    METRICS_PORT: int | None = Field(default=None, ge=0, le=65535)
    METRICS_HOST: str = "0.0.0.0"
    API_PORT: int | None = Field(default=None, ge=0, le=65535)
    API_HOST: str = "127.0.0.1"
    LEASE_SECONDS: float = Field(default=15.0, gt=0)
    OUTBOX_RESCAN_SECONDS: float = Field(default=5.0, gt=0)
    SUPERVISE_SECONDS: float = Field(default=2.0, gt=0)
    # Checked before a body is parsed (issue 14); an order is under 2 KB.
    MAX_MESSAGE_BYTES: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=10_000_000)
    MAX_MESSAGE_DEPTH: int = Field(default=DEFAULT_MAX_DEPTH, ge=2, le=200)

    @field_validator("PUBSUB_EMULATOR_HOST", "MONGODB_URI", "ACCOUNTS_FILE", "MOCK_SEED",
                     "TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID", "KITE_API_KEY",
                     "KITE_ACCESS_TOKEN", "KITE_API_SECRET", "CREDENTIALS_KEY", "SECRETS_FILE",
                     "METRICS_PORT", "API_PORT", "PRICE_COLLAR_PCT", mode="before")
    @classmethod
    def _blank_is_unset(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("MONGODB_URI")
    @classmethod
    def _known_store_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("mongodb://", "mongodb+srv://",
                                                       "mongomock://", "embedded://")):
            raise ValueError("must start with mongodb://, mongodb+srv://, mongomock:// or "
                             "embedded://PATH")
        if value is not None and value.startswith("embedded://") and \
                not value.removeprefix("embedded://").strip():
            raise ValueError("embedded:// needs a directory after it (embedded://PATH)")
        return value

    @field_validator("LOG_LEVEL")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("TELEGRAM_ADMIN_CHAT_IDS")
    @classmethod
    def _chat_id_list(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip() and not part.strip().lstrip("-").isdigit():
                raise ValueError(f"must be numeric chat ids separated by commas, not {part!r}")
        return value

    @field_validator("CREDENTIALS_KEY")
    @classmethod
    def _fernet_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SecretBox(value)
            except FatalConfigError:
                raise ValueError("must be a Fernet key (32 url-safe base64 bytes), made with "
                                 "cryptography's Fernet.generate_key()") from None
        return value

    @field_validator("MONGODB_WRITE_CONCERN")
    @classmethod
    def _known_write_concern(cls, value: str) -> str:
        value = value.strip()
        if value != "majority" and not (value.isdigit() and int(value) >= 1):
            raise ValueError("must be majority or a number of members >= 1")
        return value

    @model_validator(mode="after")
    def _telegram_complete(self) -> Settings:
        if self.TELEGRAM_ENABLED:
            missing = [name for name in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID")
                       if not getattr(self, name)]
            if missing:
                raise ValueError(f"TELEGRAM_ENABLED=true needs {' and '.join(missing)}")
        if self.TELEGRAM_COMMANDS and not (self.TELEGRAM_ENABLED and self.admin_chat_ids):
            raise ValueError("TELEGRAM_COMMANDS=true needs TELEGRAM_ENABLED=true and "
                             "TELEGRAM_ADMIN_CHAT_IDS")
        return self

    @property
    def admin_chat_ids(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.TELEGRAM_ADMIN_CHAT_IDS.split(",")
                     if part.strip())

    @property
    def starts_local_emulator(self) -> bool:
        """No emulator given and no real project: the daemon starts one itself (SPEC §9)."""
        return self.PUBSUB_EMULATOR_HOST is None and (
            self.GOOGLE_CLOUD_PROJECT == "local-project"
        )

    @property
    def embedded_store_path(self) -> Path | None:
        if self.MONGODB_URI is None:
            return self.DATA_DIR
        if self.MONGODB_URI.startswith("embedded://"):
            return Path(self.MONGODB_URI.removeprefix("embedded://"))
        return None


def load_settings(overrides: dict | None = None, environ: dict | None = None) -> Settings:
    """Read settings; any problem becomes one FatalConfigError line naming what to fix, with
    no secret in it. Every secret read is registered with the process's redactor."""
    env = dict(os.environ if environ is None else environ)
    env.update({key: str(value) for key, value in (overrides or {}).items()})
    env = {**_secrets_file(env.get("SECRETS_FILE")), **_only_known(env)}
    protect([*(env.get(name) for name in SECRET_SETTINGS), uri_password(env.get("MONGODB_URI"))])
    try:
        return Settings(_env_file=None, **env)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise FatalConfigError(redact(f"configuration: {where}: {message}"
                                      f"{_shown_input(where, first.get('input'))}")) from None


def _shown_input(where: str, value) -> str:
    if where in SECRET_SETTINGS or isinstance(value, dict):
        return f" (got {REDACTED})" if where in SECRET_SETTINGS else ""
    return f" (got {redact(repr(value))})"


def _secrets_file(path: str | None) -> dict[str, str]:
    """The settings in SECRETS_FILE: `KEY=VALUE` lines, `#` comments. Refused when anyone but
    its owner's group may read it."""
    if not path or not path.strip():
        return {}
    file = Path(path)
    try:
        if file.stat().st_mode & 0o007:
            raise FatalConfigError(f"configuration: SECRETS_FILE {file} is readable by others: "
                                   f"chmod 600 {file}")
        lines = file.read_text().splitlines()
    except OSError as e:
        raise FatalConfigError(f"configuration: SECRETS_FILE {file}: {e.strerror}") from None
    values = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.removeprefix("export ").partition("=")
        if not equals or key.strip() not in Settings.model_fields:
            raise FatalConfigError(f"configuration: SECRETS_FILE {file} line {number}: expected "
                                   f"SETTING=value with a known setting name")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def _only_known(env: dict) -> dict:
    return {key: value for key, value in env.items() if key in Settings.model_fields}


def secret_presence(settings: Settings) -> dict[str, str]:
    """What `status` may say about each secret setting: set or unset, never its value."""
    shown = {name: "set" if getattr(settings, name) else "unset" for name in SECRET_SETTINGS}
    shown["MONGODB_URI password"] = "set" if uri_password(settings.MONGODB_URI) else "unset"
    return shown
