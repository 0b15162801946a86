"""Test databases: every `db` test runs on SQLite and, when MEMBERBOT_TEST_POSTGRES_URL is set,
on a real PostgreSQL too. Each test gets a fresh database copied from one migrated template, so
the migrations are what the tests exercise, not `create_all`.

Every test that uses a database carries the `db` marker: given here to each test whose
fixtures include `db` or a template, and set by hand (`pytestmark = pytest.mark.db`) in files
whose tests build a database of their own. `pytest -m "not db"` runs the rest, the pure logic,
in seconds."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.session import Database, create_engine
from domain.shop import ShopConfig, load_shop_config
from memberbot.runtime import prepare

POSTGRES_URL = os.environ.get("MEMBERBOT_TEST_POSTGRES_URL")
SKIP_PG = (
    "PostgreSQL tests need MEMBERBOT_TEST_POSTGRES_URL (postgresql+asyncpg://...); .ci/run sets it"
)
BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(not POSTGRES_URL, reason=SKIP_PG)),
]
# A test that asks for any of these uses a database.
DATABASE_FIXTURES = frozenset({"db", "sqlite_template", "postgres_template"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


def run_blocking(coro: Any) -> Any:
    """Run a coroutine to completion from sync fixture code, even inside a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _migrate_and_sync(url: str, config: ShopConfig) -> None:
    database = Database.from_url(url)
    try:
        await prepare(database, config)
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
def shop_config() -> ShopConfig:
    return load_shop_config(None)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory, shop_config: ShopConfig) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    run_blocking(_migrate_and_sync(f"sqlite+aiosqlite:///{path}", shop_config))
    return path


async def _pg_admin(sql: str) -> None:
    assert POSTGRES_URL
    engine = create_engine(POSTGRES_URL)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def _pg_url(name: str) -> str:
    assert POSTGRES_URL
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_template(shop_config: ShopConfig) -> Iterator[str]:
    name = f"memberbot_tmpl_{uuid.uuid4().hex[:8]}"
    run_blocking(_pg_admin(f'CREATE DATABASE "{name}"'))
    run_blocking(_migrate_and_sync(_pg_url(name), shop_config))
    yield name
    run_blocking(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database with the default shop configuration synced in."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "memberbot.db"
        shutil.copyfile(template, path)
        database = Database.from_url(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=60_000)
        yield database
        await database.dispose()
        return
    template_name: str = request.getfixturevalue("postgres_template")
    name = f"memberbot_t_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    database = Database.from_url(_pg_url(name))
    yield database
    await database.dispose()
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
