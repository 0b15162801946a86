"""The demo chain's loyalty life: members who bought rewards with their points, received a
birthday coupon, prepaid money (储值), own a 10-wash card or paid part of a bill with points.

A shop's CSV export holds visits and the points they earned, nothing of this; without it nobody
in the demo would ever have spent a point, and the counter page would always show an empty
wallet. Every action is a call to the use case a counter or the chat makes (`rewards.redeem`,
`coupons.issue` and `coupons.redeem`, `wallet.top_up` and `wallet.spend`, `punchcards.issue` and
`punchcards.use`, `points.offset`); nothing is written to a table directly, so the demo also
exercises those rules at volume. The plan here keeps each action within what the member holds;
should it ever not, the use case refuses and the demo stops rather than overdraw.

Deterministic: each member draws from a generator seeded by (seed, member number) in member
number order, and every action is dated `today`. Coupon codes are the one part that differs
between two builds, because they must be unguessable. Each call carries an idempotency key made
of the member and the action, as a real client's retry would.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Coupon, Member, PointsEntry, Reward, Service
from db.session import Database
from domain import coupons, points, punchcards, rewards, wallet
from domain.csvcells import parse_amount
from domain.shop import LoyaltyRules
from memberbot.demo.generator import MEMBER_PREFIX, DemoData, Persona

ACTOR = "demo"
BATCH = 250  # members per transaction: a few short write locks instead of one long one

# Rewards: a share of members buy one or two with points; some of those coupons are used at once.
REDEEM_SHARE = 0.2
USED_SHARE = 0.4
# Birthday treat (生日礼遇): every member whose birthday falls in this month gets one.
BIRTHDAY_SOURCE = "birthday"
BIRTHDAY_VALUE_CENTS = 5_000
BIRTHDAY_MIN_SPEND_CENTS = 20_000
BIRTHDAY_VALID_DAYS = 30
BIRTHDAY_USED_SHARE = 0.2
# Stored value: washers, detailers and fleets prepay most often; most have paid one bill from it.
WALLET_SHARE: dict[Persona, float] = {
    "regular": 0.25,
    "washer": 0.4,
    "detailer": 0.45,
    "repair": 0.1,
    "lapser": 0.15,
    "fleet": 0.7,
    "newcomer": 0.1,
}
TOP_UPS_CENTS = (50_000, 100_000, 100_000, 200_000, 300_000)
FLEET_TOP_UPS_CENTS = (500_000, 1_000_000)
SPEND_SHARE = 0.6
# Punch cards: 10 washes, valid a year, sold to half the monthly washers, up to 4 used so far.
CARD_SERVICE = "wash"
CARD_USES = 10
CARD_VALID_DAYS = 365
CARD_SHARE = 0.5
CARD_MAX_PUNCHED = 4
# Points towards a bill: members with a fair balance use part of it.
OFFSET_SHARE = 0.35
OFFSET_MIN_POINTS = 1_000
OFFSET_PART = (0.5, 0.9)
# The showcase member holds a coupon even with too few points to buy one.
GOODWILL_SOURCE = "goodwill"
GOODWILL_VALUE_CENTS = 3_000
GOODWILL_VALID_DAYS = 60


@dataclass(frozen=True)
class Customer:
    """One demo member as the activity needs them: who, their persona, where they shop, their
    points before anything here, and every bill they paid (cents, service codes)."""

    member_id: int
    ref: str
    persona: Persona
    birthday: date | None
    store_id: int | None
    points: int
    bills: tuple[tuple[int, tuple[str, ...]], ...]

    def times_bought(self, service_code: str | None) -> int:
        return sum(1 for _, services in self.bills if service_code in services)


@dataclass
class Played:
    """How many domain calls of each kind the activity made, and for how many members."""

    members: int = 0
    calls: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@dataclass(frozen=True)
class _Shop:
    """What every member's turn shares: the day, the catalogue, list prices and the rules."""

    today: date
    rewards: list[Reward]
    prices: dict[str, int]
    rules: LoyaltyRules
    played: Played


@dataclass
class _Turn:
    """One member's go: their dice, whether they are the showcase, and their balances as the
    actions change them, so that every planned action fits what they hold.

    `member` is their row, loaded with the batch: every use case looks the member up first, and
    the session keeps only weak references, so without this each call would load it again.
    """

    customer: Customer
    member: Member
    rng: random.Random
    showcase: bool
    points: int
    wallet_cents: int = 0

    def key(self, action: str) -> str:
        return f"demo:{self.customer.ref}:{action}"


