"""Members: finding them by what staff type, and creating them with normalized identifiers."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member, MemberTag, Vehicle
from db.types import utcnow
from domain.errors import InvalidInput, NotFound
from domain.identity import normalize_phone, normalize_plate
from domain.locales import LOCALES


async def find(session: AsyncSession, query: str, region: str = "CN") -> Member:
    """The member a counter clerk means by a phone, a plate or the shop's own member number."""
    text = query.strip()
    member = await session.scalar(select(Member).where(Member.member_ref == text))
    if member is None:
        try:
            phone = normalize_phone(text, region)
        except InvalidInput:
            phone = None
        if phone:
            member = await session.scalar(
                select(Member).where(Member.phone == phone).order_by(Member.id).limit(1)
            )
    if member is None:
        try:
            plate = normalize_plate(text)
        except InvalidInput:
            plate = None
        if plate:
            member = await session.scalar(
                select(Member)
                .join(Vehicle, Vehicle.member_id == Member.id)
                .where(Vehicle.plate == plate)
            )
    if member is None or member.erased_at is not None:
        raise NotFound("no member matches", query_kind="phone, plate or member number")
    return member


async def sample(session: AsyncSession, preferred_ref: str | None = None) -> Member | None:
    """A live member to show the product with (the demo's console): the one named by
    `preferred_ref` when it exists and is not erased, else the first live member."""
    if preferred_ref:
        found = await session.scalar(select(Member).where(Member.member_ref == preferred_ref))
        if found is not None and found.erased_at is None:
            return found
    return await session.scalar(
        select(Member).where(Member.erased_at.is_(None)).order_by(Member.id).limit(1)
    )


async def create(
    session: AsyncSession,
    *,
    member_ref: str,
    name: str,
    phone: str | None,
    birthday: date | None = None,
    locale: str = "zh_CN",
    home_store_id: int | None = None,
    tags: list[str] | None = None,
    marketing_consent: bool = False,
    consent_source: str | None = None,
    region: str = "CN",
) -> Member:
    """A new member; consent is recorded with its time and where it was given."""
    if locale not in LOCALES:
        raise InvalidInput("unknown locale", locale=locale)
    member = Member(
        member_ref=member_ref.strip(),
        name=name.strip(),
        phone=normalize_phone(phone, region) if phone else None,
        birthday=birthday,
        locale=locale,
        home_store_id=home_store_id,
        marketing_consent=marketing_consent,
        consent_at=utcnow() if marketing_consent else None,
        consent_source=consent_source if marketing_consent else None,
    )
    session.add(member)
    await session.flush()
    for tag in sorted(set(tags or [])):
        session.add(MemberTag(member_id=member.id, tag=tag))
    await session.flush()
    return member


async def tags_of(session: AsyncSession, member_id: int) -> list[str]:
    result = await session.scalars(
        select(MemberTag.tag).where(MemberTag.member_id == member_id).order_by(MemberTag.tag)
    )
    return list(result.all())


async def get(session: AsyncSession, member_id: int) -> Member:
    member = await session.get(Member, member_id)
    if member is None or member.erased_at is not None:
        raise NotFound("no such member", member_id=member_id)
    return member


async def set_locale(session: AsyncSession, member_id: int, locale: str) -> Member:
    """The language every message to the member is written in, chat and reminders alike."""
    if locale not in LOCALES:
        raise InvalidInput("unsupported language", locale=locale)
    member = await get(session, member_id)
    member.locale = locale
    member.updated_at = utcnow()
    session.add(member)
    await session.flush()
    return member
