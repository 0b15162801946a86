"""The numbered choices of a chat without buttons.

WeChat text has no inline keyboard, so a reply's buttons are shown as choices the member
answers by typing their key ("1", or a score's own digits). The chat's last choices are kept
here, key → button data, so the next message presses the button whichever process receives it.
Every reply replaces them (a reply without buttons leaves none), and they lapse with the flow
state's lifetime: a "1" typed the next morning is just text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatChoice
from db.session import upsert_insert


async def remember(
    session: AsyncSession,
    channel: str,
    address: str,
    choices: Mapping[str, str],
    now: datetime,
    ttl_minutes: int,
) -> None:
    """Replace the chat's choices (key → button data); none forgets them."""
    if not choices:
        await forget(session, channel, address)
        return
    values = {"choices": dict(choices), "expires_at": now + timedelta(minutes=ttl_minutes)}
    await session.execute(
        upsert_insert(session, ChatChoice.__table__)
        .values(channel=channel, address=address, **values)
        .on_conflict_do_update(index_elements=["channel", "address"], set_=values)
    )


async def recall(
    session: AsyncSession, channel: str, address: str, now: datetime
) -> dict[str, str]:
    """The chat's live choices, key → button data; empty when none or lapsed."""
    row = (
        await session.execute(
            select(ChatChoice.choices, ChatChoice.expires_at).where(
                ChatChoice.channel == channel, ChatChoice.address == address
            )
        )
    ).one_or_none()
    if row is None or row.expires_at <= now or not isinstance(row.choices, dict):
        return {}
    return {str(key): str(data) for key, data in row.choices.items()}


async def forget(session: AsyncSession, channel: str, address: str) -> None:
    await session.execute(
        delete(ChatChoice).where(ChatChoice.channel == channel, ChatChoice.address == address)
    )
