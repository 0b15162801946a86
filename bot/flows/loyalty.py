"""What a member holds with the chain, read-only: points and their history, tier, coupons,
stored value and punch cards, and their cars.

Every answer is a read in its own short unit of work, shaped into plain values for the
templates: the domain decides what the numbers are, the templates how they read in each
language. Lists are capped so one reply always fits a chat message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.conversation import Flow, Stale, Turn
from db.models import Coupon, Reward, Service, Tier, Vehicle
from domain import coupons, maintenance, points, profiles, punchcards, rewards, tiers
from domain.locales import localized
from domain.outgoing import Button, Reply

NAME = "loyalty"
HISTORY_LINES = 10
COUPONS_SHOWN = 10
CARDS_SHOWN = 10
CARS_SHOWN = 10


def tier_name(tier: Tier, locale: str) -> str:
    return localized(locale, tier.name_zh, tier.name_en)


def reward_name(reward: Reward, locale: str) -> str:
    return localized(locale, reward.name_zh, reward.name_en)


def coupon_view(coupon: Coupon, reward: Reward | None, locale: str) -> dict[str, Any]:
    """A coupon as the member reads it; `title` is the reward it was bought as, if any."""
    return {
        "code": coupon.code,
        "title": reward_name(reward, locale) if reward is not None else "",
        "source": coupon.source,
        "kind": coupon.kind,
        "value_cents": coupon.value_cents,
        "percent_off": coupon.percent_off,
        "min_spend_cents": coupon.min_spend_cents,
        "valid_until": coupon.valid_until,
    }


def _nav(turn: Turn, *names: str) -> list[list[Button]]:
    """Buttons to the member's next likely steps, then the menu."""
    row = [turn.button(name) for name in names]
    return [row, [turn.button("menu")]]


async def points_(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """Balance and what lapses within the notice window: the chat's most frequent question."""
    rules = turn.config.loyalty
    async with turn.read() as session:
        summary = await points.summary(session, turn.member_id, turn.today(), rules)
    context = {
        "balance": summary.balance,
        "expiring": summary.expiring_soon,
        "expiring_by": summary.expiring_by,
        "next_expiry": summary.next_expiry,
        "notice_days": rules.expiring_notice_days,
    }
    buttons = [
        [
            Button(turn.label("loyalty.to_history"), "go:history"),
            Button(turn.label("loyalty.to_rewards"), "go:rewards"),
        ],
        [turn.button("menu")],
    ]
    return [turn.say("loyalty_points", buttons, points=context)]


def _history_line(line: rewards.StatementLine, locale: str) -> dict[str, Any]:
    """One ledger line in words: the kind says why; a redemption also names its reward."""
    entry, reward = line.entry, line.reward
    what = reward_name(reward, locale) if reward is not None else ""
    return {"on": entry.occurred_on, "points": entry.points, "kind": entry.kind, "what": what}


async def history(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    async with turn.read() as session:
        statement = await rewards.statement(session, turn.member_id, limit=HISTORY_LINES)
    lines = [_history_line(line, turn.locale) for line in statement.lines]
    buttons = _nav(turn, "points", "rewards")
    return [turn.say("loyalty_history", buttons, lines=lines, balance=statement.balance)]


async def tier(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    async with turn.read() as session:
        progress = await tiers.progress(session, turn.member_id, turn.today())
    current, following = progress.tier, progress.next_tier
    context = {
        "code": current.code,
        "name": tier_name(current, turn.locale),
        "privileges": list(localized(turn.locale, current.privileges_zh, current.privileges_en)),
        "spend_cents": progress.spend_cents,
        "next_name": tier_name(following, turn.locale) if following is not None else None,
        "next_threshold_cents": following.threshold_cents if following is not None else 0,
        "missing_cents": progress.missing_cents,
    }
    return [turn.say("loyalty_tier", _nav(turn, "points", "book"), tier=context)]


async def coupons_(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    async with turn.read() as session:
        valid = await coupons.valid_with_rewards(session, turn.member_id, turn.today())
    shown = [coupon_view(c, reward, turn.locale) for c, reward in valid[:COUPONS_SHOWN]]
    if not shown:
        buttons = [[Button(turn.label("loyalty.to_rewards"), "go:rewards")], [turn.button("menu")]]
        return [turn.say("loyalty_coupons_none", buttons)]
    more = len(valid) - len(shown)
    buttons = _nav(turn, "rewards", "book")
    return [turn.say("loyalty_coupons", buttons, coupons=shown, more=more)]


def _service_name(service: Service | None, code: str, locale: str) -> str:
    return localized(locale, service.name_zh, service.name_en) if service is not None else code


async def wallet(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """Stored value and punch cards; the profile already gathers both with the cards' services."""
    profile = await _profile(turn)
    cards = [
        _card_view(status, service, turn.locale)
        for status, service in profile.punch_cards[:CARDS_SHOWN]
    ]
    return [
        turn.say(
            "loyalty_wallet",
            _nav(turn, "book", "coupons"),
            stored_value_cents=profile.stored_value_cents,
            cards=cards,
            more=max(0, len(profile.punch_cards) - len(cards)),
        )
    ]


def _card_view(
    status: punchcards.CardStatus, service: Service | None, locale: str
) -> dict[str, Any]:
    return {
        "service": _service_name(service, status.card.service_code, locale),
        "remaining": status.remaining,
        "total": status.card.total_uses,
        "expires_on": status.expires_on,
    }


def _car_view(car: Vehicle, dues: list[maintenance.Due], locale: str) -> dict[str, Any]:
    """The member's own car: the plate is theirs to see, formatted by the template; the next
    maintenance is the soonest service due."""
    soonest = dues[0] if dues else None
    return {
        "plate": car.plate,
        "make": car.make or "",
        "model": car.model or "",
        "insurance_expiry": car.insurance_expiry,
        "inspection_due": car.inspection_due,
        "next_service": None
        if soonest is None
        else {
            "name": localized(locale, soonest.name_zh, soonest.name_en),
            "due_on": soonest.due_on,
            "by": soonest.by,
        },
    }


async def cars(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    async with turn.read() as session:
        found = await maintenance.cars_due(session, turn.member_id)
    shown = [_car_view(car, dues, turn.locale) for car, dues in found[:CARS_SHOWN]]
    return [
        turn.say(
            "loyalty_cars",
            _nav(turn, "book", "bookings"),
            cars=shown,
            more=max(0, len(found) - len(shown)),
        )
    ]


async def _profile(turn: Turn) -> profiles.MemberProfile:
    member = turn.member
    if member is None:  # the core sends unbound chats to how_to_bind before this runs
        raise Stale("no member bound to this chat")
    async with turn.read() as session:
        return await profiles.profile(session, member, turn.today(), turn.config.loyalty, 0)


FLOW = Flow(
    name=NAME,
    intents={
        "points": points_,
        "history": history,
        "tier": tier,
        "coupons": coupons_,
        "wallet": wallet,
        "cars": cars,
    },
)
