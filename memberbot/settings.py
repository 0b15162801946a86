"""One settings object for the whole process, read from `MEMBERBOT_*` variables and `.env`.

Values that would only fail later, deep in a command (a log level logging does not know, a
database URL SQLAlchemy cannot parse or cannot run asynchronously), are refused here; `load`
turns every refusal into a `ConfigError` naming the variable, which the CLI prints as a
configuration problem (exit 2) like a problem in the shop's YAML.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from domain.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
ENV_PREFIX = "MEMBERBOT_"


class Settings(BaseSettings):
    """Every knob an operator can turn; the README's configuration table mirrors these fields."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///memberbot.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///FILE or postgresql+asyncpg://...",
    )
    shop_config: Path = Field(
        default=Path("shop.yaml"),
        description="The chain's YAML configuration; shipped defaults are used when it is absent.",
    )
    default_region: str = Field(
        default="CN", description="Region for phone numbers written without a country code."
    )
    default_locale: str = Field(default="zh_CN", description="Locale for new members: zh_CN or en.")
    log_level: str = Field(default="INFO", description="Python logging level.")
    sql_log_level: str = Field(
        default="WARNING",
        description="Level of the database drivers' loggers (aiosqlite, SQLAlchemy, asyncpg), "
        "apart from log_level because at DEBUG they print every statement's parameters: "
        "phones, plates, names. A debugging aid only.",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000, description="How long a SQLite writer waits for the lock before failing."
    )
    telegram_token: str | None = Field(default=None, description="Bot token; unset = no Telegram.")
    telegram_base_url: str = Field(
        default="https://api.telegram.org/bot",
        description="Bot API base URL, for a self-hosted Bot API server.",
    )
    telegram_bot_username: str | None = Field(
        default=None,
        description="The bot's @username, for invite deep links; asked of Telegram when unset.",
    )
    telegram_webhook_url: str | None = Field(
        default=None,
        description="Public HTTPS URL for webhook mode; unset = long polling.",
    )
    telegram_webhook_secret: str | None = Field(
        default=None,
        description="Secret token Telegram must send with every webhook call (required with it).",
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="Address of the one HTTP server: /healthz and every webhook (Telegram's in "
        "webhook mode, WeChat's).",
    )
    http_port: int = Field(default=8080, description="Port of the HTTP server.")
    telegram_webhook_listen: str | None = Field(
        default=None, description="Old name of MEMBERBOT_HTTP_HOST, read when that is unset."
    )
    telegram_webhook_port: int | None = Field(
        default=None, description="Old name of MEMBERBOT_HTTP_PORT, read when that is unset."
    )
    health_port: int | None = Field(
        default=None,
        description="Old name of MEMBERBOT_HTTP_PORT, read when neither it nor "
        "MEMBERBOT_TELEGRAM_WEBHOOK_PORT is set.",
    )
    wechat_token: str | None = Field(
        default=None,
        description="Token of the Official Account's server configuration; WeChat runs when it, "
        "the AppID and the AppSecret are set.",
    )
    wechat_app_id: str | None = Field(default=None, description="The Official Account's AppID.")
    wechat_app_secret: str | None = Field(
        default=None, description="The Official Account's AppSecret."
    )
    wechat_aes_key: str | None = Field(
        default=None,
        description="EncodingAESKey (43 characters) for safe mode; unset = plain mode.",
    )
    wechat_path: str = Field(default="/wechat", description="Path of the WeChat webhook.")
    wechat_api_base_url: str = Field(
        default="https://api.weixin.qq.com",
        description="Base URL of WeChat's API (stable token, customer-service messages).",
    )
    wechat_reply_seconds: float = Field(
        default=4.0,
        description="How long a WeChat reply may take before the webhook answers `success` and "
        "the reply is owed (WeChat gives up waiting at 5 s).",
    )
    wechat_hold_days: float = Field(
        default=7.0,
        gt=0,
        le=365,
        description="How long a message WeChat cannot carry yet (an offer, or a reminder without "
        "a template message, outside the member's customer-service allowance) waits for the "
        "member's next message before it counts as unreachable.",
    )
    wechat_rate_per_second: float = Field(
        default=20.0, gt=0, description="WeChat API sends per second, over all members."
    )
    chat_state_ttl_minutes: int = Field(
        default=30, description="How long a half-finished chat flow (a booking) is remembered."
    )
    staff: str | None = Field(
        default=None,
        description="The staff account (id or name) at this terminal, for counter commands "
        "run without --staff.",
    )
    rules_file: Path | None = Field(
        default=None,
        description="A shop's lifecycle rules YAML, merged over the shipped defaults by key; "
        "unset = the defaults.",
    )
    quiet_hours: str = Field(
        default="21:00-09:00",
        description="Local hours (store time zone) when no message is sent; they wait instead.",
    )
    marketing_cap: int = Field(
        default=2, description="Most marketing messages one member gets per cap window."
    )
    marketing_cap_days: int = Field(default=7, description="The cap window, in days.")
    daily_rules_at: str = Field(
        default="08:30", description="Local time the daily lifecycle rules run (HH:MM)."
    )
    dispatch_interval_seconds: float = Field(
        default=5.0, description="How often the dispatcher looks for due messages."
    )
    dispatch_batch: int = Field(default=200, description="Messages one dispatcher claims at once.")
    telegram_rate_per_second: float = Field(
        default=30.0,
        description="Bot-wide Telegram send rate (replies and reminders) kept under; 0 = no "
        "limit, for a self-hosted Bot API server.",
    )
    telegram_chat_interval_seconds: float = Field(
        default=1.0, description="Least time between two messages to one Telegram chat."
    )

    @field_validator("log_level", "sql_log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        """A level `logging` knows, in any case; anything else fails at the first log line."""
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level ({', '.join(LOG_LEVELS)})")
        return level

    @field_validator("database_url")
    @classmethod
    def _async_database_url(cls, value: str) -> str:
        """A URL SQLAlchemy parses, with one of the two async drivers memberbot runs on."""
        example = "sqlite+aiosqlite:///FILE or postgresql+asyncpg://user:pass@host/db"
        try:
            driver = make_url(value).drivername
        except ArgumentError:
            raise ValueError(f"is not a database URL like {example}") from None
        if driver not in DATABASE_DRIVERS:
            raise ValueError(f"{driver!r} is not supported: use {example}")
        return value

    @model_validator(mode="after")
    def _read_old_names(self) -> Settings:
        """The Telegram listen settings and the health port of earlier versions still work
        when the new names are unset."""
        if "http_host" not in self.model_fields_set and self.telegram_webhook_listen:
            self.http_host = self.telegram_webhook_listen
        if "http_port" not in self.model_fields_set:
            for old in (self.telegram_webhook_port, self.health_port):
                if old is not None:
                    self.http_port = old
                    break
        return self


def load(**values: Any) -> Settings:
    """Settings from the environment with `values` over them; a wrong value is a
    `ConfigError` naming its variable (`MEMBERBOT_LOG_LEVEL: …`), never a pydantic traceback."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = [
            ("settings", ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper(), err["msg"])
            for err in exc.errors()
        ]
        raise ConfigError(problems) from exc


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env."""
    return load()
