"""The member's loyalty in the chat: points and what expires, history, tier, coupons, stored
value and punch cards, cars, and redeeming a reward that charges once however often the
confirmation is tapped; on SQLite and PostgreSQL, driven exactly as a channel would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from bot.conversation import BUTTON, COMMAND, TEXT, Chat, Event
from bot.flows import account, loyalty
from bot.flows import rewards as rewards_flow
from db.models import Coupon, PointsEntry, Vehicle
from db.session import Database
from domain import coupons, points, punchcards, visits, wallet
from domain.outgoing import Reply
from domain.shop import ShopConfig
from tests.support.builders import add_visit, link_chat, new_member

NOW = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
TODAY = date(2026, 3, 10)
TG = "telegram"
GENERIC_ERROR = ("抱歉，这个操作没有成功", "Sorry, that didn't work")


@dataclass
class Member:
    id: int
    address: str


def make_chat(db: Database, shop_config: ShopConfig) -> Chat:
    return Chat(
        db, shop_config, flows=[account.FLOW, loyalty.FLOW, rewards_flow.FLOW], clock=lambda: NOW
    )


async def rich_member(db: Database, chat: Chat, config: ShopConfig) -> Member:
    """2,600 points of which 300 lapse on 20 Mar 2026; Silver on ¥2,300 of rolling spend; a
    birthday coupon, ¥500 stored, a wash card with 9 of 10 left and one car."""
    member_id = await new_member(db, "M1", "13812345678")
    rules = config.loyalty
    await add_visit(db, member_id, date(2024, 3, 20), 30_000, rules)  # expires 2026-03-20
    await add_visit(db, member_id, date(2025, 6, 1), 150_000, rules)
    await add_visit(db, member_id, date(2026, 2, 1), 80_000, rules)  # crosses ¥2,000: Silver
    async with db.transaction() as session:
        await coupons.issue(
            session,
            member_id,
            kind=coupons.VALUE,
            value_cents=5_000,
            min_spend_cents=20_000,
            valid_from=date(2026, 3, 1),
            valid_until=date(2026, 3, 31),
            source="birthday",
        )
        await wallet.top_up(session, member_id, 50_000, actor="staff:1")
        card = await punchcards.issue(
            session, member_id, "wash", 10, date(2026, 12, 31), None, actor="staff:1"
        )
        assert card.id is not None
        await punchcards.use(
            session,
            card.id,
            member_id=member_id,
            store_id=None,
            today=date(2026, 3, 1),
            key="wash-1",
            actor="staff:1",
        )
        session.add(
            Vehicle(
                member_id=member_id,
                plate="沪A12345",
                make="大众",
                model="帕萨特",
                insurance_expiry=date(2026, 3, 25),
                inspection_due=date(2026, 9, 30),
            )
        )
    await link_chat(chat, member_id, "1001")
    return Member(member_id, "1001")


async def say(chat: Chat, address: str, text: str) -> list[Reply]:
    return await chat.handle(Event(TG, address, TEXT, text=text))


async def command(chat: Chat, address: str, name: str) -> list[Reply]:
    return await chat.handle(Event(TG, address, COMMAND, command=f"/{name}"))


async def press(chat: Chat, address: str, data: str) -> list[Reply]:
    return await chat.handle(Event(TG, address, BUTTON, data=data))


def only(replies: list[Reply]) -> Reply:
    assert len(replies) == 1
    assert not any(generic in replies[0].text for generic in GENERIC_ERROR), replies[0].text
    return replies[0]


def data_of(reply: Reply) -> list[str]:
    return [button.data for button in reply.all_buttons()]


def button_starting(reply: Reply, prefix: str) -> str:
    found = [data for data in data_of(reply) if data.startswith(prefix)]
    assert len(found) == 1, data_of(reply)
    return found[0]


async def balance(db: Database, member_id: int) -> int:
    async with db.read() as session:
        return await points.balance(session, member_id)


async def ledger(db: Database, member_id: int) -> list[tuple[str, int]]:
    async with db.read() as session:
        rows = await session.execute(
            select(PointsEntry.kind, PointsEntry.points)
            .where(PointsEntry.member_id == member_id)
            .order_by(PointsEntry.id)
        )
        return [(kind, amount) for kind, amount in rows.all()]


async def reward_coupons(db: Database, member_id: int) -> list[Coupon]:
    async with db.read() as session:
        rows = await session.scalars(
            select(Coupon).where(Coupon.member_id == member_id, Coupon.source == "reward")
        )
        return list(rows.all())


@pytest.fixture
def chat(db: Database, shop_config: ShopConfig) -> Chat:
    return make_chat(db, shop_config)


async def test_points_show_balance_and_what_expires_with_the_date(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    reply = only(await say(chat, member.address, "积分"))
    assert "2,600 积分" in reply.text
    assert "300 分将在 30 天内到期" in reply.text
    assert "2026年3月20日" in reply.text and "还有 10 天" in reply.text
    assert {"go:history", "go:rewards", "go:menu"} <= set(data_of(reply))

    only(await press(chat, member.address, "account:lang:en"))
    english = only(await command(chat, member.address, "points"))
    assert "You have 2,600 points" in english.text
    assert "300 of them expire within 30 days, the first on Mar 20, 2026" in english.text
    assert "in 10 days" in english.text
    assert english.all_buttons()[0].label == "📜 Points history"


async def test_history_lists_dated_signed_lines_in_words(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    reply = only(await command(chat, member.address, "history"))
    lines = reply.text.splitlines()
    assert "当前 2,600 分" in lines[0]
    assert any("2026年2月1日" in line and "+800" in line and "到店消费" in line for line in lines)
    assert any("2024年3月20日" in line and "+300" in line for line in lines)


async def test_tier_shows_name_privileges_spend_and_what_is_missing(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    reply = only(await say(chat, member.address, "会员等级"))
    assert "「银卡会员」" in reply.text
    assert "积分1.2倍" in reply.text and "每季度免费洗车1次" in reply.text
    assert "¥2,300.00" in reply.text  # the 2024 visit is outside the 12 months
    assert "再消费 ¥5,700.00 即可升级为「金卡会员」" in reply.text


async def test_top_tier_is_told_there_is_nothing_above(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member_id = await new_member(db, "M9", "13912345678", locale="en")
    await add_visit(db, member_id, date(2026, 1, 5), 2_500_000, shop_config.loyalty)
    await link_chat(chat, member_id, "9009")
    reply = only(await command(chat, "9009", "tier"))
    assert "You are a Diamond member" in reply.text and "Personal advisor" in reply.text
    assert "top tier" in reply.text and "more to reach" not in reply.text
    only(await press(chat, "9009", "account:lang:zh_CN"))
    chinese = only(await say(chat, "9009", "等级"))
    assert "「钻石会员」" in chinese.text and "最高等级" in chinese.text
    assert "再消费" not in chinese.text


async def test_coupons_list_terms_and_code(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    async with db.read() as session:
        (birthday,) = await coupons.valid_for_member(session, member.id, TODAY)
    reply = only(await say(chat, member.address, "优惠券"))
    assert "1 张可用优惠券" in reply.text and "生日礼券" in reply.text
    assert "抵扣 ¥50.00，满 ¥200.00 可用" in reply.text
    assert f"券码：{birthday.code}" in reply.text and "2026年3月31日" in reply.text


async def test_no_coupons_is_friendly_and_points_to_rewards(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member_id = await new_member(db, "M2", "13912345678")
    await link_chat(chat, member_id, "2002")
    reply = only(await command(chat, "2002", "coupons"))
    assert "还没有可用的优惠券" in reply.text
    assert "go:rewards" in data_of(reply)


async def test_wallet_shows_stored_value_and_punch_cards(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    reply = only(await say(chat, member.address, "储值"))
    assert "储值余额：¥500.00" in reply.text
    assert "精致洗车：剩余 9 次（共 10 次），2026年12月31日 到期" in reply.text


async def test_cars_show_the_own_plate_formatted_and_due_dates(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    reply = only(await say(chat, member.address, "我的车"))
    assert "沪A·12345　大众 帕萨特" in reply.text
    assert "保险到期：2026年3月25日（还有 15 天）" in reply.text
    assert "年检到期：2026年9月30日" in reply.text
    assert "下次保养" not in reply.text  # no maintenance on record: nothing is guessed


async def test_cars_show_when_the_next_service_is_due(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    async with db.transaction() as session:
        car = await session.scalar(select(Vehicle).where(Vehicle.member_id == member.id))
        assert car is not None
        await visits.record(
            session,
            member.id,
            date(2025, 10, 1),
            48_000,
            shop_config.loyalty,
            vehicle_id=car.id,
            services=["oil_service"],
            mileage_km=20_000,
        )
    reply = only(await say(chat, member.address, "我的车"))
    assert "下次保养：小保养（机油机滤） 2026年4月1日，还有 22 天" in reply.text


async def test_redeem_charges_once_however_often_confirm_is_tapped(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    catalogue = only(await say(chat, member.address, "兑换"))
    assert "现有 2,600 分" in catalogue.text
    assert "✅ 免费洗车券：300 分" in catalogue.text
    assert {"rewards:pick:free_wash", "rewards:pick:oil_50", "rewards:pick:detail_10pct"} <= set(
        data_of(catalogue)
    )

    confirm = only(await press(chat, member.address, "rewards:pick:free_wash"))
    assert "免费洗车券" in confirm.text and "兑换后剩余：2,300 分" in confirm.text
    assert await balance(db, member.id) == 2_600  # a pick spends nothing
    data = button_starting(confirm, "rewards:confirm:free_wash:")
    assert "go:rewards" in data_of(confirm)

    done = only(await press(chat, member.address, data))
    (coupon,) = await reward_coupons(db, member.id)
    assert "兑换成功" in done.text and f"券码：{coupon.code}" in done.text
    assert "剩余积分：2,300 分" in done.text
    assert await balance(db, member.id) == 2_300
    assert (coupon.value_cents, coupon.valid_until) == (4_500, date(2026, 6, 7))

    again = only(await press(chat, member.address, data))
    assert "已经完成" in again.text and f"券码：{coupon.code}" in again.text
    assert await balance(db, member.id) == 2_300
    assert [entry for entry in await ledger(db, member.id) if entry[0] == "redeem"] == [
        ("redeem", -300)
    ]
    assert len(await reward_coupons(db, member.id)) == 1

    history = only(await command(chat, member.address, "history"))
    assert "-300　兑换礼品：免费洗车券" in history.text
    listed = only(await command(chat, member.address, "coupons"))
    assert coupon.code in listed.text and "2 张可用优惠券" in listed.text


async def test_an_older_pick_cannot_be_confirmed_after_a_newer_one(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    first = only(await press(chat, member.address, "rewards:pick:free_wash"))
    old = button_starting(first, "rewards:confirm:")
    second = only(await press(chat, member.address, "rewards:pick:free_wash"))
    assert button_starting(second, "rewards:confirm:") != old
    stale = only(await press(chat, member.address, old))
    assert "过期" in stale.text
    assert await balance(db, member.id) == 2_600 and not await reward_coupons(db, member.id)


async def test_forged_unknown_and_unaffordable_change_nothing(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    before = await ledger(db, member.id)

    forged = only(await press(chat, member.address, "rewards:confirm:free_wash:0123456789ab"))
    assert "按钮已经过期" in forged.text
    unknown = only(await press(chat, member.address, "rewards:pick:gold_bar"))
    assert "没有找到这个礼品" in unknown.text and "积分没有变动" in unknown.text
    garbled = only(await press(chat, member.address, "rewards:confirm:free_wash:nonce"))
    assert "按钮已经过期" in garbled.text

    # A pick of one reward does not unlock another with the same nonce.
    picked = only(await press(chat, member.address, "rewards:pick:free_wash"))
    nonce = button_starting(picked, "rewards:confirm:").rsplit(":", 1)[1]
    swapped = only(await press(chat, member.address, f"rewards:confirm:detail_10pct:{nonce}"))
    assert "按钮已经过期" in swapped.text

    poor_id = await new_member(db, "M3", "13712345678")
    await add_visit(db, poor_id, date(2026, 3, 1), 20_000, shop_config.loyalty)
    await link_chat(chat, poor_id, "3003")
    short = only(await press(chat, "3003", "rewards:pick:free_wash"))
    assert "需要 300 分，您现有 200 分，还差 100 分" in short.text
    assert not any(d.startswith("rewards:confirm") for d in data_of(short))
    catalogue = only(await command(chat, "3003", "rewards"))
    assert "🔒 免费洗车券：300 分（还差 100 分）" in catalogue.text

    assert await ledger(db, member.id) == before
    assert await balance(db, poor_id) == 200
    assert not await reward_coupons(db, member.id) and not await reward_coupons(db, poor_id)


async def test_points_spent_between_pick_and_confirm_refuse_cleanly(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    picked = only(await press(chat, member.address, "rewards:pick:detail_10pct"))
    async with db.transaction() as session:  # paid a bill with points at the counter
        await points.debit(session, member.id, 2_000, TODAY, kind=points.OFFSET)
    refused = only(await press(chat, member.address, button_starting(picked, "rewards:confirm")))
    assert "还差 200 分" in refused.text
    assert await balance(db, member.id) == 600 and not await reward_coupons(db, member.id)


async def test_two_concurrent_confirms_redeem_once(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    picked = only(await press(chat, member.address, "rewards:pick:oil_50"))
    data = button_starting(picked, "rewards:confirm:oil_50:")
    first, second = await asyncio.gather(
        press(chat, member.address, data), press(chat, member.address, data)
    )
    (coupon,) = await reward_coupons(db, member.id)
    for reply in (only(first), only(second)):
        assert f"券码：{coupon.code}" in reply.text
    assert await balance(db, member.id) == 2_100
    assert [entry for entry in await ledger(db, member.id) if entry[0] == "redeem"] == [
        ("redeem", -500)
    ]


async def test_unbound_chat_is_told_how_to_bind(db: Database, chat: Chat) -> None:
    for replies in (
        await say(chat, "4004", "积分"),
        await command(chat, "4004", "cars"),
        await press(chat, "4004", "rewards:pick:free_wash"),
    ):
        reply = only(replies)
        assert "请先绑定您的会员身份" in reply.text
        assert reply.contact_button


async def test_every_reply_renders_in_english(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    """The English tour: every template of both flows, with real data."""
    member = await rich_member(db, chat, shop_config)
    only(await press(chat, member.address, "account:lang:en"))
    texts = {
        name: only(await command(chat, member.address, name)).text
        for name in ("points", "history", "tier", "coupons", "wallet", "cars", "rewards")
    }
    assert "Visit" in texts["history"] and "+800" in texts["history"]
    assert "You are a Silver member" in texts["tier"] and "¥5,700.00 more" in texts["tier"]
    assert "Birthday treat" in texts["coupons"] and "when you spend ¥200.00" in texts["coupons"]
    assert "Car wash: 9 of 10 left" in texts["wallet"]
    assert "沪A·12345  大众 帕萨特" in texts["cars"] and "(15 days left)" in texts["cars"]
    assert "✅ Free wash voucher: 300 points" in texts["rewards"]
    catalogue = only(await command(chat, member.address, "rewards"))
    labels = [b.label for b in catalogue.all_buttons()]
    assert "✅ 10% off detailing · 800 pts" in labels

    picked = only(await press(chat, member.address, "rewards:pick:detail_10pct"))
    assert "Left after: 1,800 points" in picked.text
    done = only(await press(chat, member.address, button_starting(picked, "rewards:confirm")))
    assert "🎉 Done! 800 points spent." in done.text and "Points left: 1,800" in done.text
    coupons_now = only(await command(chat, member.address, "coupons")).text
    assert "10% off detailing" in coupons_now and "10% off" in coupons_now
    unknown = only(await press(chat, member.address, "rewards:pick:nothing"))
    assert "That reward isn't available" in unknown.text
    again = only(await press(chat, member.address, button_starting(picked, "rewards:confirm")))
    assert "already done" in again.text

    poor_id = await new_member(db, "M6", "13612345678", locale="en")
    await link_chat(chat, poor_id, "6006")
    short = only(await press(chat, "6006", "rewards:pick:oil_50"))
    assert "it costs 500 points and you have 0, so 500 more" in short.text
    assert "no coupons yet" in only(await command(chat, "6006", "coupons")).text
    assert "no points yet" in only(await command(chat, "6006", "points")).text
    assert "No points yet" in only(await command(chat, "6006", "history")).text
    assert "No service cards" in only(await command(chat, "6006", "wallet")).text
    assert "No cars registered" in only(await command(chat, "6006", "cars")).text


async def test_empty_member_gets_friendly_zero_states(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member_id = await new_member(db, "M5", "13512345678")
    await link_chat(chat, member_id, "5005")
    assert "还没有可用积分" in only(await command(chat, "5005", "points")).text
    assert "还没有积分记录" in only(await command(chat, "5005", "history")).text
    assert "暂无可用的次卡" in only(await command(chat, "5005", "wallet")).text
    assert "还没有登记车辆" in only(await command(chat, "5005", "cars")).text
    tier = only(await command(chat, "5005", "tier")).text
    assert "「普通会员」" in tier and "再消费 ¥2,000.00 即可升级为「银卡会员」" in tier
    catalogue = only(await command(chat, "5005", "rewards"))
    assert "🔒 免费洗车券：300 分（还差 300 分）" in catalogue.text


async def test_chinese_percent_coupon_reads_as_zhe(
    db: Database, chat: Chat, shop_config: ShopConfig
) -> None:
    member = await rich_member(db, chat, shop_config)
    picked = only(await press(chat, member.address, "rewards:pick:detail_10pct"))
    only(await press(chat, member.address, button_starting(picked, "rewards:confirm")))
    listed = only(await command(chat, member.address, "coupons")).text
    assert "美容九折券" in listed and "9 折" in listed
    assert await balance(db, member.id) == 1_800
    async with db.read() as session:
        redeemed = await session.scalar(
            select(func.count()).where(PointsEntry.member_id == member.id, PointsEntry.points < 0)
        )
    assert redeemed == 1
