"""The audit log: who changed what. Callers pass ids and amounts, never phones or plates."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditLog


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
