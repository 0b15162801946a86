"""Once per key: a counter action's answer is kept under the key its adapter gave it (a chat
update's id, a terminal's `--key`), so a double tap or a retry gets the first answer back and
changes nothing, even when the two race (the member is locked before the key is looked up).

The answer is a `Receipt`: the member's balances before and after, and what the action did.
The same facts go to the audit log as `counter.<action>` with who, when and the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CounterAction, Member, Staff
from domain import audit, ledger, points, staff, wallet
from domain.errors import InvalidInput

KEY_MAX = 64
AUDIT_PREFIX = "counter."


@dataclass(frozen=True)
class Balances:
    """What a member holds that the counter changes: points and stored value (cents)."""

    points: int
    stored_value_cents: int


@dataclass(frozen=True)
class Receipt:
    """The answer of a counter action. `detail` says what it did (plain values: ids, amounts);
    `replayed` is True when this is the first answer given again to a retry."""

    action: str
    member_id: int
    member_ref: str
    store_id: int | None
    before: Balances
    after: Balances
    detail: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False

    def stored(self) -> dict[str, Any]:
        kept = asdict(self)
        kept.pop("replayed")
        return kept

    @classmethod
    def from_stored(cls, kept: dict[str, Any]) -> Receipt:
        return cls(
            **{
                **kept,
                "before": Balances(**kept["before"]),
                "after": Balances(**kept["after"]),
                "replayed": True,
            }
        )


async def balances(session: AsyncSession, member_id: int) -> Balances:
    return Balances(
        points=await points.balance(session, member_id),
        stored_value_cents=await wallet.balance(session, member_id),
    )


def full_key(action: str, key: str | None) -> str | None:
    """The stored key: the action's name and the adapter's key, so one key names one action."""
    if key is None:
        return None
    if not key.strip() or len(key) > KEY_MAX:
        raise InvalidInput(f"an idempotency key is 1 to {KEY_MAX} characters", key=key[:80])
    return f"{action}:{key.strip()}"


def ledger_key(action: str, key: str | None) -> str | None:
    """The key handed down to a ledger entry, a second guard behind the receipt's."""
    stored = full_key(action, key)
    return f"counter:{stored}" if stored else None


async def seen(session: AsyncSession, action: str, key: str | None) -> CounterAction | None:
    stored = full_key(action, key)
    if stored is None:
        return None
    return await session.scalar(select(CounterAction).where(CounterAction.key == stored))


async def once(
    session: AsyncSession,
    person: Staff,
    *,
    action: str,
    store_id: int | None,
    member_id: int,
    key: str | None,
    work: Callable[[], Awaitable[dict[str, Any]]],
) -> Receipt:
    """Lock the member, give back the answer already kept under `key`, else run `work` (which
    returns the action's detail), keep its receipt under `key` and audit it."""
    await ledger.lock_existing_member(session, member_id)
    if (previous := await seen(session, action, key)) is not None:
        if previous.member_id != member_id:
            raise InvalidInput("this key was used for another member", key=key)
        return Receipt.from_stored(previous.result)
    before = await balances(session, member_id)
    detail = await work()
    member = await session.get(Member, member_id)
    assert member is not None and person.id is not None
    receipt = Receipt(
        action=action,
        member_id=member_id,
        member_ref=member.member_ref,
        store_id=store_id,
        before=before,
        after=await balances(session, member_id),
        detail=detail,
    )
    if (stored := full_key(action, key)) is not None:
        session.add(
            CounterAction(
                key=stored,
                action=action,
                staff_id=person.id,
                store_id=store_id,
                member_id=member_id,
                result=receipt.stored(),
            )
        )
    await audit.record(
        session,
        actor=staff.actor_name(person),
        action=AUDIT_PREFIX + action,
        entity="member",
        entity_id=member_id,
        detail={
            "store_id": store_id,
            "before": asdict(receipt.before),
            "after": asdict(receipt.after),
            **detail,
        },
    )
    await session.flush()
    return receipt
