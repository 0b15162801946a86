"""Flows: what a member can do in the chat, one module per area. Each module exposes `FLOW`
(see `bot.conversation.Flow`); `ALL_FLOWS` is the order the chat registers them in."""

from __future__ import annotations

from bot.conversation import Flow
from bot.flows import account, booking, feedback, loyalty, rewards

ALL_FLOWS: list[Flow] = [
    account.FLOW,
    loyalty.FLOW,
    rewards.FLOW,
    booking.FLOW,
    feedback.FLOW,
]
