"""The feedback flow driven through `Chat.handle` as a channel would: the survey and its score
buttons (also without any prior state, as the scheduler will send them), the comment as free
text, forged buttons that write nothing, and complaints by keyword, command and free text; on
SQLite and PostgreSQL, in Chinese and English."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.conversation import Chat, Event
from bot.flows import account, feedback
from db.models import Complaint, ConversationState, SurveyResponse, Visit
from db.session import Database
from domain.locales import LOCALES
from domain.messages import TEMPLATES_DIR, Renderer
from domain.outgoing import Reply
from domain.shop import LoyaltyRules, ShopConfig
from tests.support.builders import add_visit, link_chat, main_store, new_member

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
TG = "telegram"
RULES = LoyaltyRules()


def chat(db: Database, shop_config: ShopConfig) -> Chat:
    return Chat(db, shop_config, flows=[account.FLOW, feedback.FLOW], clock=lambda: NOW)


async def member_with_visits(
    db: Database, ref: str, days: list[date], locale: str = "zh_CN"
) -> tuple[int, list[int]]:
    member_id = await new_member(db, ref, None, locale=locale)
    store = await main_store(db)
    return member_id, [
        await add_visit(db, member_id, day, 20_000, RULES, store_id=store) for day in days
    ]


def text(address: str, words: str) -> Event:
    return Event(TG, address, "text", text=words)


def press(address: str, data: str) -> Event:
    return Event(TG, address, "button", data=data)


def command(address: str, name: str, words: str = "") -> Event:
    return Event(TG, address, "command", command=name, text=words)


def buttons(replies: list[Reply]) -> list[str]:
    return [b.data for reply in replies for b in reply.all_buttons()]


def said(replies: list[Reply]) -> str:
    return "\n".join(reply.text for reply in replies)


async def answers(db: Database) -> list[SurveyResponse]:
    async with db.read() as session:
        return list((await session.scalars(select(SurveyResponse))).all())


async def complaints(db: Database) -> list[Complaint]:
    async with db.read() as session:
        return list((await session.scalars(select(Complaint).order_by(Complaint.id))).all())


async def satisfactions(db: Database) -> list[int | None]:
    async with db.read() as session:
        return list((await session.scalars(select(Visit.satisfaction).order_by(Visit.id))).all())


async def state_of(db: Database, address: str) -> dict[str, object] | None:
    async with db.read() as session:
        row = await session.get(ConversationState, (TG, address))
    return None if row is None else {"flow": row.flow, **row.data}


async def test_survey_score_and_comment(db: Database, shop_config: ShopConfig) -> None:
    c = chat(db, shop_config)
    member_id, (old, new) = await member_with_visits(
        db, "M1", [date(2026, 10, 1), date(2026, 11, 20)]
    )
    await link_chat(c, member_id, "1001")

    asked = await c.handle(command("1001", "survey"))
    assert "2026年11月20日" in said(asked) and "总店" in said(asked)
    assert "0" in said(asked) and "10" in said(asked)
    rows = asked[0].buttons
    assert [len(row) for row in rows] == [6, 5]
    assert [b.label for row in rows for b in row] == [str(n) for n in range(11)]
    assert buttons(asked) == [f"feedback:score:{new}:{n}" for n in range(11)]

    thanked = await c.handle(press("1001", f"feedback:score:{new}:3"))
    assert "很抱歉" in said(thanked) and "3 分" in said(thanked)
    assert buttons(thanked) == ["feedback:skip"]
    assert thanked[0].all_buttons()[0].label == "不用了，谢谢"
    [response] = await answers(db)
    assert (response.member_id, response.visit_id, response.score) == (member_id, new, 3)
    assert response.channel == TG and response.comment is None
    assert await satisfactions(db) == [None, 3]
    assert await state_of(db, "1001") == {
        "flow": "feedback",
        "await": "comment",
        "response_id": response.id,
    }

    saved = await c.handle(text("1001", "  等了一个多小时，前台也没人招呼  "))
    assert "收到您的留言" in said(saved)
    assert "go:survey" in buttons(saved)  # back to the menu
    assert [a.comment for a in await answers(db)] == ["等了一个多小时，前台也没人招呼"]
    assert await state_of(db, "1001") is None
    later = await c.handle(text("1001", "还有一句"))
    assert [a.comment for a in await answers(db)] == ["等了一个多小时，前台也没人招呼"]
    assert "没太明白" in said(later)

    again = await c.handle(text("1001", "评价"))
    assert "已经" in said(again) and "3 分" in said(again)
    assert not any(data.startswith("feedback:score") for data in buttons(again))
    assert len(await answers(db)) == 1 and old != new


async def test_a_score_button_works_without_any_state(
    db: Database, shop_config: ShopConfig
) -> None:
    """The scheduler's survey arrives in a chat that never asked for it."""
    c = chat(db, shop_config)
    member_id, (old, _new) = await member_with_visits(
        db, "M1", [date(2026, 10, 1), date(2026, 11, 20)]
    )
    await link_chat(c, member_id, "1001")
    assert await state_of(db, "1001") is None

    thanked = await c.handle(press("1001", f"feedback:score:{old}:10"))
    assert "太感谢了" in said(thanked)
    assert [(a.visit_id, a.score) for a in await answers(db)] == [(old, 10)]
    assert await satisfactions(db) == [10, None]

    skipped = await c.handle(press("1001", "feedback:skip"))
    assert "再次感谢" in said(skipped)
    assert await state_of(db, "1001") is None

    # Tapping another score on the same old message changes nothing.
    twice = await c.handle(press("1001", f"feedback:score:{old}:0"))
    assert "10 分" in said(twice)
    assert [(a.visit_id, a.score) for a in await answers(db)] == [(old, 10)]
    assert await satisfactions(db) == [10, None]


