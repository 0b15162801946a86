"""Spending points in the chat: the catalogue, one reward picked, then confirmed.

A confirmation must never charge twice, whatever Telegram resends or an impatient member taps:

* `pick` draws a fresh nonce, saves it in the chat's flow state with the reward, and puts it in
  the confirm button's data;
* `confirm` runs in one write unit of work: it reloads the state, accepts only the nonce it
  holds for that reward, and redeems with an idempotency key made of the chat, the reward and
  that nonce. A second tap of the same button finds the confirmation marked done and gets the
  same coupon back (the key replays it) with a "done already" note; a button from an older pick,
  a forged one or one whose state lapsed is `Stale`;
* two taps racing past the state check (PostgreSQL reads it without a lock) still carry the one
  key, and the domain's member lock plus key replay make the second return the first's coupon.

Refusals (an unknown or withdrawn reward, too few points) are answered in words before anything
is written.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.conversation import Flow, Stale, Turn
from bot.flows.loyalty import coupon_view, reward_name
from db.models import Reward
from domain import binding, rewards
from domain.errors import InsufficientPoints, RewardUnavailable
from domain.outgoing import Button, Reply

log = logging.getLogger(__name__)

NAME = "rewards"
NONCE_BYTES = 6
# A reward code travels as one button argument (see bot.conversation's button data charset).
_ARG = re.compile(r"[A-Za-z0-9_.+-]{1,32}")
_NONCE = re.compile(rf"[0-9a-f]{{{NONCE_BYTES * 2}}}")


def _fits_button(code: str) -> bool:
    return bool(_ARG.fullmatch(code))


def redemption_key(channel: str, address: str, reward_code: str, nonce: str) -> str:
    """The idempotency key of one confirmation. The chat is hashed: the key is stored in the
    ledger and chat addresses are not for ledgers."""
    chat = hashlib.sha256(f"{channel}:{address}".encode()).hexdigest()[:16]
    return f"chat:{chat}:{reward_code}:{nonce}"


def _reward_view(reward: Reward, balance: int, locale: str) -> dict[str, Any]:
    return {
        "code": reward.code,
        "name": reward_name(reward, locale),
        "cost": reward.points_cost,
        "affordable": balance >= reward.points_cost,
        "missing": max(0, reward.points_cost - balance),
        "kind": reward.coupon_kind,
        "value_cents": reward.coupon_value_cents,
        "percent_off": reward.coupon_percent,
        "min_spend_cents": reward.min_spend_cents,
        "valid_days": reward.valid_days,
    }


def _to_catalogue(turn: Turn) -> list[list[Button]]:
    return [[Button(turn.label("rewards.catalogue"), "go:rewards"), turn.button("menu")]]


async def catalogue(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """Every active reward with its cost, the affordable ones marked, one button each."""
    async with turn.read() as session:
        shelf = await rewards.shelf(session, turn.member_id)
    balance = shelf.balance
    shown = [_reward_view(reward, balance, turn.locale) for reward in shelf.rewards]
    buttons: list[list[Button]] = []
    for view in shown:
        if not _fits_button(view["code"]):
            log.warning("reward code %r does not fit a chat button; not offered", view["code"])
            continue
        label = turn.text("rewards_button", reward=view)
        buttons.append([Button(label, f"{NAME}:pick:{view['code']}")])
    buttons.append([turn.button("menu")])
    return [turn.say("rewards_catalogue", buttons, rewards=shown, balance=balance)]


async def pick(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Ask to confirm one reward, or say plainly why it cannot be had; writes only the state."""
    if len(args) != 1 or not _fits_button(args[0]):
        raise Stale("pick takes one reward code")
    offer = await _offer(turn, args[0])
    if offer is None:
        return [_unavailable(turn)]
    reward, balance = offer.reward, offer.balance
    view = _reward_view(reward, balance, turn.locale)
    if not view["affordable"]:
        return [_short(turn, offer)]
    nonce = secrets.token_hex(NONCE_BYTES)
    await turn.save_state(NAME, {"reward": reward.code, "nonce": nonce, "done": False})
    buttons = [
        [Button(turn.label("rewards.confirm"), f"{NAME}:confirm:{reward.code}:{nonce}")],
        [Button(turn.label("rewards.back"), "go:rewards"), turn.button("menu")],
    ]
    after = balance - reward.points_cost
    return [turn.say("rewards_confirm", buttons, reward=view, balance=balance, after=after)]


