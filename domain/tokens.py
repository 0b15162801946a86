"""A channel's API access token, kept in the database and shared by every process.

WeChat's stable token (`/cgi-bin/stable_token`) is the same for every caller until it expires,
and fetching it counts against a daily allowance, so one process at a time fetches it and all
of them read the row:

* `stored` reads the token, its expiry and whether someone is fetching a new one;
* `lease` is the conditional update that lets exactly one process fetch: it succeeds only when
  no unexpired lease is held and the row still holds the token the caller saw (so a refresh
  someone else finished in the meantime is not repeated); the others wait and read again;
* `store` writes the new token and frees the lease; `unlease` frees it after a failed fetch.

Works the same on SQLite and PostgreSQL (a primary key and a conditional UPDATE).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChannelToken
from db.session import upsert_insert


@dataclass(frozen=True)
class Stored:
    token: str | None
    expires_at: datetime | None
    lease_until: datetime | None

    def usable(self, now: datetime, margin: timedelta, refused: str | None = None) -> bool:
        """A token still valid for `margin` and not the one the API just refused."""
        return (
            bool(self.token)
            and self.token != refused
            and self.expires_at is not None
            and self.expires_at - margin > now
        )


async def stored(session: AsyncSession, name: str) -> Stored | None:
    row = (
        await session.execute(
            select(ChannelToken.token, ChannelToken.expires_at, ChannelToken.lease_until).where(
                ChannelToken.name == name
            )
        )
    ).one_or_none()
    return None if row is None else Stored(row.token, row.expires_at, row.lease_until)


async def lease(
    session: AsyncSession, name: str, seen: str | None, now: datetime, hold: timedelta
) -> bool:
    """Whether this caller may fetch a new token: no one else holds the lease and the row
    still holds `seen` (the token the caller found wanting). Commit before fetching."""
    await session.execute(
        upsert_insert(session, ChannelToken.__table__)
        .values(name=name)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    result = await session.execute(
        update(ChannelToken)
        .where(
            ChannelToken.name == name,
            ChannelToken.token.is_not_distinct_from(seen),
            or_(ChannelToken.lease_until.is_(None), ChannelToken.lease_until < now),
        )
        .values(lease_until=now + hold)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def store(session: AsyncSession, name: str, token: str, expires_at: datetime) -> None:
    await session.execute(
        update(ChannelToken)
        .where(ChannelToken.name == name)
        .values(token=token, expires_at=expires_at, lease_until=None)
        .execution_options(synchronize_session=False)
    )


async def unlease(session: AsyncSession, name: str) -> None:
    await session.execute(
        update(ChannelToken)
        .where(ChannelToken.name == name)
        .values(lease_until=None)
        .execution_options(synchronize_session=False)
    )
