"""Binding chats to members: invite codes (hashed, expiring, single use even under concurrency,
rate-limited per chat), the member's own shared contact, moving and unbinding, and the
conversation state a restart continues; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import SQLModel

from db.models import AuditLog, ChatBinding, InviteCode, Member
from db.session import Database
from domain import binding
from domain.errors import InvalidInput, InviteInvalid, NotFound, TooManyAttempts
from tests.support.builders import new_member

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
TG = "telegram"


async def invite(db: Database, member_id: int, now: datetime = NOW, ttl: int = 60) -> str:
    async with db.transaction() as session:
        return await binding.create_invite(
            session, member_id, now, ttl_minutes=ttl, actor="staff:1"
        )


async def redeem(db: Database, address: str, code: str, now: datetime = NOW) -> ChatBinding:
    async with db.transaction() as session:
        return await binding.redeem_invite(session, TG, address, code, now)


async def bound_member(db: Database, address: str, channel: str = TG) -> int | None:
    async with db.read() as session:
        member = await binding.member_for(session, channel, address)
    return None if member is None else member.id


async def refusal(db: Database, address: str, code: str, now: datetime = NOW) -> str:
    with pytest.raises(InviteInvalid) as refused:
        await redeem(db, address, code, now)
    return refused.value.reason


async def test_invite_round_trip_binds_the_chat(db: Database) -> None:
    member_id = await new_member(db, "M1")
    code = await invite(db, member_id)
    assert len(code) == 8 and set(code) <= set(binding.CODE_ALPHABET)
    assert await bound_member(db, "1001") is None

    bound = await redeem(db, "1001", code)

    assert (bound.channel, bound.address, bound.member_id) == (TG, "1001", member_id)
    assert bound.via == "invite" and bound.active
    assert await bound_member(db, "1001") == member_id
    assert await bound_member(db, "1001", channel="wechat") is None
    async with db.read() as session:
        chats = await binding.addresses_of(session, member_id)
        used = await session.scalar(select(InviteCode).where(InviteCode.member_id == member_id))
    assert [(c.channel, c.address) for c in chats] == [(TG, "1001")]
    assert used is not None and used.used_at == NOW and used.used_by_address == "telegram:1001"


async def test_codes_are_random_and_forgive_typing(db: Database) -> None:
    member_id = await new_member(db, "M1")
    codes = {await invite(db, member_id) for _ in range(20)}
    assert len(codes) == 20
    code = await invite(db, member_id)
    typed = f" {code[:4].lower()}-{code[4:].lower()} ".replace("0", "o").replace("1", "l")
    assert (await redeem(db, "1001", typed)).member_id == member_id


async def test_code_text_is_stored_nowhere(db: Database) -> None:
    member_id = await new_member(db, "M1")
    code = await invite(db, member_id)
    await redeem(db, "1001", code)
    dumped: list[str] = []
    async with db.read() as session:
        for table in SQLModel.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                dumped.append(repr(tuple(row)))
    everything = "\n".join(dumped)
    assert binding.hash_code(code) in everything  # the dump really holds the invite table
    assert code not in everything and code.lower() not in everything


async def test_invite_is_audited_without_the_code(db: Database) -> None:
    member_id = await new_member(db, "M1")
    code = await invite(db, member_id)
    await redeem(db, "1001", code)
    async with db.read() as session:
        logs = (await session.scalars(select(AuditLog).order_by(AuditLog.id))).all()
    actions = [(log.action, log.entity_id) for log in logs]
    assert ("invite.create", member_id) in actions and ("chat.bind", member_id) in actions
    assert all(code not in repr(log.detail) and "1001" not in repr(log.detail) for log in logs)


async def test_expired_codes_are_refused(db: Database) -> None:
    member_id = await new_member(db, "M1")
    code = await invite(db, member_id, ttl=60)
    assert await refusal(db, "1001", code, NOW + timedelta(minutes=60)) == "expired"
    code = await invite(db, member_id, ttl=60)
    late = NOW + timedelta(minutes=59, seconds=59)
    assert (await redeem(db, "1001", code, late)).member_id == member_id


async def test_a_code_works_once(db: Database) -> None:
    member_id = await new_member(db, "M1")
    code = await invite(db, member_id)
    await redeem(db, "1001", code)
    assert await refusal(db, "2002", code) == "used"
    assert await refusal(db, "1001", code) == "used"
    assert await bound_member(db, "2002") is None


async def test_a_new_invite_voids_the_older_unused_ones(db: Database) -> None:
    member_id = await new_member(db, "M1")
    old = await invite(db, member_id)
    new = await invite(db, member_id, NOW + timedelta(minutes=1))
    assert await refusal(db, "1001", old, NOW + timedelta(minutes=2)) == "expired"
    assert (await redeem(db, "1001", new, NOW + timedelta(minutes=2))).member_id == member_id


async def test_unknown_and_malformed_codes_are_refused(db: Database) -> None:
    await new_member(db, "M1")
    assert await refusal(db, "1001", "ZZZZZZZZ") == "unknown"
    assert await refusal(db, "1001", "not a code at all") == "unknown"
    assert await refusal(db, "1002", "") == "unknown"


async def test_invites_only_for_live_members(db: Database) -> None:
    with pytest.raises(NotFound):
        async with db.transaction() as session:
            await binding.create_invite(session, 999_999, NOW, actor="staff:1")


@pytest.mark.parametrize("chats", [2, 6])
async def test_concurrent_redemptions_of_one_code_bind_exactly_one_chat(
    db: Database, chats: int
) -> None:
    member_id = await new_member(db, "M1")
    code = await invite(db, member_id)

    async def attempt(n: int) -> str:
        try:
            await redeem(db, f"chat-{n}", code)
        except InviteInvalid as refused:
            return refused.reason
        return "bound"

    outcomes = await asyncio.gather(*(attempt(n) for n in range(chats)))

    assert sorted(outcomes) == ["bound"] + ["used"] * (chats - 1)
    async with db.read() as session:
        count = await session.scalar(select(func.count()).select_from(ChatBinding))
    assert count == 1


async def test_rate_limit_after_five_failures_until_the_window_ends(db: Database) -> None:
    member_id = await new_member(db, "M1")
    code = await invite(db, member_id, ttl=120)
    for minute in range(binding.MAX_FAILURES):
        assert await refusal(db, "1001", "WRONG000", NOW + timedelta(minutes=minute)) == "unknown"

    # Locked out for the rest of the window, even with the right code, and failures elsewhere
    # do not count against another chat.
    with pytest.raises(TooManyAttempts) as locked:
        await redeem(db, "1001", code, NOW + timedelta(minutes=14, seconds=59))
    assert locked.value.params["retry_at"] == NOW + binding.FAILURE_WINDOW
    assert await bound_member(db, "1001") is None
    assert await refusal(db, "2002", "WRONG000", NOW + timedelta(minutes=5)) == "unknown"

    assert (await redeem(db, "1001", code, NOW + binding.FAILURE_WINDOW)).member_id == member_id


async def test_a_success_does_not_reset_the_failure_window(db: Database) -> None:
    member_id = await new_member(db, "M1")
    for minute in range(binding.MAX_FAILURES - 1):
        await refusal(db, "1001", "WRONG000", NOW + timedelta(minutes=minute))
    code = await invite(db, member_id, NOW + timedelta(minutes=5))
    await redeem(db, "1001", code, NOW + timedelta(minutes=5))  # under the limit: allowed
    await refusal(db, "1001", "WRONG000", NOW + timedelta(minutes=6))  # the fifth failure
    code = await invite(db, member_id, NOW + timedelta(minutes=7))
    with pytest.raises(TooManyAttempts):
        await redeem(db, "1001", code, NOW + timedelta(minutes=7))


async def test_a_new_window_starts_at_the_first_failure_after_the_old_one(db: Database) -> None:
    member_id = await new_member(db, "M1")
    for minute in range(binding.MAX_FAILURES):
        await refusal(db, "1001", "WRONG000", NOW + timedelta(minutes=minute))
    later = NOW + timedelta(minutes=30)
    for minute in range(binding.MAX_FAILURES):
        await refusal(db, "1001", "WRONG000", later + timedelta(minutes=minute))
    code = await invite(db, member_id, later + timedelta(minutes=10))
    with pytest.raises(TooManyAttempts):
        await redeem(db, "1001", code, later + timedelta(minutes=10))


async def contact(
    db: Database,
    address: str,
    phone: str,
    *,
    contact_user_id: int | None = 77,
    sender_user_id: int | None = 77,
) -> ChatBinding:
    async with db.transaction() as session:
        return await binding.bind_by_contact(
            session,
            TG,
            address,
            contact_user_id=contact_user_id,
            sender_user_id=sender_user_id,
            phone=phone,
            region="CN",
            now=NOW,
        )


@pytest.mark.parametrize("phone", ["8613812345678", "+86 138 1234 5678", "13812345678"])
async def test_own_contact_binds_in_any_phone_format(db: Database, phone: str) -> None:
    member_id = await new_member(db, "M1")
    await new_member(db, "M2", phone="13900001111")
    bound = await contact(db, "1001", phone)
    assert (bound.member_id, bound.via) == (member_id, "contact")
    assert await bound_member(db, "1001") == member_id


async def test_foreign_phone_without_plus_binds(db: Database) -> None:
    member_id = await new_member(db, "UK1", phone="+447911123456")
    assert (await contact(db, "1001", "447911123456")).member_id == member_id


async def test_someone_elses_contact_is_refused(db: Database) -> None:
    await new_member(db, "M1")
    for ids in ({"contact_user_id": 78}, {"contact_user_id": None}, {"sender_user_id": None}):
        with pytest.raises(InviteInvalid) as refused:
            await contact(db, "1001", "13812345678", **ids)
        assert refused.value.reason == "not_own_contact"
    assert await bound_member(db, "1001") is None


async def test_contact_with_unknown_or_invalid_phone_is_refused(db: Database) -> None:
    await new_member(db, "M1")
    with pytest.raises(NotFound):
        await contact(db, "1001", "13900009999")
    with pytest.raises(InvalidInput):
        await contact(db, "1001", "12345")
    assert await bound_member(db, "1001") is None


async def test_shared_phone_asks_for_an_invite_code(db: Database) -> None:
    await new_member(db, "M1")
    await new_member(db, "M2")
    with pytest.raises(InviteInvalid) as refused:
        await contact(db, "1001", "13812345678")
    assert refused.value.reason == "phone_shared"
    assert await bound_member(db, "1001") is None


async def test_erased_members_cannot_be_bound_or_reached(db: Database) -> None:
    member_id = await new_member(db, "M1")
    await contact(db, "1001", "13812345678")
    code = await invite(db, member_id)
    async with db.transaction() as session:
        member = await session.get(Member, member_id)
        assert member is not None
        member.erased_at = NOW
        member.phone = None
        session.add(member)
    assert await bound_member(db, "1001") is None
    async with db.read() as session:
        assert await binding.addresses_of(session, member_id) == []
    assert await refusal(db, "2002", code) == "unknown"
    with pytest.raises(NotFound):
        await contact(db, "2002", "13812345678")


async def test_binding_a_bound_chat_moves_it_to_the_new_member(db: Database) -> None:
    first = await new_member(db, "M1")
    second = await new_member(db, "M2", phone="13900001111")
    await redeem(db, "1001", await invite(db, first))
    await redeem(db, "2002", await invite(db, first))

    moved = await redeem(db, "1001", await invite(db, second))

    assert moved.member_id == second
    assert await bound_member(db, "1001") == second
    async with db.read() as session:
        assert [c.address for c in await binding.addresses_of(session, first)] == ["2002"]
        assert [c.address for c in await binding.addresses_of(session, second)] == ["1001"]
        rows = await session.scalar(select(func.count()).select_from(ChatBinding))
        move = await session.scalar(
            select(AuditLog).where(AuditLog.action == "chat.bind", AuditLog.entity_id == second)
        )
    assert rows == 2
    assert move is not None and move.detail["moved_from_member_id"] == first


async def test_unbind_ends_the_binding_and_rebinding_revives_it(db: Database) -> None:
    member_id = await new_member(db, "M1")
    await contact(db, "1001", "13812345678")
    async with db.transaction() as session:
        assert await binding.unbind(session, TG, "1001") is True
        assert await binding.unbind(session, TG, "1001") is False
        assert await binding.unbind(session, TG, "never-bound") is False
    assert await bound_member(db, "1001") is None
    async with db.read() as session:
        assert await binding.addresses_of(session, member_id) == []
    await contact(db, "1001", "+8613812345678")
    assert await bound_member(db, "1001") == member_id


async def test_conversation_state_round_trip_expiry_and_clear(db: Database) -> None:
    async with db.transaction() as session:
        await binding.save_state(session, TG, "1001", "booking", {"store": "SH01"}, NOW)
    async with db.read() as session:  # another unit of work, as a restarted process would
        state = await binding.load_state(session, TG, "1001", NOW + timedelta(minutes=29))
        assert await binding.load_state(session, TG, "2002", NOW) is None
    assert state is not None and (state.flow, state.data) == ("booking", {"store": "SH01"})

    later = NOW + timedelta(minutes=20)
    async with db.transaction() as session:
        data = {"store": "SH01", "service": "wash", "slot": "2026-11-25T10:00"}
        await binding.save_state(session, TG, "1001", "booking", data, later, ttl_minutes=30)
    async with db.read() as session:
        state = await binding.load_state(session, TG, "1001", NOW + timedelta(minutes=49))
        lapsed = await binding.load_state(session, TG, "1001", NOW + timedelta(minutes=50))
    assert state is not None and state.data["slot"] == "2026-11-25T10:00"
    assert lapsed is None

    async with db.transaction() as session:
        await binding.clear_state(session, TG, "1001")
    async with db.read() as session:
        assert await binding.load_state(session, TG, "1001", later) is None


async def test_unknown_channel_is_refused(db: Database) -> None:
    await new_member(db, "M1")
    with pytest.raises(InvalidInput):
        async with db.transaction() as session:
            await binding.redeem_invite(session, "sms", "1001", "ABCDEFGH", NOW)