@pytest.mark.parametrize(
    "forged",
    [
        "feedback:score:{other}:9",  # another member's visit
        "feedback:score:{mine}:11",
        "feedback:score:{mine}:x",
        "feedback:score:x:9",
        "feedback:score:{mine}",
        "feedback:score:{mine}:9:9",
        "feedback:score:0:9",
        "feedback:score:999999:9",
        "feedback:score:{mine}:-1",
        "feedback:score:{mine}:+9",
    ],
)
async def test_forged_score_buttons_write_nothing(
    db: Database, shop_config: ShopConfig, forged: str
) -> None:
    c = chat(db, shop_config)
    member_id, (mine,) = await member_with_visits(db, "M1", [date(2026, 11, 20)])
    _other_member, (other,) = await member_with_visits(db, "M2", [date(2026, 11, 21)])
    await link_chat(c, member_id, "1001")

    replies = await c.handle(press("1001", forged.format(mine=mine, other=other)))

    assert "按钮已经过期" in said(replies)
    assert "go:survey" in buttons(replies)
    assert await answers(db) == []
    assert await satisfactions(db) == [None, None]
    assert await state_of(db, "1001") is None


async def test_no_visit_yet_gets_a_friendly_note(db: Database, shop_config: ShopConfig) -> None:
    c = chat(db, shop_config)
    member_id, _ = await member_with_visits(db, "M1", [])
    await link_chat(c, member_id, "1001")
    replies = await c.handle(press("1001", "go:survey"))
    assert "还没有查到您的到店服务记录" in said(replies)
    assert not any(data.startswith("feedback:") for data in buttons(replies))
    assert await answers(db) == []


async def test_a_menu_word_while_a_comment_is_awaited_is_not_a_comment(
    db: Database, shop_config: ShopConfig
) -> None:
    c = chat(db, shop_config)
    member_id, (visit,) = await member_with_visits(db, "M1", [date(2026, 11, 20)])
    await link_chat(c, member_id, "1001")
    await c.handle(press("1001", f"feedback:score:{visit}:8"))
    menu = await c.handle(text("1001", "菜单"))
    assert "请选择您需要的服务" in said(menu)
    assert [a.comment for a in await answers(db)] == [None]
    assert await state_of(db, "1001") is None


async def test_complaint_by_keyword_then_free_text(db: Database, shop_config: ShopConfig) -> None:
    c = chat(db, shop_config)
    member_id, _ = await member_with_visits(db, "M1", [date(2026, 11, 20)])
    await link_chat(c, member_id, "1001")

    asked = await c.handle(text("1001", "投诉"))
    assert "请直接回复文字" in said(asked)
    assert buttons(asked) == ["go:cancel"]
    assert await state_of(db, "1001") == {"flow": "feedback", "await": "complaint"}

    filed = await c.handle(text("1001", " 洗车后车身还有很多水渍，轮毂也没擦 "))
    [complaint] = await complaints(db)
    assert (complaint.member_id, complaint.channel, complaint.status) == (member_id, TG, "open")
    assert complaint.body == "洗车后车身还有很多水渍，轮毂也没擦"
    assert f"编号 {complaint.id}" in said(filed) and "工作人员会尽快" in said(filed)
    assert await state_of(db, "1001") is None

    # The next words are chat again, not a second complaint.
    await c.handle(text("1001", "谢谢"))
    assert len(await complaints(db)) == 1


