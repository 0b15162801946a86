"""Reminders about a member's standing with the chain: points about to expire, a tier just
reached, and a member gone quiet for long (the wake-up).

The amounts and tiers are the domain's own rules computed in SQL: points lapse by the ledger
rule of `domain.points`, a tier's spend is counted over `domain.tiers.window_start`, so the
message states what the member's own view shows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import case, exists, func, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import aliased

from db.models import Member, PointsEntry, Tier, TierChange, Visit
from domain import points
from domain.locales import localized
from domain.queries import date_literal
from domain.tiers import UPGRADE, window_start
from scheduler.ruleconfig import PointsExpiring, TierUpgrade, WakeUp
from scheduler.selectors.query import (
    MEMBER_COLUMNS,
    VISIT_COLUMNS,
    Candidate,
    CandidateQuery,
    ChainDay,
    candidate,
    common_context,
    member_may_receive,
    row_locale,
    visit_context,
)


def points_expiring(rule: PointsExpiring, chain: ChainDay) -> list[CandidateQuery]:
    """Members with a lot expiring exactly `days_before` days ahead, some of it unspent.

    The amount is what lapses on that day by the ledger rule of domain.points (lots expiring
    by then minus every debit, less the same for the day before), so a member told about an
    earlier lot is not told about it again here."""
    expiring_on = chain.day + timedelta(days=rule.days_before)
    holders = (
        select(PointsEntry.member_id)
        .where(PointsEntry.points > 0, PointsEntry.expires_on == date_literal(expiring_on))
        .distinct()
    )
    on_day = points.unspent_by(date_literal(expiring_on)) - points.unspent_by(
        date_literal(expiring_on - timedelta(days=1))
    )
    debits = func.coalesce(
        func.sum(case((PointsEntry.points < 0, -PointsEntry.points), else_=0)), 0
    )
    ledger = (
        select(
            PointsEntry.member_id.label("member_id"),
            func.coalesce(func.sum(PointsEntry.points), 0).label("balance"),
            on_day.label("expiring"),
            debits.label("debits"),
        )
        .where(PointsEntry.member_id.in_(holders))
        .group_by(PointsEntry.member_id)
        .subquery("ledger")
    )
    lots = (
        select(
            PointsEntry.member_id.label("member_id"),
            PointsEntry.expires_on.label("expires_on"),
            func.sum(PointsEntry.points)
            .over(partition_by=PointsEntry.member_id, order_by=PointsEntry.expires_on)
            .label("running"),
        )
        .where(
            PointsEntry.member_id.in_(holders),
            PointsEntry.points > 0,
            PointsEntry.expires_on.is_not(None),
        )
        .subquery("lots")
    )
    first_unspent = (
        select(lots.c.member_id, func.min(lots.c.expires_on).label("first"))
        .join(ledger, ledger.c.member_id == lots.c.member_id)
        .where(lots.c.running > ledger.c.debits)
        .group_by(lots.c.member_id)
        .subquery("first_unspent")
    )
    statement = (
        select(*MEMBER_COLUMNS, ledger.c.balance, ledger.c.expiring, first_unspent.c.first)
        .join(ledger, ledger.c.member_id == Member.id)
        .outerjoin(first_unspent, first_unspent.c.member_id == Member.id)
        .where(ledger.c.expiring > 0, *member_may_receive(rule))
        .order_by(Member.id)
    )

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        context = common_context(row, chain, locale)
        first = row.first
        context["points"] = {
            "balance": int(row.balance),
            "expiring": int(row.expiring),
            "expiring_on": expiring_on,
            "next_expiry": max(first, chain.day) if first is not None else expiring_on,
        }
        return [candidate(row, expiring_on.isoformat(), locale, context)]

    return [CandidateQuery(statement, to_candidates)]


def tier_upgrade(rule: TierUpgrade, chain: ChainDay) -> list[CandidateQuery]:
    """Upgrades recorded from `within_days` before the day through the day, for members who
    still hold the tier they were raised to."""
    before, after = aliased(Tier), aliased(Tier)
    spend = (
        select(func.coalesce(func.sum(Visit.amount_cents), 0))
        .where(
            Visit.member_id == Member.id,
            Visit.visited_on >= date_literal(window_start(chain.day)),
            Visit.visited_on <= date_literal(chain.day),
        )
        .scalar_subquery()
    )
    statement = (
        select(
            *MEMBER_COLUMNS,
            TierChange.id.label("change_id"),
            TierChange.to_tier.label("to_tier"),
            spend.label("spend"),
        )
        .join(Member, Member.id == TierChange.member_id)
        .join(before, before.code == TierChange.from_tier)
        .join(after, after.code == TierChange.to_tier)
        .where(
            after.rank > before.rank,
            TierChange.reason == UPGRADE,  # not history an import brought in
            TierChange.created_at >= chain.start_of(chain.day - timedelta(days=rule.within_days)),
            TierChange.created_at < chain.start_of(chain.day + timedelta(days=1)),
            Member.tier_code == TierChange.to_tier,
            *member_may_receive(rule),
        )
        .order_by(TierChange.id)
    )
    tiers = {t.code: t for t in chain.tiers}

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        tier = tiers[row.to_tier]
        higher = [t for t in chain.tiers if t.rank > tier.rank]
        following = higher[0] if higher else None
        context = common_context(row, chain, locale)
        context["tier"] = {
            "code": tier.code,
            "name": localized(locale, tier.name_zh, tier.name_en),
            "next_name": localized(locale, following.name_zh, following.name_en)
            if following
            else None,
            "missing_cents": max(0, following.threshold_cents - int(row.spend)) if following else 0,
            "privileges": list(localized(locale, tier.privileges_zh, tier.privileges_en)),
        }
        return [candidate(row, str(row.change_id), locale, context)]

    return [CandidateQuery(statement, to_candidates)]


def wake_up(rule: WakeUp, chain: ChainDay) -> list[CandidateQuery]:
    """Members whose last visit was exactly `after_days` days before the day."""
    last_day = chain.day - timedelta(days=rule.after_days)
    later = aliased(Visit)
    same_day = aliased(Visit)
    statement = (
        select(*MEMBER_COLUMNS, *VISIT_COLUMNS)
        .join(Member, Member.id == Visit.member_id)
        .where(
            Visit.visited_on == date_literal(last_day),
            ~exists().where(
                later.member_id == Visit.member_id,
                later.visited_on > date_literal(last_day),
                later.visited_on <= date_literal(chain.day),
            ),
            # One message per member: the day's last visit speaks for the others.
            ~exists().where(
                same_day.member_id == Visit.member_id,
                same_day.visited_on == Visit.visited_on,
                same_day.id > Visit.id,
            ),
            *member_may_receive(rule),
        )
        .order_by(Member.id)
    )

    def to_candidates(row: Row[Any]) -> list[Candidate]:
        locale = row_locale(row)
        context = common_context(row, chain, locale)
        context["visit"] = visit_context(row, chain, locale)
        return [candidate(row, last_day.isoformat(), locale, context)]

    return [CandidateQuery(statement, to_candidates)]
