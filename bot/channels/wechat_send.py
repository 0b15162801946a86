"""Messages to WeChat members outside a passive reply: the `Sender` for WeChat, and the
delivery of replies the webhook owes.

`WeChatSender` sends a `Reply` as a customer-service text message (`bot.channels.wechat_api`):
its buttons become numbered choices exactly as in a passive reply (`wechat.compose`), and the
choices are kept (`wechat.remember`) so the member's next "1" presses the first.

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
from datetime import UTC, datetime, timedelta

from bot.channels import wechat
from bot.channels.wechat_api import WeChatApi
from bot.conversation import Chat
from domain import inbound
from domain.outgoing import RETRY, SENT, Delivery, Reply

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=48)  # how long after a member's message WeChat takes a CS message
TEXT_LIMIT = 2048  # bytes of a customer-service text message
BATCH = 20
POLL_SECONDS = 2.0
MIN_RETRY_SECONDS = 5.0


class WeChatSender:
    """`domain.outgoing.Sender` for WeChat: a `Reply` as a customer-service text message."""

    channel = wechat.CHANNEL

    def __init__(self, api: WeChatApi, chat: Chat) -> None:
        self.api = api
        self.chat = chat

    async def send(self, address: str, reply: Reply) -> Delivery:
        text, listed = wechat.compose(self.chat, self.chat.default_locale, [reply], TEXT_LIMIT)
        delivery = await self.api.send_text(address, text)
        if delivery.status == SENT and listed:
            async with self.chat.db.transaction() as session:
                await wechat.remember(session, self.chat, address, listed, _now(self.api.clock))
        return delivery


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
        now = _now(self.clock)
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
                retry_at = _now(self.clock) + timedelta(seconds=wait)
            async with self.db.transaction() as session:
                await inbound.delivered(
                    session,
                    owed.id,
                    _now(self.clock),
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


def _now(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


__all__ = ["OwedReplies", "WeChatSender"]
