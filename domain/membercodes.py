"""The member code: a short code a member shows at the counter from their own chat ("my member
code"), like a payment code, so staff find them without asking for a phone number aloud.

A code is 8 characters of Crockford's base 32 (40 random bits), shown as `XXXX-XXXX`, valid
`TTL_MINUTES` and once: resolving it marks it used with a conditional UPDATE, so of two
counters typing the same code only one gets the member. Asking for a new code retires the
member's older ones. Only the code's SHA-256 is stored; with 40 bits and a life of minutes,
a leaked table cannot be turned back into codes in time to use them.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, MemberCode
from domain import members
from domain.codes import clean, random_code
from domain.errors import DomainError

LENGTH = 8
GROUP = 4
TTL_MINUTES = 5


class MemberCodeInvalid(DomainError):
    """The code cannot be used; `params['reason']`: unknown, expired or used."""

    key = "error.member_code_invalid"

    @property
    def reason(self) -> str:
        return str(self.params.get("reason", ""))


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("ascii")).hexdigest()


def normalize(text: str) -> str | None:
    """The bare code in what a clerk typed (`ab12 cd34`, `AB12-CD34`), or None if it is none."""
    return clean(text, LENGTH)


def looks_like(text: str) -> bool:
    return normalize(text) is not None


async def issue(
    session: AsyncSession, member_id: int, now: datetime, *, ttl_minutes: int = TTL_MINUTES
) -> str:
    """A fresh code for the member to show, as `XXXX-XXXX`; their earlier codes stop working."""
    await members.get(session, member_id)
    await session.execute(
        update(MemberCode)
        .where(MemberCode.member_id == member_id, MemberCode.used_at.is_(None))
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    raw = random_code(LENGTH)
    session.add(
        MemberCode(
            code_hash=_hash(raw),
            member_id=member_id,
            created_at=now,
            expires_at=now + timedelta(minutes=ttl_minutes),
        )
    )
    await session.flush()
    return f"{raw[:GROUP]}-{raw[GROUP:]}"


async def resolve(session: AsyncSession, code: str, now: datetime, *, used_by: str) -> Member:
    """The member whose live code this is; the code is spent by this call."""
    raw = normalize(code)
    found = (
        await session.scalar(select(MemberCode).where(MemberCode.code_hash == _hash(raw)))
        if raw
        else None
    )
    if found is None:
        raise MemberCodeInvalid("no such member code", reason="unknown")
    if found.used_at is not None:
        raise MemberCodeInvalid("this member code was used already", reason="used")
    if found.expires_at <= now:
        raise MemberCodeInvalid("this member code has expired", reason="expired")
    spent = await session.execute(
        update(MemberCode)
        .where(MemberCode.id == found.id, MemberCode.used_at.is_(None))
        .values(used_at=now, used_by=used_by)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:
        raise MemberCodeInvalid("this member code was used already", reason="used")
    return await members.get(session, found.member_id)
