"""The tables. Money is integer cents, times are aware UTC datetimes, calendar days are dates.
Money and points columns are `Int64` (BIGINT on PostgreSQL), so the caps of domain.limits and
the sums of many capped values fit on both databases.

Ledgers (points, stored value, punch cards) are append-only: a balance is the sum of its entries.
Each ledger entry may carry a unique `key` so a retried request can never write twice.

Status and kind columns hold the values of the `StrEnum`s below, the one definition the tables
and the domain share (a `StrEnum` member is its string, so it compares and stores as one).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from db.types import Int64, UTCDateTime, utcnow


class BookingStatus(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    NO_SHOW = "no_show"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNREACHABLE = "unreachable"


class MessageCategory(StrEnum):
    """Transactional (what the member just did) and service messages need no marketing
    consent; marketing does, and counts against the cap."""

    TRANSACTIONAL = "transactional"
    SERVICE = "service"
    MARKETING = "marketing"


class InboundStatus(StrEnum):
    PENDING = "pending"  # claimed; the turn is running
    ANSWERED = "answered"  # the reply went back in the HTTP answer (and goes again to a retry)
    OWED = "owed"  # the turn overran the reply budget: the reply waits for the sender
    SENDING = "sending"  # one deliverer took the owed reply and is sending it
    DELIVERED = "delivered"  # the owed reply went out as a message of its own
    UNDELIVERED = "undelivered"  # refused for good, or WeChat's 48 hours ran out


class ComplaintStatus(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    CLOSED = "closed"


class PointsKind(StrEnum):
    EARN = "earn"
    OPENING = "opening"
    REDEEM = "redeem"
    EXPIRE = "expire"
    ADJUST = "adjust"
    OFFSET = "offset"


class StoredValueKind(StrEnum):
    TOP_UP = "top_up"
    SPEND = "spend"


class PunchKind(StrEnum):
    ISSUE = "issue"
    USE = "use"
    EXPIRE = "expire"


class CouponKind(StrEnum):
    VALUE = "value"
    PERCENT = "percent"


class StaffRole(StrEnum):
    STAFF = "staff"
    MANAGER = "manager"


class TierChangeReason(StrEnum):
    UPGRADE = "upgrade"
    REVIEW = "review"
    IMPORTED = "import"


class Channel(StrEnum):
    TELEGRAM = "telegram"
    WECHAT = "wechat"
    CONSOLE = "console"


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Store(SQLModel, table=True):
    """A shop of the chain; its time zone decides local dates, quiet hours and opening hours."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=120)
    address: str = Field(default="", max_length=255)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    opening_hours: dict[str, list[str]] = Field(default_factory=dict, sa_column=Column(JSON))
    bays: int = Field(default=1, ge=0)
    active: bool = Field(default=True)


class Service(SQLModel, table=True):
    """A service the chain sells; maintenance services carry their interval."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name_zh: str = Field(max_length=120)
    name_en: str = Field(max_length=120)
    category: str = Field(max_length=32, index=True)
    duration_min: int = Field(default=60)
    list_price_cents: int = Field(default=0, sa_type=Int64)
    interval_months: int | None = Field(default=None)
    interval_km: int | None = Field(default=None)
    active: bool = Field(default=True)


class Tier(SQLModel, table=True):
    """A membership level reached by rolling 12-month spend."""

    code: str = Field(primary_key=True, max_length=32)
    rank: int = Field(unique=True)
    name_zh: str = Field(max_length=60)
    name_en: str = Field(max_length=60)
    threshold_cents: int = Field(default=0, sa_type=Int64)
    multiplier_permille: int = Field(default=1000, description="points multiplier x1000")
    privileges_zh: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    privileges_en: list[str] = Field(default_factory=list, sa_column=Column(JSON))


class Member(SQLModel, table=True):
    """A car owner. Phone is E.164; name, phone and birthday are personal data."""

    id: int | None = Field(default=None, primary_key=True)
    member_ref: str = Field(max_length=64, unique=True)
    name: str = Field(default="", max_length=120)
    phone: str | None = Field(default=None, max_length=20, index=True)
    birthday: date | None = Field(default=None)
    locale: str = Field(default="zh_CN", max_length=8)
    home_store_id: int | None = Field(default=None, foreign_key="store.id", index=True)
    tier_code: str = Field(default="standard", foreign_key="tier.code", max_length=32)
    tier_since: datetime = _created()
    marketing_consent: bool = Field(default=False)
    consent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    consent_source: str | None = Field(default=None, max_length=32)
    created_at: datetime = _created()
    updated_at: datetime = _created()
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class MemberTag(SQLModel, table=True):
    """Free-form labels staff give members (fleet, VIP, new-energy...), one row per tag."""

    __tablename__ = "member_tag"

    member_id: int = Field(foreign_key="member.id", primary_key=True, ondelete="CASCADE")
    tag: str = Field(primary_key=True, max_length=40, index=True)


class TierChange(SQLModel, table=True):
    """Every tier move, so upgrades can be celebrated and reviews explained."""

    __tablename__ = "tier_change"

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    from_tier: str = Field(max_length=32)
    to_tier: str = Field(max_length=32)
    reason: str = Field(max_length=32)
    created_at: datetime = _created()


class Vehicle(SQLModel, table=True):
    """A member's car, identified by its normalized plate."""

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    plate: str = Field(max_length=16, unique=True)
    vin: str | None = Field(default=None, max_length=17)
    make: str | None = Field(default=None, max_length=60)
    model: str | None = Field(default=None, max_length=60)
    purchase_date: date | None = Field(default=None)
    insurance_expiry: date | None = Field(default=None, index=True)
    inspection_due: date | None = Field(default=None, index=True)
    created_at: datetime = _created()