async def play(
    db: Database, data: DemoData, rules: LoyaltyRules, *, seed: int, today: date
) -> Played:
    """Run the loyalty activity for every demo member, `BATCH` members per transaction."""
    async with db.read() as session:
        customers = await _customers(session, data)
        shop = _Shop(
            today=today,
            rewards=await rewards.catalogue(session),
            prices=await _prices(session),
            rules=rules,
            played=Played(members=len(customers)),
        )
    for start in range(0, len(customers), BATCH):
        batch = customers[start : start + BATCH]
        async with db.transaction() as session:
            loaded = await session.scalars(
                select(Member).where(Member.id.in_([c.member_id for c in batch]))
            )
            rows = {member.id: member for member in loaded.all()}
            for customer in batch:
                turn = _Turn(
                    customer=customer,
                    member=rows[customer.member_id],
                    rng=random.Random(f"memberbot-demo-activity:{seed}:{customer.ref}"),
                    showcase=customer.ref == data.showcase_ref,
                    points=customer.points,
                )
                await _take_turn(session, shop, turn)
    return shop.played


async def _take_turn(session: AsyncSession, shop: _Shop, turn: _Turn) -> None:
    """Rewards first (points buy them), then what does not need points, then the offset (which
    takes part of whatever points are left)."""
    await _redeem_rewards(session, shop, turn)
    await _birthday_treat(session, shop, turn)
    await _prepay(session, shop, turn)
    await _punch_card(session, shop, turn)
    await _pay_with_points(session, shop, turn)


async def _customers(session: AsyncSession, data: DemoData) -> list[Customer]:
    """The demo's members with their points balance, in member number order (one query)."""
    balance = (
        select(func.coalesce(func.sum(PointsEntry.points), 0))
        .where(PointsEntry.member_id == Member.id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Member.id, Member.member_ref, Member.birthday, Member.home_store_id, balance)
        .where(Member.member_ref.like(f"{MEMBER_PREFIX}%"), Member.erased_at.is_(None))
        .order_by(Member.member_ref)
    )
    bills: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for visit in data.visits:
        services = tuple(code for code in visit["services"].split(";") if code)
        bills.setdefault(visit["member_ref"], []).append((parse_amount(visit["amount"]), services))
    return [
        Customer(
            member_id=member_id,
            ref=ref,
            persona=data.personas[ref],
            birthday=birthday,
            store_id=store_id,
            points=int(held),
            bills=tuple(bill for bill in bills.get(ref, []) if bill[0] > 0),
        )
        for member_id, ref, birthday, store_id, held in rows.all()
        if ref in data.personas
    ]


async def _prices(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Service.code, Service.list_price_cents))
    return {code: int(cents) for code, cents in rows.all()}


async def _redeem_rewards(session: AsyncSession, shop: _Shop, turn: _Turn) -> None:
    """One or two rewards, most likely for what the member buys most; some coupons are used
    straight away.

    The showcase member buys only the cheapest reward and keeps its coupon, and only when some
    of their points about to lapse are left after it (a debit spends the soonest-lapsing points
    first, and the counter page should still show them); otherwise they get a goodwill coupon.
    """
    if not (turn.showcase or turn.rng.random() < REDEEM_SHARE):
        return
    budget = turn.points
    if turn.showcase:
        standing = await points.summary(session, turn.customer.member_id, shop.today, shop.rules)
        budget = min(budget, standing.expiring_soon - 1)
    bought: list[tuple[Coupon, Reward]] = []
    for number in range(1, (1 if turn.showcase else turn.rng.randint(1, 2)) + 1):
        affordable = [r for r in shop.rewards if r.points_cost <= min(budget, turn.points)]
        if not affordable:
            break
        weights = [1 + turn.customer.times_bought(r.service_code) for r in affordable]
        reward = (
            min(affordable, key=lambda r: r.points_cost)
            if turn.showcase
            else turn.rng.choices(affordable, weights=weights)[0]
        )
        coupon = await rewards.redeem(
            session,
            turn.customer.member_id,
            reward.code,
            today=shop.today,
            key=turn.key(f"reward:{number}"),
            actor=ACTOR,
        )
        turn.points -= reward.points_cost
        shop.played.calls["rewards.redeem"] += 1
        bought.append((coupon, reward))
    for coupon, reward in bought:
        if not turn.showcase and turn.rng.random() < USED_SHARE:
            bill = max(coupon.min_spend_cents, shop.prices.get(reward.service_code or "", 0))
            services = [reward.service_code] if reward.service_code else None
            await _use_coupon(session, shop, turn, coupon, bill, services)
    if turn.showcase and not bought:
        await _goodwill_coupon(session, shop, turn)


async def _use_coupon(
    session: AsyncSession,
    shop: _Shop,
    turn: _Turn,
    coupon: Coupon,
    bill_cents: int,
    services: list[str] | None,
) -> None:
    await coupons.redeem(
        session,
        coupon.code,
        member_id=turn.customer.member_id,
        store_id=turn.customer.store_id,
        spend_cents=bill_cents,
        today=shop.today,
        actor=ACTOR,
        services=services,
    )
    shop.played.calls["coupons.redeem"] += 1


async def _goodwill_coupon(session: AsyncSession, shop: _Shop, turn: _Turn) -> None:
    await coupons.issue(
        session,
        turn.customer.member_id,
        kind=coupons.VALUE,
        value_cents=GOODWILL_VALUE_CENTS,
        valid_from=shop.today,
        valid_until=shop.today + timedelta(days=GOODWILL_VALID_DAYS - 1),
        store_id=None,
        source=GOODWILL_SOURCE,
        key=turn.key("goodwill"),
        actor=ACTOR,
    )
    shop.played.calls["coupons.issue"] += 1


