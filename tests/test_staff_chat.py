"""Staff in the chat: a staff account binds a chat with its one-time code (Telegram through the
local Bot API server, and through the conversation core), gets the staff menu, sees today's
bookings and the waiting complaints of its own store only, switches with a member's menu,
and loses the chat the moment the account is deactivated. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bot.channels import telegram as tg
from bot.conversation import BUTTON, COMMAND, TEXT, Chat, Event
from db.models import AuditLog, Booking, Staff
from db.session import Database
from domain import feedback, staff, staffchats
from domain.errors import InviteInvalid
from domain.shop import ShopConfig
from memberbot import app
from memberbot.cli import app as cli
from memberbot.settings import Settings, get_settings
from tests.conftest import run_blocking
from tests.support.botapi_server import BotApiServer
from tests.support.builders import PHONE, add_store, invite_code, main_store, new_member

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Tuesday
CLERK, OTHER = "7001", "7002"


def event(address: str, kind: str = TEXT, **fields: str) -> Event:
    return Event("telegram", address, kind, **fields)


async def say(chat: Chat, address: str, text: str) -> str:
    return "\n".join(reply.text for reply in await chat.handle(event(address, text=text)))


async def command(chat: Chat, address: str, name: str, text: str = "") -> list[str]:
    replies = await chat.handle(event(address, COMMAND, command=name, text=text))
    return [reply.text for reply in replies]


async def press(chat: Chat, address: str, data: str) -> str:
    replies = await chat.handle(event(address, BUTTON, data=data))
    return "\n".join(reply.text for reply in replies)


async def account(db: Database, name: str, store: str | None, role: str = staff.STAFF) -> int:
    async with db.transaction() as session:
        person = await staff.add(session, name=name, role=role, store_code=store, actor="t")
    return int(person.id or 0)


async def staff_code(db: Database, staff_id: int, now: datetime = NOW) -> str:
    async with db.transaction() as session:
        return await staffchats.create_invite(session, staff_id, now, actor="t")


async def bound_staff(chat: Chat, address: str, name: str, store: str | None) -> int:
    staff_id = await account(chat.db, name, store)
    replies = await command(chat, address, "start", await staff_code(chat.db, staff_id))
    assert name in replies[0], replies
    return staff_id


@pytest.fixture
def chat(db: Database, shop_config: ShopConfig) -> Chat:
    return Chat(db, shop_config, clock=lambda: NOW)


async def booked(db: Database, store_id: int, member_id: int, hour: int) -> None:
    start = datetime(2026, 11, 24, hour - 8, 0, tzinfo=UTC)
    async with db.transaction() as session:
        session.add(
            Booking(
                member_id=member_id,
                store_id=store_id,
                service_code="wash",
                starts_at=start,
                ends_at=start + timedelta(minutes=30),
                status="booked",
            )
        )


async def test_a_staff_code_binds_the_chat_to_the_staff_menu(chat: Chat) -> None:
    await bound_staff(chat, CLERK, "小张", "main")
    menu = await chat.handle(event(CLERK, COMMAND, command="staff"))
    data = [b.data for b in menu[0].all_buttons()]
    assert data == ["go:staff_bookings", "go:staff_complaints", "go:help"]
    assert "员工菜单" in menu[0].text and "小张" in menu[0].text
    # Member features are not the staff chat's: it says so and stays on the staff menu.
    assert "员工菜单" in await press(chat, CLERK, "go:points")


async def test_todays_bookings_are_the_stores_own_and_masked(chat: Chat) -> None:
    main = await main_store(chat.db)
    east = await add_store(chat.db, "east", "东区店")
    here = await new_member(chat.db, "M1", PHONE, name="王先生")
    there = await new_member(chat.db, "M2", "13900001111", name="李女士")
    await booked(chat.db, main, here, 11)
    await booked(chat.db, east, there, 14)
    await bound_staff(chat, CLERK, "小张", "main")
    sheet = await press(chat, CLERK, "go:staff_bookings")
    assert "11:00" in sheet and "王先生" in sheet and "+86138****5678" in sheet
    assert PHONE not in sheet and "李女士" not in sheet

    manager = await account(chat.db, "刘经理", None, staff.MANAGER)
    await command(chat, OTHER, "start", await staff_code(chat.db, manager))
    whole_chain = await press(chat, OTHER, "go:staff_bookings")
    assert "王先生" in whole_chain and "李女士" in whole_chain


async def test_waiting_complaints_are_listed_for_the_members_store(chat: Chat) -> None:
    member_id = await new_member(chat.db, "M1", PHONE, home_store_id=await main_store(chat.db))
    async with chat.db.transaction() as session:
        await feedback.file_complaint(session, member_id, "洗车后还有水渍", "telegram", NOW)
    await add_store(chat.db, "east", "东区店")
    await bound_staff(chat, CLERK, "小张", "main")
    await bound_staff(chat, OTHER, "小王", "east")
    listed = await press(chat, CLERK, "go:staff_complaints")
    assert "洗车后还有水渍" in listed and "M1" in listed and PHONE not in listed
    assert "暂无" in await press(chat, OTHER, "go:staff_complaints")


async def test_a_member_chat_gets_no_staff_features(chat: Chat) -> None:
    member_id = await new_member(chat.db, "M1", PHONE)
    await command(chat, CLERK, "start", await invite_code(chat.db, member_id, NOW))
    assert "没有绑定员工账号" in (await command(chat, CLERK, "staff"))[0]
    refused = await press(chat, CLERK, "go:staff_bookings")
    assert "员工功能" in refused and "11:00" not in refused
    async with chat.db.read() as session:
        audited = (
            await session.scalars(select(AuditLog).where(AuditLog.action == "staff.refused"))
        ).all()
    assert [(a.entity, a.entity_id) for a in audited] == [("member", member_id)]


async def test_a_chat_of_both_switches_between_the_menus(chat: Chat) -> None:
    member_id = await new_member(chat.db, "M1", PHONE)
    await command(chat, CLERK, "start", await invite_code(chat.db, member_id, NOW))
    await bound_staff(chat, CLERK, "小张", "main")
    staff_menu = await chat.handle(event(CLERK, COMMAND, command="menu"))
    assert "go:member_mode" in [b.data for b in staff_menu[0].all_buttons()]
    assert "/member" in await press(chat, CLERK, "go:points")

    [switched] = await command(chat, CLERK, "member")
    assert "会员菜单" in switched
    assert "积分" in await say(chat, CLERK, "我的积分")
    assert "员工功能" in await press(chat, CLERK, "go:staff_bookings")
    [back] = await command(chat, CLERK, "staff")
    assert "员工菜单" in back
    assert "预约" in await press(chat, CLERK, "go:staff_bookings")


async def test_deactivation_unbinds_the_staff_chat_at_once(chat: Chat) -> None:
    staff_id = await bound_staff(chat, CLERK, "小张", "main")
    async with chat.db.transaction() as session:
        await staff.deactivate(session, staff_id, actor="manager:1")
    assert "没有绑定员工账号" in (await command(chat, CLERK, "staff"))[0]
    assert "员工功能" not in await press(chat, CLERK, "go:staff_bookings")  # how to bind
    async with chat.db.read() as session:
        assert await staffchats.staff_for(session, "telegram", CLERK) is None
        actions = set(await session.scalars(select(AuditLog.action)))
    assert {"staff.chat_bind", "staff.chat_unbind", "staff.deactivate"} <= actions


async def test_a_staff_code_works_once_and_not_after_it_expires(db: Database) -> None:
    staff_id = await account(db, "小张", "main")
    code = await staff_code(db, staff_id)
    async with db.transaction() as session:
        person = await staffchats.redeem_invite(session, "telegram", CLERK, code, NOW)
    assert person.id == staff_id
    for address, when in ((OTHER, NOW), ("7003", NOW)):
        with pytest.raises(InviteInvalid):
            async with db.transaction() as session:
                await staffchats.redeem_invite(session, "telegram", address, code, when)
    late = await staff_code(db, staff_id)
    with pytest.raises(InviteInvalid) as refused:
        async with db.transaction() as session:
            later = NOW + timedelta(days=2)
            await staffchats.redeem_invite(session, "telegram", OTHER, late, later)
    assert refused.value.params["reason"] == "expired"


async def test_a_new_code_voids_the_unused_one(db: Database) -> None:
    staff_id = await account(db, "小张", "main")
    first = await staff_code(db, staff_id)
    await staff_code(db, staff_id, NOW + timedelta(minutes=1))
    with pytest.raises(InviteInvalid):
        async with db.transaction() as session:
            later = NOW + timedelta(minutes=2)
            await staffchats.redeem_invite(session, "telegram", CLERK, first, later)


def test_staff_add_prints_a_code_that_binds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", url)
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(cli, ["init"]).exit_code == 0
    added = runner.invoke(cli, ["staff", "add", "小张", "--store", "main"])
    assert added.exit_code == 0, added.output
    first = re.search(r"Staff code ([0-9A-Z]{10})", added.output)
    again = runner.invoke(cli, ["staff", "invite", "1"])
    second = re.search(r"Staff code ([0-9A-Z]{10})", again.output)
    assert first and second and first.group(1) != second.group(1), again.output

    async def redeem(code: str) -> str:
        db = Database.from_url(url)
        try:
            async with db.transaction() as session:
                person = await staffchats.redeem_invite(
                    session, "telegram", CLERK, code, datetime.now(UTC)
                )
                return person.name
        except InviteInvalid as exc:
            return str(exc.params["reason"])
        finally:
            await db.dispose()

    assert run_blocking(redeem(first.group(1))) == "expired"  # the second voided it
    assert run_blocking(redeem(second.group(1))) == "小张"
    get_settings.cache_clear()


# -- through Telegram -------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer(flood_limits=False) as running:
        yield running


async def test_staff_bind_by_telegram_link_and_hear_of_complaints(
    db: Database, shop_config: ShopConfig, server: BotApiServer
) -> None:
    clerk, member_user = 7001, 1001
    chat = Chat(db, shop_config, clock=lambda: NOW)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        telegram_token=server.token,
        telegram_base_url=server.base_url,
    )
    options = app.telegram_options(settings)
    application = tg.build_application(chat, options)
    staff_id = await account(db, "小张", "main")
    member_id = await new_member(db, "M2", PHONE, home_store_id=await main_store(db))
    async with (
        tg.running(application, options),
        tg.TelegramSender(server.token, server.base_url) as sender,
    ):
        chat.staff_channel = partial(app.alert_staff, sender)
        server.user_command(clerk, "start", await staff_code(db, staff_id))
        [bound] = await server.wait_sent(clerk, 1)
        assert "小张" in bound.text
        buttons = [b["callback_data"] for row in bound.reply_markup["inline_keyboard"] for b in row]
        assert "go:staff_bookings" in buttons

        server.user_command(member_user, "start", await invite_code(db, member_id, NOW))
        await server.wait_sent(member_user, 1)
        server.user_text(member_user, "投诉")
        await server.wait_sent(member_user, 2)
        server.user_text(member_user, "洗车后还有水渍")
        alert = (await server.wait_sent(clerk, 2))[1]
    assert "洗车后还有水渍" in alert.text and PHONE not in alert.text
    async with db.read() as session:
        person = await session.get(Staff, staff_id)
    assert person is not None and person.telegram_user_id is None  # reached by its bound chat