async def test_control_characters_never_reach_a_stored_complaint(
    db: Database, shop_config: ShopConfig
) -> None:
    """What a member types is stripped of escape sequences, control characters and bidi
    overrides where it enters the chat core, for every channel: the staff terminal that lists
    complaints never runs them, and a NUL never reaches PostgreSQL. Line breaks stay."""
    c = chat(db, shop_config)
    member_id, _ = await member_with_visits(db, "M1", [date(2026, 11, 20)])
    await link_chat(c, member_id, "1001")
    await c.handle(text("1001", "投诉"))
    await c.handle(text("1001", "\x1b[2J洗车\u202e不干净\x00\r\n轮毂\x1b]0;x\x07也没擦\x85"))
    await c.handle(command("1001", "complaint", "电话\u2066打不通\x07"))
    assert [x.body for x in await complaints(db)] == ["洗车不干净\n轮毂也没擦", "电话打不通"]


async def test_complaint_command_with_text_cancel_and_empty_text(
    db: Database, shop_config: ShopConfig
) -> None:
    c = chat(db, shop_config)
    member_id, _ = await member_with_visits(db, "M1", [])
    await link_chat(c, member_id, "1001")

    direct = await c.handle(command("1001", "complaint", "电话一直打不通"))
    assert "编号" in said(direct)
    assert [x.body for x in await complaints(db)] == ["电话一直打不通"]

    await c.handle(text("1001", "建议"))
    blank = await c.handle(text("1001", "   "))
    assert "请用文字描述" in said(blank)
    assert await state_of(db, "1001") == {"flow": "feedback", "await": "complaint"}
    await c.handle(press("1001", "go:cancel"))
    assert await state_of(db, "1001") is None
    await c.handle(text("1001", "算了不说了"))
    assert len(await complaints(db)) == 1


async def test_an_unbound_chat_is_told_how_to_bind(db: Database, shop_config: ShopConfig) -> None:
    c = chat(db, shop_config)
    _member_id, (visit,) = await member_with_visits(db, "M1", [date(2026, 11, 20)])
    for event in (text("9009", "投诉"), press("9009", f"feedback:score:{visit}:9")):
        replies = await c.handle(event)
        assert "绑定" in said(replies)
    assert await answers(db) == [] and await complaints(db) == []


async def test_the_flow_in_english(db: Database, shop_config: ShopConfig) -> None:
    c = chat(db, shop_config)
    member_id, (visit,) = await member_with_visits(db, "M1", [date(2026, 11, 20)], locale="en")
    await link_chat(c, member_id, "1001")

    asked = await c.handle(text("1001", "survey"))
    assert "Nov 20, 2026" in said(asked) and "recommend us" in said(asked)
    thanked = await c.handle(press("1001", f"feedback:score:{visit}:9"))
    assert "Thank you so much" in said(thanked)
    assert thanked[0].all_buttons()[0].label == "No thanks"
    saved = await c.handle(text("1001", "Great wash"))
    assert "thank you for your comment" in said(saved)
    already = await c.handle(command("1001", "survey"))
    assert "already rated" in said(already) and "9 out of 10" in said(already)
    skipped = await c.handle(press("1001", "feedback:skip"))
    assert "Thanks again" in said(skipped)
    ask = await c.handle(command("1001", "complaint"))
    assert "what happened" in said(ask)
    filed = await c.handle(text("1001", "Nobody answered the phone"))
    assert "We've received your feedback" in said(filed)


def test_every_feedback_template_exists_and_renders_in_both_locales() -> None:
    renderer = Renderer()
    keys = {
        path.stem
        for locale in LOCALES
        for path in (TEMPLATES_DIR / locale / "chat").glob("feedback_*.j2")
    }
    assert len(keys) == 10
    contexts: dict[str, dict[str, object]] = {
        "feedback_survey": {"visit": {"visited_on": date(2026, 11, 20), "store_name": ""}},
        "feedback_already": {"score": 7},
        "feedback_thanks": {"score": 7, "already": False},
        "feedback_complaint_ask": {"again": False},
        "feedback_complaint_filed": {"complaint": {"id": 12}},
        "feedback_labels": {"name": "no_thanks"},
    }
    for key in sorted(keys):
        rendered = []
        for locale in LOCALES:
            assert Path(TEMPLATES_DIR / locale / "chat" / f"{key}.j2").is_file(), (key, locale)
            context = {"member": {"name": "", "member_ref": "M1"}, **contexts.get(key, {})}
            rendered.append(renderer.render(f"chat/{key}", locale, context, "wechat"))
        assert all(rendered) and rendered[0] != rendered[1], key
