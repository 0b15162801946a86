"""The person joining or leaving a chat (WeChat's follow and unfollow), as the core sees it:
welcomed and told how to bind, or unbound with an audit line and nothing said; neither can be
forged as a button. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from bot.conversation import BUTTON, COMMAND, JOINED, LEFT, TEXT, Chat, Event
from db.models import AuditLog, Member
from db.session import Database
from domain import binding, members
from domain.shop import ShopConfig

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
OPENID = "oAliceAbCdEfGhIjKlMnOpQrStU"


def event(kind: str, **fields: str) -> Event:
    return Event("wechat", OPENID, kind, **fields)


async def bound_member(db: Database, chat: Chat, locale: str = "zh_CN") -> int:
    async with db.transaction() as session:
        member = await members.create(
            session, member_ref="M1", name="王先生", phone="13812345678", locale=locale
        )
        assert member.id is not None
        code = await binding.create_invite(session, member.id, NOW, actor="staff:1")
    replies = await chat.handle(event(COMMAND, command="start", text=code))
    assert await _bound(db) == member.id, replies[0].text
    return member.id


async def _bound(db: Database) -> int | None:
    async with db.read() as session:
        member = await binding.member_for(session, "wechat", OPENID)
    return None if member is None else member.id


async def test_joining_welcomes_and_tells_how_to_bind_on_wechat(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = Chat(db, shop_config, clock=lambda: NOW)
    welcome, how_to = (await chat.answer(event(JOINED))).replies
    assert "欢迎" in welcome.text
    assert "二维码" in how_to.text and "分享手机号" not in how_to.text

    member_id = await bound_member(db, chat)
    [menu] = await chat.handle(event(JOINED))
    assert "go:points" in [button.data for button in menu.all_buttons()]
    async with db.read() as session:
        member = await session.get(Member, member_id)
    assert member is not None and member.marketing_consent is False  # following is no consent


async def test_leaving_unbinds_with_an_audit_line_and_says_nothing(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = Chat(db, shop_config, clock=lambda: NOW)
    member_id = await bound_member(db, chat)
    await chat.handle(event(TEXT, text="预约"))  # half a booking
    assert await chat.handle(event(LEFT)) == []
    assert await _bound(db) is None
    async with db.read() as session:
        assert await binding.load_state(session, "wechat", OPENID, NOW) is None
        [audit] = (
            await session.scalars(select(AuditLog).where(AuditLog.action == "chat.unbind"))
        ).all()
    assert (audit.actor, audit.entity_id) == ("chat:wechat", member_id)
    assert await chat.handle(event(LEFT)) == []  # leaving again changes nothing


async def test_join_and_leave_cannot_be_pressed(db: Database, shop_config: ShopConfig) -> None:
    chat = Chat(db, shop_config, clock=lambda: NOW)
    await bound_member(db, chat)
    for data in ("go:left", "go:joined"):
        [stale] = await chat.handle(event(BUTTON, data=data))
        assert "过期" in stale.text
    assert await _bound(db) is not None


async def test_an_answer_says_its_language(db: Database, shop_config: ShopConfig) -> None:
    chat = Chat(db, shop_config, clock=lambda: NOW)
    assert (await chat.answer(event(TEXT, text="hi"))).locale == "zh_CN"
    await bound_member(db, chat, locale="en")
    assert (await chat.answer(event(TEXT, text="menu"))).locale == "en"
