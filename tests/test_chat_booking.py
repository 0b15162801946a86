"""Booking in the chat, driven exactly as a channel would: store, service, day, time, car and
confirm buttons; capacity shown and kept under concurrent taps; a double tap books once; listing,
cancelling and rescheduling with the cut-off; stale and forged buttons; a restart mid-walk. On
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bot.conversation import BUTTON, COMMAND, TEXT, Chat, Event
from bot.flows import account, booking
from db.models import Booking, Vehicle
from db.session import Database
from domain import binding
from domain.messages import TEMPLATES_DIR
from domain.outgoing import Button, Reply
from domain.shop import ShopConfig
from tests.support.builders import add_car, add_store, link_chat, main_store, new_member

NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # Tuesday 09:00 in Shanghai
WED, THU = date(2026, 12, 2), date(2026, 12, 3)
TG = "telegram"
FULL = "这个时段刚被约满了，请换一个时间。"
STALE = "这个按钮已经过期了"


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


def make_chat(db: Database, config: ShopConfig, clock: Clock | None = None) -> Chat:
    return Chat(db, config, flows=[account.FLOW, booking.FLOW], clock=clock or Clock())


async def member_chat(
    chat: Chat, db: Database, n: int, plates: tuple[str, ...] = (), locale: str = "zh_CN"
) -> tuple[int, str]:
    member_id = await new_member(db, f"M{n}", f"1381234{n:04d}", locale=locale)
    for plate in plates:
        await add_car(db, member_id, plate, make="大众", model="帕萨特")
    address = str(1000 + n)
    await link_chat(chat, member_id, address)
    return member_id, address


async def say(chat: Chat, address: str, text: str) -> list[Reply]:
    return await chat.handle(Event(TG, address, TEXT, text=text))


async def press(chat: Chat, address: str, data: str) -> list[Reply]:
    return await chat.handle(Event(TG, address, BUTTON, data=data))


def button(reply: Reply, label: str) -> Button:
    """The button a member would tap, found by what it says."""
    found = [b for b in reply.all_buttons() if b.label == label]
    assert found, f"no button {label!r} in {[b.label for b in reply.all_buttons()]}"
    return found[0]


def labels(reply: Reply) -> list[str]:
    return [b.label for b in reply.all_buttons()]


async def tap(chat: Chat, address: str, reply: Reply, label: str) -> list[Reply]:
    return await press(chat, address, button(reply, label).data)


async def to_slots(
    chat: Chat, address: str, service: str = "精致洗车", day: str = "周三 12/2"
) -> Reply:
    """预约 → service → day: the slot keyboard the member sees."""
    (services,) = await say(chat, address, "预约")
    (days,) = await tap(chat, address, services, service)
    (slots,) = await tap(chat, address, days, day)
    return slots


async def book_at(chat: Chat, address: str, time_label: str, **walk: str) -> list[Reply]:
    slots = await to_slots(chat, address, **walk)
    (summary,) = await tap(chat, address, slots, time_label)
    return await tap(chat, address, summary, "✅ 确认")


async def rows(db: Database, **where: object) -> list[Booking]:
    async with db.read() as session:
        query = select(Booking).order_by(Booking.id)
        for name, value in where.items():
            query = query.where(getattr(Booking, name) == value)
        return list((await session.scalars(query)).all())


def shanghai(day: date, hh: int, mm: int = 0) -> datetime:
    """A Shanghai wall-clock time as the UTC instant the database keeps."""
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=UTC) - timedelta(hours=8)


# ---------------------------------------------------------------- booking


async def test_a_member_books_a_slot_step_by_step(db: Database, shop_config: ShopConfig) -> None:
    chat = make_chat(db, shop_config)
    member_id, address = await member_chat(chat, db, 1, plates=("沪A12345",))

    (services,) = await say(chat, address, "预约")
    # One store in the default chain: straight to the services.
    assert "总店" in services.text and "精致洗车：约 30 分钟，参考价 ¥45.00" in services.text
    assert "精致洗车" in labels(services) and "小保养（机油机滤）" in labels(services)

    (days,) = await tap(chat, address, services, "精致洗车")
    day_labels = [label for label in labels(days) if "/" in label]
    assert day_labels[:3] == ["周二 12/1", "周三 12/2", "周四 12/3"]
    assert len(day_labels) == 14 and "请选择日期" in days.text

    (slots,) = await tap(chat, address, days, "周三 12/2")
    assert "2026年12月2日星期三" in slots.text and "第 1/2 页" in slots.text
    times = [label for label in labels(slots) if "余" in label]
    assert times[0] == "09:00 · 余3" and times[-1] == "14:30 · 余3" and len(times) == 12
    (later,) = await tap(chat, address, slots, "更晚 »")
    later_times = [label for label in labels(later) if "余" in label]
    assert later_times == [f"{h}:{m} · 余3" for h in (15, 16, 17) for m in ("00", "30")]
    assert "« 更早" in labels(later) and "更晚 »" not in labels(later)

    # One car: no car step, straight to the summary.
    (summary,) = await tap(chat, address, slots, "10:00 · 余3")
    assert "请确认预约信息" in summary.text
    for part in ("总店", "精致洗车", "2026年12月2日星期三 10:00", "沪A***45", "¥45.00"):
        assert part in summary.text
    assert "沪A12345" not in summary.text
    assert await rows(db) == []

    (done,) = await tap(chat, address, summary, "✅ 确认")
    (row,) = await rows(db)
    assert row.member_id == member_id and row.store_id == await main_store(db)
    assert row.service_code == "wash" and row.status == "booked" and row.source == "chat"
    assert row.starts_at == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    assert row.ends_at - row.starts_at == timedelta(minutes=30)
    assert row.vehicle_id is not None
    assert "预约成功" in done.text and f"预约号：B{row.id:06d}" in done.text
    assert "2026年12月2日星期三 10:00" in done.text and "总店" in done.text
    assert "🗓 我的预约" in labels(done)


async def test_the_slot_list_shows_capacity_going_down(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = make_chat(db, shop_config)
    addresses = [(await member_chat(chat, db, n))[1] for n in range(1, 5)]
    seen = []
    for address in addresses[:3]:
        slots = await to_slots(chat, address, service="小保养（机油机滤）")
        seen.append([label for label in labels(slots) if label.startswith("10:00")])
        (summary,) = await tap(chat, address, slots, seen[-1][0])
        (done,) = await tap(chat, address, summary, "✅ 确认")
        assert "预约成功" in done.text
    assert seen == [["10:00 · 余3"], ["10:00 · 余2"], ["10:00 · 余1"]]
    slots = await to_slots(chat, addresses[3], service="小保养（机油机滤）")
    # Full: not offered; the hour-long neighbours that overlap it are full too.
    assert not [label for label in labels(slots) if label.startswith(("10:00", "09:30"))]
    assert "10:30 · 余2" not in labels(slots) and "11:00 · 余3" in labels(slots)
    assert len(await rows(db)) == 3


async def test_a_double_tap_on_confirm_books_once(db: Database, shop_config: ShopConfig) -> None:
    chat = make_chat(db, shop_config)
    _member, address = await member_chat(chat, db, 1)
    slots = await to_slots(chat, address)
    (summary,) = await tap(chat, address, slots, "11:00 · 余3")
    ok = button(summary, "✅ 确认").data
    async with db.read() as session:
        before = await binding.load_state(session, TG, address, NOW)
    assert before is not None and "done" not in before.data
    racing = await asyncio.gather(press(chat, address, ok), press(chat, address, ok))
    again = await press(chat, address, ok)
    # The worst race: a second worker read the walk before the first one saved it as booked.
    async with db.transaction() as session:
        await binding.save_state(session, TG, address, before.flow, before.data, NOW)
    late = await press(chat, address, ok)
    (row,) = await rows(db)
    for replies in (*racing, again, late):
        assert "预约成功" in replies[0].text and f"B{row.id:06d}" in replies[0].text


async def test_a_restart_continues_a_half_finished_booking(
    db: Database, shop_config: ShopConfig
) -> None:
    first = make_chat(db, shop_config)
    member_id, address = await member_chat(first, db, 1)
    slots = await to_slots(first, address)
    await first.db.dispose()  # the process goes away; the database stays

    restarted = make_chat(db, shop_config)
    (later,) = await tap(restarted, address, slots, "更晚 »")
    (summary,) = await tap(restarted, address, later, "16:30 · 余3")
    assert "2026年12月2日星期三 16:30" in summary.text
    (done,) = await tap(make_chat(db, shop_config), address, summary, "✅ 确认")
    assert "预约成功" in done.text
    (row,) = await rows(db)
    assert row.member_id == member_id and row.starts_at == shanghai(WED, 16, 30)


async def test_another_store_in_its_own_time_zone_and_a_choice_of_cars(
    db: Database, shop_config: ShopConfig
) -> None:
    hours = {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat")}
    tokyo = await add_store(
        db, "tokyo", "东京店", timezone="Asia/Tokyo", opening_hours=hours, address="一号"
    )
    chat = make_chat(db, shop_config)
    member_id, address = await member_chat(chat, db, 1, plates=("沪A12345", "沪B67890"))

    (stores,) = await say(chat, address, "预约")
    assert labels(stores)[:2] == ["总店", "东京店"] and "请选择要去的门店" in stores.text
    (services,) = await tap(chat, address, stores, "东京店")
    (days,) = await tap(chat, address, services, "精致洗车")
    (slots,) = await tap(chat, address, days, "周三 12/2")
    # One bay in Tokyo; 10:00 there is 09:00 in Shanghai.
    (cars,) = await tap(chat, address, slots, "10:00 · 余1")
    assert labels(cars)[:2] == ["沪A***45 大众 帕萨特", "沪B***90 大众 帕萨特"]
    (summary,) = await tap(chat, address, cars, "沪B***90 大众 帕萨特")
    assert "东京店" in summary.text and "2026年12月2日星期三 10:00" in summary.text
    assert "沪B***90" in summary.text
    (done,) = await tap(chat, address, summary, "✅ 确认")
    assert "预约成功" in done.text and "2026年12月2日星期三 10:00" in done.text
    (row,) = await rows(db)
    assert row.store_id == tokyo and row.starts_at == datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
    async with db.read() as session:
        second = await session.scalar(select(Vehicle.id).where(Vehicle.plate == "沪B67890"))
    assert row.vehicle_id == second and row.member_id == member_id


async def test_the_walk_in_english(db: Database, shop_config: ShopConfig) -> None:
    chat = make_chat(db, shop_config)
    _member, address = await member_chat(chat, db, 1, plates=("沪A12345",), locale="en")
    (services,) = await chat.handle(Event(TG, address, COMMAND, command="book"))
    assert "Car wash: about 30 min, list price ¥45.00" in services.text
    (days,) = await tap(chat, address, services, "Car wash")
    (slots,) = await tap(chat, address, days, "Wed 2 Dec")
    assert "Times on Wednesday, December 2, 2026" in slots.text
    (later,) = await tap(chat, address, slots, "Later »")
    (summary,) = await tap(chat, address, later, "17:30 · 3 left")
    assert "Time: Wednesday, December 2, 2026 at 17:30" in summary.text
    assert "Car: 沪A***45" in summary.text
    (done,) = await tap(chat, address, summary, "✅ Confirm")
    assert "You're booked!" in done.text and "Booking ref: B" in done.text
    (listing,) = await say(chat, address, "my bookings")
    assert (
        "Your bookings:" in listing.text and "Wednesday, December 2, 2026 at 17:30" in listing.text
    )
    (ask,) = await tap(chat, address, listing, "✖ Cancel #1")
    assert ask.text.startswith("Cancel this booking?")
    (cancelled,) = await tap(chat, address, ask, "✅ Yes, cancel it")
    assert "is cancelled" in cancelled.text
    (empty,) = await say(chat, address, "bookings")
    assert "You have no upcoming bookings." in empty.text


def test_every_booking_template_exists_in_both_locales() -> None:
    zh = {p.name for p in (TEMPLATES_DIR / "zh_CN" / "chat").glob("booking_*.j2")}
    en = {p.name for p in (TEMPLATES_DIR / "en" / "chat").glob("booking_*.j2")}
    assert zh == en and "booking_labels.j2" in zh and len(zh) >= 10
    assert all(Path(TEMPLATES_DIR / "en" / "chat" / name).read_text().strip() for name in en)


# ---------------------------------------------------------------- capacity under concurrency


async def test_twenty_members_confirm_the_last_three_bays_at_once(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = make_chat(db, shop_config)
    confirms: list[tuple[str, str]] = []
    for n in range(1, 21):
        _member, address = await member_chat(chat, db, n)
        slots = await to_slots(chat, address, service="小保养（机油机滤）", day="周四 12/3")
        (summary,) = await tap(chat, address, slots, "10:00 · 余3")
        confirms.append((address, button(summary, "✅ 确认").data))

    outcomes = await asyncio.gather(*(press(chat, address, data) for address, data in confirms))

    booked = [replies for replies in outcomes if "预约成功" in replies[0].text]
    refused = [replies for replies in outcomes if replies[0].text == FULL]
    assert len(booked) == 3 and len(refused) == 17
    for replies in refused:
        # The refusal comes with that day's times as they are now: 10:00 is gone.
        assert "2026年12月3日星期四" in replies[1].text
        assert not [label for label in labels(replies[1]) if label.startswith("10:00")]
    assert len(await rows(db, status="booked", starts_at=shanghai(THU, 10))) == 3
    assert len(await rows(db)) == 3


# ---------------------------------------------------------------- my bookings


async def test_list_cancel_and_free_text(db: Database, shop_config: ShopConfig) -> None:
    chat = make_chat(db, shop_config)
    _member, address = await member_chat(chat, db, 1)
    await book_at(chat, address, "10:00 · 余3")
    (row,) = await rows(db)

    (listing,) = await say(chat, address, "取消预约")
    assert "您的预约" in listing.text and "2026年12月2日星期三 10:00" in listing.text
    assert f"预约号 B{row.id:06d}" in listing.text and "精致洗车 · 总店" in listing.text
    assert labels(listing)[:2] == ["🔄 改约 1", "✖ 取消 1"]

    (ask,) = await tap(chat, address, listing, "✖ 取消 1")
    assert "确定要取消这个预约吗" in ask.text and labels(ask) == ["✅ 确认取消", "↩ 保留预约"]
    assert (await rows(db))[0].status == "booked"
    (cancelled,) = await tap(chat, address, ask, "✅ 确认取消")
    assert f"已为您取消预约 B{row.id:06d}" in cancelled.text
    assert [r.status for r in await rows(db)] == ["cancelled"]
    (again,) = await tap(chat, address, ask, "✅ 确认取消")  # a second tap: still just cancelled
    assert "已为您取消预约" in again.text
    for label in ("✖ 取消 1", "🔄 改约 1"):  # the old list's buttons
        (refused,) = await tap(chat, address, listing, label)
        assert refused.text == "这个预约已经取消或完成了。"
    (empty,) = await say(chat, address, "我的预约")
    assert "您目前没有待到店的预约" in empty.text and "📅 预约服务" in labels(empty)
    # The freed bay is offered again.
    slots = await to_slots(chat, address)
    assert "10:00 · 余3" in labels(slots)


async def test_reschedule_moves_to_a_new_day_and_time(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = make_chat(db, shop_config)
    _member, address = await member_chat(chat, db, 1, plates=("沪A12345",))
    await book_at(chat, address, "10:00 · 余3", service="小保养（机油机滤）")
    (old,) = await rows(db)

    (listing,) = await say(chat, address, "我的预约")
    (days,) = await tap(chat, address, listing, "🔄 改约 1")
    assert "改约：原定 2026年12月2日星期三 10:00" in days.text
    (slots,) = await tap(chat, address, days, "周四 12/3")
    (summary,) = await tap(chat, address, slots, "14:00 · 余3")
    assert "请确认改约" in summary.text and "改为：2026年12月3日星期四 14:00" in summary.text
    (done,) = await tap(chat, address, summary, "✅ 确认")
    assert "改约成功" in done.text

    previous, moved = await rows(db)
    assert previous.id == old.id and previous.status == "cancelled"
    assert moved.status == "booked" and moved.starts_at == shanghai(THU, 14)
    assert (moved.store_id, moved.service_code, moved.vehicle_id) == (
        old.store_id,
        "oil_service",
        old.vehicle_id,
    )
    assert f"B{moved.id:06d}" in done.text
    (listing,) = await say(chat, address, "我的预约")
    assert "2026年12月3日星期四 14:00" in listing.text and "12月2日" not in listing.text


async def test_no_change_online_after_the_cut_off(db: Database, shop_config: ShopConfig) -> None:
    clock = Clock()
    chat = make_chat(db, shop_config, clock)
    _member, address = await member_chat(chat, db, 1)
    await book_at(chat, address, "10:00 · 余3")
    (listing,) = await say(chat, address, "我的预约")
    (ask,) = await tap(chat, address, listing, "✖ 取消 1")

    clock.now = shanghai(WED, 8, 30)  # 90 minutes before; the cut-off is 2 hours
    (refused,) = await tap(chat, address, ask, "✅ 确认取消")
    assert "无法在线修改，请致电门店" in refused.text and "2 小时" in refused.text
    (listing,) = await say(chat, address, "我的预约")
    (refused_ask,) = await tap(chat, address, listing, "✖ 取消 1")
    (refused_move,) = await tap(chat, address, listing, "🔄 改约 1")
    for reply in (refused_ask, refused_move):
        assert "请致电门店" in reply.text
    assert [(r.status, r.starts_at) for r in await rows(db)] == [("booked", shanghai(WED, 10))]


# ---------------------------------------------------------------- stale and forged buttons


async def test_past_days_and_forged_buttons_book_nothing(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = make_chat(db, shop_config)
    _member, address = await member_chat(chat, db, 1)
    slots = await to_slots(chat, address)
    good = button(slots, "10:00 · 余3").data
    _flow, _action, token, store, _day, _time = good.split(":")

    (past,) = await press(chat, address, f"booking:day:{token}:{store}:20261130:0")
    assert "这一天已经不能预约了" in past.text and "周三 12/2" in labels(past)
    (yesterday,) = await press(chat, address, f"booking:slot:{token}:{store}:20261130:1000")
    assert "这一天已经不能预约了" in yesterday.text

    for hhmm in ("0815", "1010", "1800", "0700"):
        (gone,) = await press(chat, address, f"booking:slot:{token}:{store}:20261202:{hhmm}")
        assert "这个时间已经约不了了" in gone.text and "10:00 · 余3" in labels(gone)

    forged = [
        f"booking:slot:{token}:{int(store) + 1}:20261202:1000",  # another store
        f"booking:slot:{token}:{store}:20261302:1000",  # no such day
        f"booking:slot:{token}:{store}:20261202:2500",  # no such time
        f"booking:slot:{token}:{store}:20261202",  # missing the time
        f"booking:slot:{token}:{store}:2026-12-02:1000",
        f"booking:slot:deadbeef:{store}:20261202:1000",  # another walk
        f"booking:ok:{token}:20261202:1000",  # confirming a time never chosen
        "booking:slot:zz",
        "booking:cancel:999999",  # not the member's booking
        "booking:move:abc",
        "booking:nothing:1",
        "booking:slot:a b",  # not even valid button data
    ]
    for data in forged:
        replies = await press(chat, address, data)
        assert STALE in replies[0].text, data
        assert "💰 我的积分" in labels(replies[0])
    assert await rows(db) == []
    # The real button still works afterwards.
    (summary,) = await press(chat, address, good)
    assert "2026年12月2日星期三 10:00" in summary.text


async def test_an_old_keyboard_is_stale_once_a_new_booking_starts(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = make_chat(db, shop_config)
    _member, address = await member_chat(chat, db, 1)
    old_slots = await to_slots(chat, address)
    await say(chat, address, "预约")
    (stale,) = await tap(chat, address, old_slots, "10:00 · 余3")
    assert STALE in stale.text
    # After the walk is finished, its own step buttons are stale too.
    slots = await to_slots(chat, address)
    (summary,) = await tap(chat, address, slots, "10:00 · 余3")
    await tap(chat, address, summary, "✅ 确认")
    (late,) = await tap(chat, address, slots, "11:00 · 余3")
    assert STALE in late.text
    assert len(await rows(db)) == 1


async def test_another_members_booking_cannot_be_touched(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = make_chat(db, shop_config)
    _owner, owner_chat = await member_chat(chat, db, 1)
    _other, other_chat = await member_chat(chat, db, 2)
    await book_at(chat, owner_chat, "10:00 · 余3")
    (row,) = await rows(db)
    for data in (
        f"booking:cancel:{row.id}",
        f"booking:cancelok:{row.id}",
        f"booking:move:{row.id}",
    ):
        (reply,) = await press(chat, other_chat, data)
        assert STALE in reply.text
    assert [r.status for r in await rows(db)] == ["booked"]


async def test_a_member_cannot_book_two_places_at_once(
    db: Database, shop_config: ShopConfig
) -> None:
    chat = make_chat(db, shop_config)
    _member, address = await member_chat(chat, db, 1)
    await book_at(chat, address, "10:00 · 余3", service="小保养（机油机滤）")
    replies = await book_at(chat, address, "10:30 · 余2")
    assert replies[0].text == "您在这个时间已经有一个预约了。"
    assert "2026年12月2日星期三" in replies[1].text and "11:00 · 余3" in labels(replies[1])
    assert len(await rows(db)) == 1
