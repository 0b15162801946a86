"""The audit log: who changed what. Callers pass ids and amounts, never phones or plates.

A refused staff action is audited too, but never inside the transaction it was refused in: that
transaction rolls back with the refusal and would take the line with it. `refused` is for the
adapter's fresh transaction after the refusal (see domain.counter.acting.guarded).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditLog

REFUSED = "refused."
LIST_MAX = 1000


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: int | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one line to the audit log inside the caller's transaction."""
    session.add(
        AuditLog(
            actor=actor, action=action, entity=entity, entity_id=entity_id, detail=detail or {}
        )
    )


async def refused(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    reason: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record an attempt that was not allowed, as `refused.<action>` with the reason; call it
    in a transaction of its own, after the refused one rolled back."""
    await record(
        session,
        actor=actor,
        action=(REFUSED + action)[:48],
        entity="staff",
        entity_id=None,
        detail={**(detail or {}), "reason": reason},
    )
    await session.flush()


async def entries(
    session: AsyncSession,
    *,
    since: datetime | None = None,
    actors: list[str] | None = None,
    action: str | None = None,
    limit: int = 200,
) -> list[AuditLog]:
    """The newest lines first, from `since`, by any of `actors`, with `action` anywhere in the
    action's name (`visit` finds `counter.visit.record` and `refused.counter.visit.void`)."""
    query = select(AuditLog).order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
    if since is not None:
        query = query.where(AuditLog.created_at >= since)
    if actors is not None:
        if not actors:
            return []
        query = query.where(or_(*[AuditLog.actor == actor for actor in actors]))
    if action:
        query = query.where(AuditLog.action.contains(action, autoescape=True))
    result = await session.scalars(query.limit(max(1, min(limit, LIST_MAX))))
    return list(result.all())
