"""The clerk's member page shows stored value, punch cards and valid coupons, and nothing that is
used up, expired or someone else's."""

from __future__ import annotations

from datetime import date, timedelta

from rich.console import Console

from db.session import Database
from domain import coupons, members, points, profiles, punchcards, rewards, scores, visits, wallet
from domain.shop import LoyaltyRules
from memberbot import staffview

RULES = LoyaltyRules()
DAY = date(2026, 3, 1)


async def test_member_page_shows_wallet_cards_and_coupons(db: Database) -> None:
    async with db.transaction() as session:
        member = await members.create(session, member_ref="M1", name="钱先生", phone=None)
        other = await members.create(session, member_ref="M2", name="孙女士", phone=None)
        assert member.id is not None and other.id is not None
        await wallet.top_up(session, member.id, 123_450, actor="staff:1")
        await wallet.spend(session, member.id, 4_500, actor="staff:1")
        card = await punchcards.issue(
            session, member.id, "wash", 10, DAY + timedelta(days=200), None, "card:1"
        )
        await punchcards.issue(session, member.id, "wash", 5, DAY - timedelta(days=1), None)
        await punchcards.issue(session, other.id, "detailing", 3, None, None)
        assert card.id is not None
        await punchcards.use(
            session, card.id, member_id=member.id, store_id=None, today=DAY, key=None, actor="s"
        )
        await points.credit(session, member.id, 1_000, DAY, RULES)
        bought = await rewards.redeem(
            session, member.id, "oil_50", today=DAY, key="req:1", actor="member:app"
        )
        birthday = await coupons.issue(
            session,
            member.id,
            kind="percent",
            percent_off=20,
            valid_from=DAY,
            valid_until=DAY + timedelta(days=6),
            source="birthday",
        )
        lapsed = await coupons.issue(
            session,
            member.id,
            kind="value",
            value_cents=1_000,
            valid_from=DAY - timedelta(days=30),
            valid_until=DAY - timedelta(days=1),
            source="campaign",
        )
        theirs = await coupons.issue(
            session,
            other.id,
            kind="value",
            value_cents=1_000,
            valid_from=DAY,
            valid_until=DAY,
            source="campaign",
        )
    async with db.read() as session:
        view = await profiles.profile(session, member, DAY, RULES)
    assert view.stored_value_cents == 118_950
    assert [(s.card.id, s.remaining, s.card.total_uses) for s, _ in view.punch_cards] == [
        (card.id, 9, 10)
    ]
    assert [c.id for c, _ in view.coupons] == [birthday.id, bought.id]

    console = Console(record=True, width=160)
    staffview.render(console, view)
    page = console.export_text()
    assert "Stored value ¥1,189.50" in page
    assert "Car wash / 精致洗车" in page and "9 of 10" in page
    assert str(DAY + timedelta(days=200)) in page
    assert bought.code in page and "¥50.00 off from ¥300.00" in page
    assert "50 yuan off an oil service" in page and str(DAY + timedelta(days=89)) in page
    assert birthday.code in page and "20% off" in page and "birthday" in page
    assert lapsed.code not in page and theirs.code not in page
    assert "of 5" not in page and "Detailing" not in page


async def test_member_page_shows_last_nights_churn_risk_and_why(db: Database) -> None:
    async with db.transaction() as session:
        regular = await members.create(session, member_ref="R1", name="常客", phone=None)
        lapsed = await members.create(session, member_ref="L1", name="久违", phone=None)
        assert regular.id is not None and lapsed.id is not None
        for month in range(12):
            day = DAY - timedelta(days=30 * month + 1)
            await visits.record(session, regular.id, day, 30_000, RULES, services=["wash"])
        for month in range(6):
            day = DAY - timedelta(days=300 + 30 * month)
            await visits.record(session, lapsed.id, day, 30_000, RULES, services=["wash"])
    async with db.read() as session:
        before = await profiles.profile(session, lapsed, DAY, RULES)
    assert before.score is None  # nothing is shown before the nightly job has run
    async with db.transaction() as session:
        await scores.refresh(session, DAY)
    async with db.read() as session:
        page = await profiles.profile(session, lapsed, DAY, RULES)
        other = await profiles.profile(session, regular, DAY, RULES)
    assert page.score is not None and other.score is not None
    assert page.score.churn_risk > other.score.churn_risk
    console = Console(record=True, width=200)
    staffview.render(console, page)
    text = console.export_text()
    assert "churn risk" in text and "past their usual visit interval" in text