class MileageReading(SQLModel, table=True):
    """An odometer reading on a day; mileage-based reminders extrapolate from these."""

    __tablename__ = "mileage_reading"
    __table_args__ = (UniqueConstraint("vehicle_id", "read_on", "km"),)

    id: int | None = Field(default=None, primary_key=True)
    vehicle_id: int = Field(foreign_key="vehicle.id", index=True, ondelete="CASCADE")
    read_on: date
    km: int = Field(ge=0)
    source: str = Field(default="visit", max_length=16)


class Visit(SQLModel, table=True):
    """A paid service visit; the source of points, tiers and every lifecycle rule."""

    __table_args__ = (Index("ix_visit_member_day", "member_id", "visited_on", "amount_cents"),)

    id: int | None = Field(default=None, primary_key=True)
    visit_ref: str | None = Field(default=None, max_length=64, unique=True)
    member_id: int = Field(foreign_key="member.id", ondelete="CASCADE")
    store_id: int | None = Field(default=None, foreign_key="store.id")
    vehicle_id: int | None = Field(default=None, foreign_key="vehicle.id", ondelete="SET NULL")
    visited_on: date = Field(index=True)
    amount_cents: int = Field(ge=0, sa_type=Int64)
    services: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    mileage_km: int | None = Field(default=None)
    satisfaction: int | None = Field(default=None, ge=0, le=10)
    created_at: datetime = _created()


class PointsEntry(SQLModel, table=True):
    """One line of the points ledger. Positive lines are lots that expire; negative lines consume
    the soonest-expiring lots first (see domain.points)."""

    __tablename__ = "points_entry"
    __table_args__ = (Index("ix_points_member_expiry", "member_id", "expires_on"),)

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", ondelete="CASCADE")
    kind: str = Field(max_length=16)
    points: int = Field(sa_type=Int64)
    occurred_on: date
    expires_on: date | None = Field(default=None)
    visit_id: int | None = Field(default=None, foreign_key="visit.id", ondelete="SET NULL")
    key: str | None = Field(default=None, max_length=96, unique=True)
    reason: str | None = Field(default=None, max_length=255)
    actor: str | None = Field(default=None, max_length=64)
    created_at: datetime = _created()


class StoredValueEntry(SQLModel, table=True):
    """One line of a member's prepaid balance (储值), in cents."""

    __tablename__ = "stored_value_entry"

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=16)
    amount_cents: int = Field(sa_type=Int64)
    store_id: int | None = Field(default=None, foreign_key="store.id")
    key: str | None = Field(default=None, max_length=96, unique=True)
    reason: str | None = Field(default=None, max_length=255)
    actor: str | None = Field(default=None, max_length=64)
    created_at: datetime = _created()