async def confirm(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Redeem the picked reward once; a repeated tap shows the same coupon, charging nothing."""
    if len(args) != 2 or not _fits_button(args[0]) or not _NONCE.fullmatch(args[1]):
        raise Stale("confirm takes a reward code and a nonce")
    code, nonce = args
    key = redemption_key(turn.event.channel, turn.event.address, code, nonce)
    try:
        async with turn.write() as session:
            again = await _waiting(turn, session, code, nonce)
            bought = await rewards.buy(
                session, turn.member_id, code, today=turn.today(), key=key, actor=turn.actor
            )
            if not again:
                await _mark_done(turn, session, code, nonce)
    except RewardUnavailable:  # withdrawn since the pick; nothing is written
        return [_unavailable(turn)]
    except InsufficientPoints:
        return await _short_now(turn, code)
    return [_redeemed(turn, bought, again=again)]


async def _waiting(turn: Turn, session: AsyncSession, code: str, nonce: str) -> bool:
    """Check that this confirmation is the one the chat waits for (`Stale` otherwise); True
    when it was confirmed before (a repeated tap)."""
    event = turn.event
    state = await binding.load_state(session, event.channel, event.address, turn.now)
    if state is None or state.flow != NAME or state.data.get("reward") != code:
        raise Stale("no pick of this reward waiting")
    if state.data.get("nonce") != nonce:
        raise Stale("an older or forged confirmation")
    return bool(state.data.get("done"))


async def _mark_done(turn: Turn, session: AsyncSession, code: str, nonce: str) -> None:
    event = turn.event
    await binding.save_state(
        session,
        event.channel,
        event.address,
        NAME,
        {"reward": code, "nonce": nonce, "done": True},
        turn.now,
        turn.chat.state_ttl_minutes,
    )


def _redeemed(turn: Turn, bought: rewards.Purchase, *, again: bool) -> Reply:
    reward = bought.reward
    buttons = [
        [Button(turn.label("rewards.my_coupons"), "go:coupons"), turn.button("menu")],
    ]
    return turn.say(
        "rewards_done",
        buttons,
        again=again,
        reward={"name": reward_name(reward, turn.locale), "cost": reward.points_cost},
        coupon=coupon_view(bought.coupon, reward, turn.locale),
        balance=bought.balance,
    )


async def _short_now(turn: Turn, code: str) -> list[Reply]:
    """The balance fell between pick and confirm (a counter redemption, expiry): say by how
    much, as the pick would have."""
    await turn.clear_state()
    offer = await _offer(turn, code)
    return [_unavailable(turn) if offer is None else _short(turn, offer)]


async def _offer(turn: Turn, code: str) -> rewards.Offer | None:
    """The reward as it is offered now, with the member's balance; None once withdrawn."""
    try:
        async with turn.read() as session:
            return await rewards.offer(session, turn.member_id, code)
    except RewardUnavailable:
        return None


def _unavailable(turn: Turn) -> Reply:
    return turn.say("rewards_unavailable", _to_catalogue(turn))


def _short(turn: Turn, offer: rewards.Offer) -> Reply:
    """Too few points for the reward: by how much."""
    view = _reward_view(offer.reward, offer.balance, turn.locale)
    return turn.say("rewards_short", _to_catalogue(turn), reward=view, balance=offer.balance)


FLOW = Flow(
    name=NAME,
    intents={"rewards": catalogue},
    actions={"pick": pick, "confirm": confirm},
)
