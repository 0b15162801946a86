"""Units of work: a snapshot read sees one moment; the chat's lookup reads see the newest
data statement by statement; neither ever blocks a writer."""

from __future__ import annotations

from sqlalchemy import func, select

from db.models import Member
from db.session import Database
from domain import members


async def _count(session) -> int:  # type: ignore[no-untyped-def]
    return int(await session.scalar(select(func.count()).select_from(Member)) or 0)


async def test_snapshot_reads_see_one_moment_and_lookups_see_the_newest(db: Database) -> None:
    async with db.read() as snapshot, db.read(snapshot=False) as lookups:
        before = await _count(snapshot)
        assert await _count(lookups) == before
        async with db.transaction() as session:  # a writer is never kept waiting by readers
            await members.create(session, member_ref="NEW-1", name="新会员", phone=None)
        assert await _count(lookups) == before + 1
        if db.dialect == "sqlite":
            # SQLite's snapshot holds for the whole read; PostgreSQL reads committed data.
            assert await _count(snapshot) == before
    async with db.read() as fresh:
        assert await _count(fresh) == before + 1
