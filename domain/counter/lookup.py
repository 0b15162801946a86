"""Finding the member in front of the counter: by the member code they show from their chat,
their member number, phone or plate. Finding is audited (who looked whom up, and how), and
a member code is spent by it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Member
from domain import audit, membercodes, members, profiles, staff
from domain.counter.acting import at_store
from domain.identity import mask_phone, mask_plate
from domain.shop import LoyaltyRules

ACTION = "member.find"


@dataclass(frozen=True)
class Found:
    """The member found and how (`member_code`, `member_ref` or `phone_or_plate`). The profile
    holds personal data in clear: show `phone_masked` and `plates_masked` in staff lists."""

    profile: profiles.MemberProfile
    via: str

    @property
    def member(self) -> Member:
        return self.profile.member

    @property
    def phone_masked(self) -> str:
        return mask_phone(self.profile.member.phone)

    @property
    def plates_masked(self) -> list[str]:
        return [mask_plate(car.plate) for car in self.profile.vehicles]


async def _member(session: AsyncSession, query: str, now: datetime, actor: str, region: str):  # type: ignore[no-untyped-def]
    text = query.strip()
    by_ref = await session.scalar(select(Member).where(Member.member_ref == text))
    if by_ref is not None and by_ref.erased_at is None:
        return by_ref, "member_ref"
    if membercodes.looks_like(text):
        return await membercodes.resolve(session, text, now, used_by=actor), "member_code"
    return await members.find(session, text, region), "phone_or_plate"


async def find(
    session: AsyncSession,
    who: int | str,
    query: str,
    *,
    now: datetime,
    today: date,
    rules: LoyaltyRules,
    region: str = "CN",
) -> Found:
    """The member `query` names (member code, member number, phone or plate), with their
    balances, for the staff account `who`."""
    person, store_id = await at_store(session, who, ACTION)
    member, via = await _member(session, query, now, staff.actor_name(person), region)
    await audit.record(
        session,
        actor=staff.actor_name(person),
        action="counter." + ACTION,
        entity="member",
        entity_id=member.id,
        detail={"store_id": store_id, "via": via},
    )
    return Found(profile=await profiles.profile(session, member, today, rules), via=via)