async def _birthday_treat(session: AsyncSession, shop: _Shop, turn: _Turn) -> None:
    """A coupon for every member born in this month; some whose day has passed used it."""
    birthday = turn.customer.birthday
    if birthday is None or birthday.month != shop.today.month:
        return
    coupon = await coupons.issue(
        session,
        turn.customer.member_id,
        kind=coupons.VALUE,
        value_cents=BIRTHDAY_VALUE_CENTS,
        min_spend_cents=BIRTHDAY_MIN_SPEND_CENTS,
        valid_from=shop.today,
        valid_until=shop.today + timedelta(days=BIRTHDAY_VALID_DAYS - 1),
        store_id=None,
        source=BIRTHDAY_SOURCE,
        key=turn.key(f"birthday:{shop.today.year}"),
        actor=ACTOR,
    )
    shop.played.calls["coupons.issue"] += 1
    if birthday.day <= shop.today.day and turn.rng.random() < BIRTHDAY_USED_SHARE:
        bill = max(BIRTHDAY_MIN_SPEND_CENTS, _a_bill(turn))
        await _use_coupon(session, shop, turn, coupon, bill, None)


def _a_bill(turn: _Turn) -> int:
    """One of the member's own past bills, as the size of a bill paid today."""
    bills = turn.customer.bills
    return turn.rng.choice(bills)[0] if bills else 0


async def _prepay(session: AsyncSession, shop: _Shop, turn: _Turn) -> None:
    """A prepaid package, and often one bill paid from it when it covers the bill with money to
    spare (so the showcase member always has some left)."""
    share = 1.0 if turn.showcase else WALLET_SHARE[turn.customer.persona]
    if turn.rng.random() >= share:
        return
    packages = FLEET_TOP_UPS_CENTS if turn.customer.persona == "fleet" else TOP_UPS_CENTS
    amount = turn.rng.choice(packages)
    await wallet.top_up(
        session,
        turn.customer.member_id,
        amount,
        actor=ACTOR,
        store_id=turn.customer.store_id,
        key=turn.key("top-up:1"),
        reason="prepaid package",
    )
    turn.wallet_cents += amount
    shop.played.calls["wallet.top_up"] += 1
    if turn.rng.random() >= SPEND_SHARE:
        return
    bill = _a_bill(turn)
    if not 0 < bill < turn.wallet_cents:
        return
    await wallet.spend(
        session,
        turn.customer.member_id,
        bill,
        actor=ACTOR,
        store_id=turn.customer.store_id,
        key=turn.key("spend:1"),
        reason="paid a bill",
    )
    turn.wallet_cents -= bill
    shop.played.calls["wallet.spend"] += 1


async def _punch_card(session: AsyncSession, shop: _Shop, turn: _Turn) -> None:
    """A 10-wash card for half the monthly washers (and the showcase member), a few washes
    already punched; every card still has some left."""
    if CARD_SERVICE not in shop.prices:
        return
    wants = turn.customer.persona == "washer" and turn.rng.random() < CARD_SHARE
    if not (turn.showcase or wants):
        return
    card = await punchcards.issue(
        session,
        turn.customer.member_id,
        CARD_SERVICE,
        CARD_USES,
        shop.today + timedelta(days=CARD_VALID_DAYS - 1),
        turn.customer.store_id,
        key=turn.key("wash-card"),
        actor=ACTOR,
    )
    shop.played.calls["punchcards.issue"] += 1
    assert card.id is not None
    for number in range(1, turn.rng.randint(0, min(CARD_MAX_PUNCHED, CARD_USES - 1)) + 1):
        await punchcards.use(
            session,
            card.id,
            member_id=turn.customer.member_id,
            store_id=turn.customer.store_id,
            today=shop.today,
            key=turn.key(f"wash-card:use:{number}"),
            actor=ACTOR,
        )
        shop.played.calls["punchcards.use"] += 1


async def _pay_with_points(session: AsyncSession, shop: _Shop, turn: _Turn) -> None:
    """Part of a fair balance paid towards a bill, never worth more than the bill. Not by the
    showcase member, whose points about to lapse the counter page should still show."""
    per_yuan = shop.rules.offset_points_per_yuan
    if turn.showcase or per_yuan <= 0 or turn.points < OFFSET_MIN_POINTS or not turn.customer.bills:
        return
    if turn.rng.random() >= OFFSET_SHARE:
        return
    bill = _a_bill(turn)
    wanted = int(turn.points * turn.rng.uniform(*OFFSET_PART)) // 100 * 100
    spent = min(wanted, bill * per_yuan // 100)
    if points.offset_value_cents(spent, shop.rules) == 0:
        return
    await points.offset(
        session,
        turn.customer.member_id,
        spent,
        bill,
        shop.today,
        shop.rules,
        actor=ACTOR,
        key=turn.key("offset:1"),
    )
    turn.points -= spent
    shop.played.calls["points.offset"] += 1
