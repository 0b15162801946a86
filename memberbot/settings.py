"""One settings object for the whole process, read from `MEMBERBOT_*` variables and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob an operator can turn; the README's configuration table mirrors these fields."""

    model_config = SettingsConfigDict(env_prefix="MEMBERBOT_", env_file=".env", extra="ignore")

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
    sqlite_busy_timeout_ms: int = Field(
        default=30_000, description="How long a SQLite writer waits for the lock before failing."
    )
    telegram_token: str | None = Field(default=None, description="Bot token; unset = no Telegram.")
    telegram_base_url: str = Field(
        default="https://api.telegram.org/bot",
        description="Bot API base URL, for a self-hosted Bot API server.",
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env."""
    return Settings()
