"""Settings from the environment, validated once at start (SPEC §9)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from execution_service.domain.intake import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DEPTH
from execution_service.errors import FatalConfigError


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

    MONGODB_URI: str | None = None
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
    KITE_API_KEY: str | None = None
    KITE_ACCESS_TOKEN: str | None = None
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

    LOG_DIR: Path = Path("logs")
    LOG_LEVEL: str = "INFO"
    ACCOUNTS_FILE: Path | None = None

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
                     "KITE_ACCESS_TOKEN", "METRICS_PORT", "API_PORT", "PRICE_COLLAR_PCT",
                     mode="before")
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
        return self

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
    """Read settings; any problem becomes one FatalConfigError line naming what to fix."""
    env = dict(os.environ if environ is None else environ)
    env.update({key: str(value) for key, value in (overrides or {}).items()})
    try:
        return Settings(_env_file=None, **_only_known(env))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        value = first.get("input")
        shown = "" if "TOKEN" in where or isinstance(value, dict) else f" (got {value!r})"
        message = first["msg"].removeprefix("Value error, ")
        raise FatalConfigError(f"configuration: {where}: {message}{shown}") from None


def _only_known(env: dict) -> dict:
    return {key: value for key, value in env.items() if key in Settings.model_fields}
