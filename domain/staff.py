"""Staff accounts and what each may do: staff work the counter of their store, managers run a
store (or the whole chain when they have no store) and approve what members will read."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Staff, StaffRole, Store
from domain import audit, staffchats
from domain.errors import DomainError, InvalidInput, NotFound

STAFF, MANAGER = StaffRole.STAFF, StaffRole.MANAGER
ROLES = (STAFF, MANAGER)
# Telegram's user ids are positive and have at most 52 significant bits (its Bot API docs).
TELEGRAM_ID_MAX = 2**52 - 1


class NotAllowed(DomainError):
    key = "error.not_allowed"


async def add(
    session: AsyncSession,
    *,
    name: str,
    role: str,
    store_code: str | None = None,
    telegram_user_id: int | None = None,
    actor: str,
) -> Staff:
    """A new account; without a store it is chain-wide."""
    if role not in ROLES:
        raise InvalidInput("role must be staff or manager", role=role)
    if not name.strip():
        raise InvalidInput("a staff account needs a name")
    if telegram_user_id is not None and not 0 < telegram_user_id <= TELEGRAM_ID_MAX:
        raise InvalidInput(
            f"a Telegram user id is a number from 1 to {TELEGRAM_ID_MAX}",
            telegram_user_id=telegram_user_id,
        )
    store_id = None
    if store_code is not None:
        store = await session.scalar(select(Store).where(Store.code == store_code))
        if store is None or not store.active:
            raise NotFound("no such store", store=store_code)
        store_id = store.id
    if telegram_user_id is not None and await session.scalar(
        select(Staff.id).where(Staff.telegram_user_id == telegram_user_id)
    ):
        raise InvalidInput("that Telegram account already belongs to a staff member")
    person = Staff(
        name=name.strip(), role=role, store_id=store_id, telegram_user_id=telegram_user_id
    )
    session.add(person)
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="staff.add",
        entity="staff",
        entity_id=person.id,
        detail={"role": role, "store_id": store_id},
    )
    return person


async def roster(session: AsyncSession) -> list[tuple[Staff, str | None]]:
    """Every account with its store's code (None: chain-wide), active ones first."""
    rows = await session.execute(
        select(Staff, Store.code)
        .outerjoin(Store, Store.id == Staff.store_id)
        .order_by(Staff.active.desc(), Staff.id)
    )
    return [(person, code) for person, code in rows.all()]


async def deactivate(session: AsyncSession, staff_id: int, *, actor: str) -> Staff:
    """Accounts are never deleted: the audit log keeps naming who did what. Its chats are
    unbound in the same unit of work, so no staff action comes from them afterwards."""
    person = await session.get(Staff, staff_id)
    if person is None:
        raise NotFound("no such staff account", staff_id=staff_id)
    person.active = False
    session.add(person)
    await audit.record(
        session, actor=actor, action="staff.deactivate", entity="staff", entity_id=staff_id
    )
    await staffchats.unbind_all(session, staff_id, actor=actor)
    await session.flush()
    return person


def actor_name(person: Staff) -> str:
    """How the audit log and the ledgers name an account: by id, since names change."""
    return f"staff:{person.id}"


async def identify(session: AsyncSession, who: int | str) -> Staff:
    """The account the person at a terminal or in a chat claims: an id, or a name typed in full.

    Anyone who is not a staff account (a member's id, a name nobody has) is refused as not
    allowed, not as missing, so a probe learns nothing about which accounts exist.
    """
    text = str(who).strip()
    if text.isdigit():
        person = await session.get(Staff, int(text))
    else:
        found = (await session.scalars(select(Staff).where(Staff.name == text))).all()
        if len(found) > 1:
            raise InvalidInput("several staff accounts have that name: use the id", name=text)
        person = found[0] if found else None
    if person is None:
        raise NotAllowed("not a staff account", reason="not_staff")
    return person


async def acting(
    session: AsyncSession,
    who: int | str,
    *,
    action: str,
    store_id: int | None,
    manager: bool = False,
    own_store: bool = False,
) -> Staff:
    """The account behind `who`, allowed to do `action` at `store_id` (with `own_store` and no
    `store_id`: at the account's own store), or a `NotAllowed` naming the action, the store and
    who asked, so whoever catches it can audit the attempt."""
    person: Staff | None = None
    try:
        person = await identify(session, who)
        if own_store and store_id is None:
            store_id = person.store_id
        require(person, store_id=store_id, manager=manager)
    except NotAllowed as refused:
        refused.params.setdefault("action", action)
        refused.params.setdefault("store_id", store_id)
        refused.params.setdefault(
            "actor", actor_name(person) if person else f"unknown:{str(who).strip()[:40]}"
        )
        raise
    return person


def require(person: Staff, *, store_id: int | None, manager: bool = False) -> None:
    """Refuse an inactive account, a store that is not theirs, or a manager's task for staff."""
    if not person.active:
        raise NotAllowed("this staff account is deactivated", reason="deactivated")
    if manager and person.role != MANAGER:
        raise NotAllowed("only a manager may do this", reason="not_manager")
    if person.store_id is not None and store_id != person.store_id:
        raise NotAllowed("this belongs to another store", reason="other_store")