class PunchCard(SQLModel, table=True):
    """A prepaid bundle of N services (10 washes, say) with its own small ledger."""

    __tablename__ = "punch_card"

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    service_code: str = Field(max_length=32)
    total_uses: int = Field(gt=0)
    expires_on: date | None = Field(default=None)
    store_id: int | None = Field(default=None, foreign_key="store.id")
    key: str | None = Field(default=None, max_length=96, unique=True)
    created_at: datetime = _created()


class PunchEntry(SQLModel, table=True):
    """A use (negative) or the opening credit (positive) of a punch card."""

    __tablename__ = "punch_entry"

    id: int | None = Field(default=None, primary_key=True)
    card_id: int = Field(foreign_key="punch_card.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=16)
    uses: int
    store_id: int | None = Field(default=None, foreign_key="store.id")
    key: str | None = Field(default=None, max_length=96, unique=True)
    actor: str | None = Field(default=None, max_length=64)
    created_at: datetime = _created()


class Reward(SQLModel, table=True):
    """Something points buy: usually a coupon for a service."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name_zh: str = Field(max_length=120)
    name_en: str = Field(max_length=120)
    points_cost: int = Field(gt=0, sa_type=Int64)
    coupon_kind: str = Field(default=CouponKind.VALUE, max_length=16)
    coupon_value_cents: int = Field(default=0, sa_type=Int64)
    coupon_percent: int = Field(default=0)
    min_spend_cents: int = Field(default=0, sa_type=Int64)
    valid_days: int = Field(default=90)
    service_code: str | None = Field(default=None, max_length=32)
    active: bool = Field(default=True)


class Coupon(SQLModel, table=True):
    """A single-use voucher with an unguessable code."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=24, unique=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=16)
    value_cents: int = Field(default=0, sa_type=Int64)
    percent_off: int = Field(default=0)
    min_spend_cents: int = Field(default=0, sa_type=Int64)
    valid_from: date
    valid_until: date
    store_id: int | None = Field(default=None, foreign_key="store.id")
    source: str = Field(max_length=32)
    reward_id: int | None = Field(default=None, foreign_key="reward.id")
    key: str | None = Field(default=None, max_length=96, unique=True)
    issued_at: datetime = _created()
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    used_store_id: int | None = Field(default=None, foreign_key="store.id")


class Staff(SQLModel, table=True):
    """A person who works the counter (staff) or runs a store or the chain (manager)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120)
    role: str = Field(max_length=16)
    store_id: int | None = Field(default=None, foreign_key="store.id")
    telegram_user_id: int | None = Field(default=None, unique=True, sa_type=Int64)
    active: bool = Field(default=True)
    created_at: datetime = _created()


class AuditLog(SQLModel, table=True):
    """Who did what to whom; details never hold phones, plates or birthdays in clear."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=48, index=True)
    entity: str = Field(max_length=32)
    entity_id: int | None = Field(default=None)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = _created()


class Booking(SQLModel, table=True):
    """A member's reserved bay time at a store. Capacity is the store's bays: the domain counts
    overlapping booked rows under the store lock before inserting (see domain.bookings)."""

    __table_args__ = (
        Index("ix_booking_store_start", "store_id", "starts_at"),
        Index("ix_booking_member_start", "member_id", "starts_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", ondelete="CASCADE")
    store_id: int = Field(foreign_key="store.id")
    service_code: str = Field(max_length=32)
    vehicle_id: int | None = Field(default=None, foreign_key="vehicle.id", ondelete="SET NULL")
    starts_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    ends_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    status: str = Field(default=BookingStatus.BOOKED, max_length=16)
    created_at: datetime = _created()
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    key: str | None = Field(default=None, max_length=96, unique=True)
    source: str = Field(default="chat", max_length=16)
    note: str | None = Field(default=None, max_length=255)


class OutboxMessage(SQLModel, table=True):
    """A message intent, committed before anything is sent (see scheduler.outbox). The unique
    idempotency key (member, rule, occurrence) makes a rerun of the rules add nothing; the claim
    lease hands a crashed worker's rows back to the pool without ever giving one row to two
    live workers."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index("ix_outbox_status_due", "status", "not_before"),
        Index("ix_outbox_member_created", "member_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=160, unique=True)
    member_id: int = Field(foreign_key="member.id", ondelete="CASCADE")
    rule: str = Field(max_length=48)
    category: str = Field(max_length=16)
    template_key: str = Field(max_length=64)
    locale: str = Field(max_length=8)
    channel: str | None = Field(default=None, max_length=16)
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    body: str | None = Field(default=None, sa_type=Text)
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    not_before: datetime = Field(sa_type=UTCDateTime, nullable=False)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=255)
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    held_until: datetime | None = Field(
        default=None,
        sa_type=UTCDateTime,
        description="set when a channel first could not carry it: it waits for the member "
        "until then, and is unreachable after",
    )
    created_at: datetime = _created()


class ChatBinding(SQLModel, table=True):
    """Which member a chat speaks for. One member per chat; a member may have several chats
    (Telegram and WeChat, two phones). Unbinding keeps the row, inactive, as history."""

    __tablename__ = "chat_binding"
    __table_args__ = (UniqueConstraint("channel", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    address: str = Field(max_length=64, description="chat id or openid within the channel")
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    bound_at: datetime = _created()
    via: str = Field(max_length=16, description="invite or contact")
    active: bool = Field(default=True)


class InviteCode(SQLModel, table=True):
    """A one-time code staff hand a member to bind a chat. Only its SHA-256 is stored."""

    __tablename__ = "invite_code"

    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(max_length=64, unique=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    created_at: datetime = _created()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    used_by_address: str | None = Field(default=None, max_length=96, description="channel:addr")
    created_by: str = Field(max_length=64)


class StaffInvite(SQLModel, table=True):
    """A one-time code that binds a chat to a staff account (domain.staffchats). Longer than a
    member's (10 characters): a staff chat can do more. Only its hash is stored."""

    __tablename__ = "staff_invite"

    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(max_length=64, unique=True)
    staff_id: int = Field(foreign_key="staff.id", index=True)
    created_at: datetime = _created()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str = Field(max_length=64)


class StaffChat(SQLModel, table=True):
    """A chat that speaks for a staff account. A chat may also speak for a member (the person
    is a car owner too); `as_member` says which of the two it is acting as now."""

    __tablename__ = "staff_chat"
    __table_args__ = (UniqueConstraint("channel", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", index=True)
    channel: str = Field(max_length=16)
    address: str = Field(max_length=64)
    active: bool = Field(default=True)
    as_member: bool = Field(default=False)
    bound_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class MemberCode(SQLModel, table=True):
    """The short code a member shows at the counter from their own chat, like a payment code:
    valid a few minutes and once. Only its SHA-256 is stored (see domain.membercodes)."""

    __tablename__ = "member_code"

    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(max_length=64, unique=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    created_at: datetime = _created()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    used_by: str | None = Field(default=None, max_length=64)


class CounterAction(SQLModel, table=True):
    """A staff action at the counter under the key its adapter gave it (a chat update, a
    terminal's retry), with the answer it gave: a double tap or a retry gets that answer back
    and changes nothing (see domain.counter.receipts)."""

    __tablename__ = "counter_action"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=128, unique=True)
    action: str = Field(max_length=48)
    staff_id: int = Field(foreign_key="staff.id")
    store_id: int | None = Field(default=None, foreign_key="store.id")
    member_id: int | None = Field(default=None, foreign_key="member.id", ondelete="CASCADE")
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = _created()


class BindAttempt(SQLModel, table=True):
    """Failed binding guesses of one chat in its current fixed window: one small row per chat,
    so a brute-forcing chat cannot grow the table (see domain.binding)."""

    __tablename__ = "bind_attempt"

    channel: str = Field(primary_key=True, max_length=16)
    address: str = Field(primary_key=True, max_length=64)
    window_start: datetime = Field(sa_type=UTCDateTime, nullable=False)
    failures: int = Field(default=0)


class ConversationState(SQLModel, table=True):
    """A chat's half-finished flow (a booking half chosen), so a restart or another process
    carries on where the member left off."""

    __tablename__ = "conversation_state"

    channel: str = Field(primary_key=True, max_length=16)
    address: str = Field(primary_key=True, max_length=64)
    flow: str = Field(max_length=32)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    updated_at: datetime = _created()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class ChatChoice(SQLModel, table=True):
    """The buttons a text-only chat (WeChat) was last shown, by the key the member types to
    press one ("1", or a score's own digits), so the next message can press it from any
    process. Replaced by every reply; gone once it lapses."""

    __tablename__ = "chat_choice"

    channel: str = Field(primary_key=True, max_length=16)
    address: str = Field(primary_key=True, max_length=64)
    choices: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class InboundMessage(SQLModel, table=True):
    """One message a chat service may deliver more than once (WeChat retries), under a key
    unique per channel, with the reply it got: every delivery after the first gets that reply
    and runs nothing (see domain.inbound)."""

    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("channel", "key"),
        Index("ix_inbound_status_created", "status", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    key: str = Field(max_length=64, description="msg:<MsgId> or evt:<hash of user, event, time>")
    address: str = Field(max_length=64, description="the chat the reply is for")
    status: str = Field(default=InboundStatus.PENDING, max_length=16)
    reply: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _created()
    settled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    due_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="an owed reply waits until then to retry"
    )


class ChannelToken(SQLModel, table=True):
    """A channel's API access token shared by every process (WeChat's stable token), with
    its expiry and a lease that lets one process at a time fetch a new one (domain.tokens)."""

    __tablename__ = "channel_token"

    name: str = Field(
        primary_key=True, max_length=80, description="channel:account, e.g. wechat:<AppID>"
    )
    token: str | None = Field(default=None, sa_type=Text)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ChatAllowance(SQLModel, table=True):
    """Messages a member's action allows us to send them unasked (WeChat's customer-service
    messages): one row per interaction, with its window and how many it allows and were used
    (domain.allowances)."""

    __tablename__ = "chat_allowance"
    __table_args__ = (Index("ix_chat_allowance_address", "channel", "address", "expires_at"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    address: str = Field(max_length=64)
    kind: str = Field(max_length=16, description="message, click, subscribe or scan")
    granted_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    quota: int
    used: int = Field(default=0)


class SurveyResponse(SQLModel, table=True):
    """A member's 0-10 answer after a visit (NPS), with an optional comment. One answer per
    visit: a second tap on the survey changes nothing."""

    __tablename__ = "survey_response"
    __table_args__ = (UniqueConstraint("member_id", "visit_id"),)

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    visit_id: int | None = Field(default=None, foreign_key="visit.id", ondelete="SET NULL")
    score: int = Field(ge=0, le=10)
    comment: str | None = Field(default=None, sa_type=Text)
    channel: str = Field(max_length=16)
    created_at: datetime = _created()
    # Staff follow up a low score (6 or less) like a complaint: an answer the member reads, then
    # a closing note for the shop's own records.
    answer: str | None = Field(default=None, sa_type=Text)
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    answered_by: str | None = Field(default=None, max_length=64)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_by: str | None = Field(default=None, max_length=64)
    close_note: str | None = Field(default=None, sa_type=Text)


class Complaint(SQLModel, table=True):
    """Something a member wants staff to hear about; open until a staff member answers."""

    id: int | None = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True, ondelete="CASCADE")
    channel: str = Field(max_length=16)
    body: str = Field(sa_type=Text)
    status: str = Field(default=ComplaintStatus.OPEN, max_length=16, index=True)
    created_at: datetime = _created()
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    answered_by: str | None = Field(default=None, max_length=64)
    answer: str | None = Field(default=None, sa_type=Text)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_by: str | None = Field(default=None, max_length=64)
    close_note: str | None = Field(default=None, sa_type=Text)


class MemberScore(SQLModel, table=True):
    """The nightly segment and churn-risk snapshot of a member, so staff lists and rules read
    one row instead of recomputing every member's history."""

    __tablename__ = "member_score"
    __table_args__ = (Index("ix_member_score_risk", "churn_risk"),)

    member_id: int = Field(foreign_key="member.id", primary_key=True, ondelete="CASCADE")
    as_of: date
    recency_days: int | None = Field(default=None)
    frequency: int = Field(default=0)
    monetary_cents: int = Field(default=0, sa_type=Int64)
    rfm_score: str = Field(default="", max_length=3)
    rfm_segment: str = Field(default="", max_length=32)
    stickiness: str = Field(default="", max_length=16)
    lifecycle: str = Field(default="", max_length=16)
    churn_risk: float = Field(default=0.0)
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    computed_at: datetime = _created()
