"""Flows: what a member (or a staff chat) can do in the chat, one module per area. Each module
exposes `FLOW` (see `bot.conversation.Flow`; `staff` also `DESK`, its staff-only half);
`ALL_FLOWS` is the order the chat registers them in."""

from __future__ import annotations

from bot.conversation import Flow
from bot.flows import account, booking, feedback, loyalty, rewards, staff

ALL_FLOWS: list[Flow] = [
    account.FLOW,
    loyalty.FLOW,
    rewards.FLOW,
    booking.FLOW,
    feedback.FLOW,
    staff.FLOW,
    staff.DESK,
]
