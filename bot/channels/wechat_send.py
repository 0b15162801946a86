"""Messages to WeChat members outside a passive reply: the `Sender` for WeChat, and the
delivery of replies the webhook owes.

`WeChatSender` sends what the dispatcher hands it the way WeChat allows
(`domain.allowances` keeps the quotas):

* while the member's last actions allow customer-service messages, as one: its buttons become
  numbered choices exactly as in a passive reply (`wechat.compose`, in the member's language),
  and the choices are kept (`wechat.remember`) so the member's next "1" presses the first;
* otherwise, when its rule has a template message configured (`reply.card`, fitted to
  WeChat's limits when it was rendered), as that template message. Never for marketing:
  WeChat forbids offers in template messages;
* otherwise WAIT: the dispatcher holds the message until the member's next action (or
  counts it unreachable when it has waited too long). So does a customer-service message
  WeChat refuses as out of window although our record allowed it.

`OwedReplies` delivers the replies of turns that overran the webhook's reply budget (the
webhook answered `success` and stored the reply as owed, `domain.inbound`). Each pass takes
the due rows one by one with a conditional update, so of two processes only one sends a
given reply; the text was composed, and its choices kept, by the turn itself. A reply WeChat
asks us to retry waits `retry_after` (never a tight loop); one refused for good, or still
owed after WeChat's 48-hour customer-service window, is marked undelivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.channels import wechat
from bot.channels.wechat_api import WeChatApi, out_of_window
from bot.conversation import Chat
from db.models import MessageCategory
from domain import allowances, inbound
from domain.outgoing import RETRY, SENT, WAIT, Delivery, Reply

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=48)  # how long after a member's message WeChat takes a CS message
TEXT_LIMIT = 2048  # bytes of a customer-service text message
BATCH = 20
POLL_SECONDS = 2.0
MIN_RETRY_SECONDS = 5.0


class WeChatSender:
    """`domain.outgoing.Sender` for WeChat: a customer-service message while the member's
    allowance lasts; else the rule's template message (never for marketing); else WAIT."""

    channel = wechat.CHANNEL

    def __init__(self, api: WeChatApi, chat: Chat) -> None:
        self.api = api
        self.chat = chat
        self.db = chat.db

    async def send(self, address: str, reply: Reply) -> Delivery:
        async with self.db.transaction() as session:
            taken = await allowances.take(session, wechat.CHANNEL, address, self._now())
        if taken is not None:
            delivery = await self._as_text(address, reply)
            if delivery.status == SENT:
                return delivery
            async with self.db.transaction() as session:
                await allowances.give_back(session, taken)
            if not out_of_window(delivery):
                return delivery
            # WeChat counts the window closed although our record did not: fall back.
        if reply.card is not None and reply.category != MessageCategory.MARKETING:
            return await self.api.send_card(address, reply.card)
        return Delivery(WAIT, error="no customer-service allowance: waits for the member")

    async def _as_text(self, address: str, reply: Reply) -> Delivery:
        locale = reply.locale or self.chat.default_locale
        text, listed = wechat.compose(self.chat, locale, [reply], TEXT_LIMIT)
        delivery = await self.api.send_text(address, text)
        if delivery.status == SENT and listed:
            async with self.db.transaction() as session:
                await wechat.remember(session, self.chat, address, listed, self._now())
        return delivery

    def _now(self) -> datetime:
        return wechat.clock_now(self.api.clock)


class OwedReplies:
    """Delivers the webhook's owed replies: `deliver()` is one pass, `run()` loops."""

    def __init__(
        self,
        api: WeChatApi,
        *,
        batch: int = BATCH,
        poll_seconds: float = POLL_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.api = api
        self.db = api.db
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.clock = clock or api.clock or time.time

    async def deliver(self) -> int:
        """Send the owed replies that are due; returns how many went out."""
        now = wechat.clock_now(self.clock)
        async with self.db.read(snapshot=False) as session:
            due = await inbound.due_owed(session, wechat.CHANNEL, now, self.batch)
        sent = 0
        for owed in due:
            if now - owed.created_at > WINDOW:
                async with self.db.transaction() as session:
                    if await inbound.give_up(session, owed.id, now):
                        log.info("wechat: an owed reply outlived the 48-hour window")
                continue
            async with self.db.transaction() as session:
                if not await inbound.take(session, owed.id, now):
                    continue  # another process has it
            delivery = await self._send(owed)
            retry_at = None
            if delivery.status == RETRY:
                wait = max(delivery.retry_after or MIN_RETRY_SECONDS, MIN_RETRY_SECONDS)
                retry_at = wechat.clock_now(self.clock) + timedelta(seconds=wait)
            async with self.db.transaction() as session:
                await inbound.delivered(
                    session,
                    owed.id,
                    wechat.clock_now(self.clock),
                    sent=delivery.status == SENT,
                    retry_at=retry_at,
                )
            if delivery.status == SENT:
                sent += 1
            else:
                log.info("wechat: owed reply %s (%s)", delivery.status, delivery.error)
        return sent

    async def _send(self, owed: inbound.Owed) -> Delivery:
        try:
            now = wechat.clock_now(self.clock)
            async with self.db.transaction() as session:
                # The reply answers the member's own message, whose allowance it uses.
                await allowances.take(session, wechat.CHANNEL, owed.address, now)
            return await self.api.send_text(owed.address, owed.reply)
        except Exception as exc:  # the database or a bug: try again later, do not lose it
            log.warning("wechat: sending an owed reply failed (%s)", type(exc).__name__)
            return Delivery(RETRY, error=type(exc).__name__)

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                await self.deliver()
            except Exception as exc:
                log.warning("wechat: owed replies pass failed (%s)", type(exc).__name__)
            await asyncio.sleep(self.poll_seconds)


__all__ = ["OwedReplies", "WeChatSender"]
