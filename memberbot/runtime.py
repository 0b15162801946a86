"""What every command needs before it can work: settings, the shop configuration and a migrated
database. The CLI, the demo and (later) `serve` all start here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from bot.conversation import Chat
from db.migrate import upgrade
from db.session import Database
from domain.shop import ShopConfig, load_shop_config, sync_shop
from memberbot.settings import Settings, get_settings

# The database drivers' loggers print every statement with its parameters at DEBUG (and
# SQLAlchemy's at INFO): the phones, plates, names and birthdays of members.
SQL_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg")


@dataclass
class Runtime:
    settings: Settings
    config: ShopConfig
    db: Database

    def chat(self) -> Chat:
        """The conversation core every channel of this process shares."""
        return Chat(
            self.db,
            self.config,
            region=self.settings.default_region,
            default_locale=self.settings.default_locale,
            state_ttl_minutes=self.settings.chat_state_ttl_minutes,
            bot_username=self.settings.telegram_bot_username,
        )

    def today(self) -> date:
        """Today in the chain's time zone: the business day, not UTC's."""
        return self.config.today()


async def start(settings: Settings | None = None, *, migrate: bool = True) -> Runtime:
    """Load and validate the configuration, migrate the database and sync the shop into it."""
    settings = settings or get_settings()
    configure_logging(settings)
    config = load_shop_config(settings.shop_config)
    db = Database.from_url(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    if migrate:
        await prepare(db, config)
    return Runtime(settings=settings, config=config, db=db)


def configure_logging(settings: Settings) -> None:
    """The process's log level, with Alembic's chatter and the database drivers held apart:
    `MEMBERBOT_LOG_LEVEL=DEBUG` must not write members' personal data to stderr, so the SQL
    loggers follow `MEMBERBOT_SQL_LOG_LEVEL` (WARNING unless someone asks)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name in SQL_LOGGERS:
        logging.getLogger(name).setLevel(settings.sql_log_level.upper())


async def prepare(db: Database, config: ShopConfig) -> None:
    """Migrate the database to the newest schema and sync the chain's configuration into it:
    what every entry point (CLI, demo, tests, benchmarks) does before touching data."""
    await upgrade(db.engine)
    async with db.transaction() as session:
        await sync_shop(session, config)
