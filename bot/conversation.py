"""The conversation core: one inbound event from any channel in, channel-neutral replies out.

Channels (Telegram, WeChat, the console) translate their updates into an `Event` and show the
`Reply`s they get back; they hold no rule. The core finds the member the chat speaks for, the
flow the chat is in (kept in the database, so a restart or another process carries on), and
routes the event to a flow in `bot/flows/`:

* a command (`/points`) or free text that names an intent (积分, "book") runs that intent;
* a button runs the flow action its data names (`booking:day:2026-12-01`);
* a chat bound to a staff account (`domain.staffchats`) acting as staff reaches the staff
  flows (`Flow.staff`) and the public ones; member flows need the chat to act as the member
  (`/member`; `/staff` goes back), and staff flows need a staff chat acting as staff;
* the person joining or leaving the chat (WeChat's subscribe and unsubscribe) runs the
  `joined` or `left` intent, which no button or word can name;
* free text while a flow waits for words (a complaint, an invite code) goes to that flow;
* anything else gets the menu, never a dead end.

What a member types is stripped of control characters and bidi overrides before anything
reads it (`typed_plainly`). Every text a member reads is rendered from
`templates/messages/<locale>/chat/`. Domain refusals
(`DomainError`) become the `chat/error` message for their key; nothing a member sends can crash
the chat.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot import intents
from db.models import Member, Staff
from db.session import Database
from db.types import utcnow
from domain import binding, staffchats
from domain.binding import FlowState
from domain.errors import DomainError
from domain.locales import DEFAULT_LOCALE, LOCALES, resolve_locale
from domain.messages import Renderer
from domain.outgoing import Button, Reply, valid_button_data
from domain.plaintext import strip_unsafe
from domain.shop import ShopConfig

log = logging.getLogger(__name__)

TEXT, BUTTON, CONTACT, COMMAND = "text", "button", "contact", "command"
JOINED, LEFT = "joined", "left"
EVENT_KINDS = (TEXT, BUTTON, CONTACT, COMMAND, JOINED, LEFT)
# Intents only the channel's own events run: a member cannot press or type them.
EVENT_INTENTS = {JOINED: "joined", LEFT: "left"}
TEXT_MAX = 1000


@dataclass(frozen=True)
class Event:
    """What a chat sent, as any channel can describe it.

    `kind` is one of `EVENT_KINDS`: text, a pressed button (`data`), a shared contact, a
    command, or the person joining (`JOINED`, WeChat's subscribe) or leaving (`LEFT`,
    unsubscribe) the chat.
    `sender_id` is the channel's id of the person (Telegram user id), which with
    `contact_user_id` proves a shared contact is the sender's own. `language` is the client's
    language hint, used until the chat is bound to a member with a language of their own.
    """

    channel: str
    address: str
    kind: str
    text: str = ""
    command: str = ""
    data: str = ""
    sender_id: int | None = None
    contact_user_id: int | None = None
    contact_phone: str = ""
    language: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")


@dataclass(frozen=True)
class Answer:
    """The replies to one event and the language they are in (a channel that adds words of
    its own, such as WeChat's numbered choices, speaks the same)."""

    replies: list[Reply]
    locale: str


class Stale(Exception):
    """A button or step that no longer fits the chat (an old keyboard, a flow that lapsed, a
    forged callback): the member gets a polite note and the menu."""


Handler = Callable[["Turn", Sequence[str]], Awaitable[list[Reply]]]


@dataclass(frozen=True)
class Flow:
    """One flow's entry points.

    `intents` are what commands and keywords name (`points`, `book`); `actions` answer button
    data `<name>:<action>:<args…>`; `on_text` takes free text while the chat's saved state
    belongs to this flow. `public` flows also serve chats not yet bound to a member; `staff`
    flows serve only a staff chat acting as staff (the domain authorises each action again).
    """

    name: str
    intents: Mapping[str, Handler] = field(default_factory=dict)
    actions: Mapping[str, Handler] = field(default_factory=dict)
    on_text: Handler | None = None
    public: bool = False
    staff: bool = False


@dataclass
class Turn:
    """Everything a flow handler may use for one event: who, in which language, when, and
    short-lived sessions on the database. Handlers open their own units of work so a read
    never holds the write lock."""

    chat: Chat
    event: Event
    member: Member | None
    state: FlowState | None
    locale: str
    now: datetime
    staff: Staff | None = None  # the active staff account this chat speaks for
    acting_as_member: bool = False  # a chat of both a staff account and a member, as which
    _session: AsyncSession | None = None
    _wrote: bool = False

    @property
    def config(self) -> ShopConfig:
        return self.chat.config

    @property
    def member_id(self) -> int:
        if self.member is None or self.member.id is None:
            raise Stale("no member bound to this chat")
        return self.member.id

    @property
    def as_staff(self) -> bool:
        """Whether the chat acts as its staff account now (a staff-only chat always does)."""
        return self.staff is not None and (self.member is None or not self.acting_as_member)

    @property
    def actor(self) -> str:
        """Who the audit log names for what this chat does."""
        return f"chat:{self.event.channel}"

    def today(self, timezone: str | None = None) -> date:
        """The business day in a store's time zone (the chain's first store by default)."""
        if timezone is None:
            return self.config.today(self.now)
        return self.now.astimezone(ZoneInfo(timezone)).date()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """The turn's own read session while nothing was written (one snapshot, one
        connection for the whole reply); a fresh one after a write, so it sees the write."""
        if self._session is not None and not self._wrote:
            yield self._session
            return
        async with self.chat.db.read() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        self._wrote = True
        async with self.chat.db.transaction() as session:
            yield session

    def text(self, key: str, **context: Any) -> str:
        """The chat template `chat/<key>` rendered in the member's language."""
        return self.chat.render(key, self.locale, self._context(context))

    def say(
        self,
        key: str,
        buttons: Sequence[Sequence[Button]] = (),
        *,
        ask_contact: bool = False,
        **context: Any,
    ) -> Reply:
        return Reply(
            text=self.text(key, **context),
            buttons=tuple(tuple(row) for row in buttons if row),
            contact_button=self.label("share_contact") if ask_contact else "",
        )

    def label(self, name: str) -> str:
        """A short button label. Plain names come from the shared table `chat/label`; a flow's
        own labels are named `<flow>.<name>` and live in `chat/<flow>_labels`."""
        return self.chat.label(name, self.locale)

    def button(self, name: str, data: str | None = None) -> Button:
        """A labelled button; without data it runs the intent of the same name."""
        return Button(self.label(name), data or f"go:{name}")

    def menu(self) -> list[list[Button]]:
        """The main menu, two buttons a row: every member feature is one tap away."""
        if self.as_staff:
            names = tuple(
                name
                for name in intents.STAFF_MENU
                if name != "member_mode" or self.member is not None
            )
        elif self.member is not None:
            names = intents.MENU
        else:
            names = intents.UNBOUND_MENU
        buttons = [self.button(name) for name in names]
        return [buttons[i : i + 2] for i in range(0, len(buttons), 2)]

    async def save_state(self, flow: str, data: dict[str, Any]) -> None:
        async with self.write() as session:
            await binding.save_state(
                session,
                self.event.channel,
                self.event.address,
                flow,
                data,
                self.now,
                self.chat.state_ttl_minutes,
            )
        self.state = FlowState(flow=flow, data=dict(data), updated_at=self.now, expires_at=self.now)

    async def clear_state(self) -> None:
        if self.state is None:
            return
        async with self.write() as session:
            await binding.clear_state(session, self.event.channel, self.event.address)
        self.state = None

    def _context(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        context: dict[str, Any] = {
            "today": self.today(),
            "locale": self.locale,
            "channel": self.event.channel,
        }
        if self.member is not None:
            context["member"] = {"name": self.member.name, "member_ref": self.member.member_ref}
        context.update(extra)
        return context


class Chat:
    """The conversation core shared by every channel: `await chat.handle(event)`."""

    def __init__(
        self,
        db: Database,
        config: ShopConfig,
        *,
        flows: Sequence[Flow] | None = None,
        renderer: Renderer | None = None,
        clock: Callable[[], datetime] = utcnow,
        region: str = "CN",
        default_locale: str = DEFAULT_LOCALE,
        state_ttl_minutes: int = binding.DEFAULT_STATE_TTL_MINUTES,
        bot_username: str | None = None,
    ) -> None:
        if flows is None:
            from bot.flows import ALL_FLOWS

            flows = ALL_FLOWS
        self.db = db
        self.config = config
        self.renderer = renderer or Renderer()
        self.clock = clock
        self.region = region
        self.default_locale = resolve_locale(default_locale)
        self.state_ttl_minutes = state_ttl_minutes
        self.bot_username = bot_username
        self.flows = {flow.name: flow for flow in flows}
        self._labels: dict[tuple[str, str], str] = {}
        self.staff_channel: Callable[[Sequence[str], Reply], Awaitable[None]] | None = None
        self._intents: dict[str, tuple[Flow, Handler]] = {}
        for flow in flows:
            for name, handler in flow.intents.items():
                if name in self._intents:
                    raise ValueError(f"intent {name!r} claimed by two flows")
                self._intents[name] = (flow, handler)

    def render(self, key: str, locale: str, context: Mapping[str, Any]) -> str:
        return self.renderer.render(f"chat/{key}", locale, context)

    async def tell_staff(self, addresses: Sequence[str], reply: Reply) -> None:
        """Alert staff in their own chats (Telegram user ids), when the process has a channel
        for it (`staff_channel`, set by `memberbot serve`). Best effort: what staff must act on
        is also on their lists, so a failed alert is logged and the member's turn goes on."""
        if self.staff_channel is None or not addresses:
            return
        try:
            await self.staff_channel(addresses, reply)
        except Exception:
            log.warning("staff alert failed", exc_info=True)

    def label(self, name: str, locale: str) -> str:
        """A button label: plain names from the shared table `chat/label`, a flow's own
        `<flow>.<name>` from `chat/<flow>_labels`. Labels depend on nothing but their name and
        language, so each is rendered once per process (every menu shows a dozen)."""
        cached = self._labels.get((name, locale))
        if cached is None:
            flow, _, own = name.rpartition(".")
            key = f"{flow}_labels" if flow else "label"
            cached = self.render(key, locale, {"name": own})
            self._labels[(name, locale)] = cached
        return cached

    async def handle(self, event: Event) -> list[Reply]:
        """The replies to one event. Never raises for anything the sender did."""
        return (await self.answer(event)).replies

    async def answer(self, event: Event) -> Answer:
        """`handle`, with the language the replies were written in."""
        event = typed_plainly(event)
        # The turn's lookups are independent point reads: no snapshot needed across them.
        async with self.db.read(snapshot=False) as session:
            turn = await self._turn(session, event)
            try:
                replies = await self._route(turn)
            except Stale:
                replies = [turn.say("stale", turn.menu())]
            except DomainError as exc:
                replies = [turn.say("error", turn.menu(), error=exc.template_context())]
            return Answer(replies, turn.locale)

    async def _turn(self, session: AsyncSession, event: Event) -> Turn:
        now = self.clock()
        member, state, maybe_staff = await binding.chat_context(
            session, event.channel, event.address, now
        )
        desk = (
            await staffchats.staff_for(session, event.channel, event.address)
            if maybe_staff
            else None
        )
        if member is not None:
            locale = resolve_locale(member.locale)
        elif state is not None and state.data.get("locale") in LOCALES:
            locale = state.data["locale"]
        else:
            locale = _client_locale(event.language, self.default_locale)
        return Turn(
            self,
            event,
            member,
            state,
            locale,
            now,
            staff=desk.staff if desk else None,
            acting_as_member=desk.as_member if desk else False,
            _session=session,
        )

    async def _route(self, turn: Turn) -> list[Reply]:
        event = turn.event
        if event.kind in EVENT_INTENTS:
            return await self._run_intent(turn, EVENT_INTENTS[event.kind], [])
        if event.kind == BUTTON:
            return await self._button(turn, event.data)
        if event.kind == CONTACT:
            return await self._run_intent(turn, "contact", [event.contact_phone])
        if event.kind == COMMAND:
            name = intents.command_intent(event.command)
            if name is None:
                return [turn.say("menu", turn.menu(), unknown=True)]
            args = [event.text] if event.text.strip() else []
            return await self._run_intent(turn, name, args)
        return await self._text(turn, event.text.strip()[:TEXT_MAX])

    async def _text(self, turn: Turn, text: str) -> list[Reply]:
        flow = self.flows.get(turn.state.flow) if turn.state is not None else None
        if flow is not None and flow.on_text is not None and self._may_run(turn, flow):
            return await flow.on_text(turn, [text])
        name = intents.text_intent(text)
        if name is not None:
            return await self._run_intent(turn, name, [])
        if turn.member is None and not turn.as_staff:
            return await self._run_intent(turn, "code", [text])
        return [turn.say("menu", turn.menu(), unknown=bool(text))]

    async def _run_intent(self, turn: Turn, name: str, args: Sequence[str]) -> list[Reply]:
        found = self._intents.get(name)
        if found is None:
            return [turn.say("menu", turn.menu(), unknown=True)]
        flow, handler = found
        if not self._may_run(turn, flow):
            return await self._elsewhere(turn, flow)
        return await handler(turn, args)

    async def _button(self, turn: Turn, data: str) -> list[Reply]:
        if not valid_button_data(data):
            raise Stale("malformed button data")
        flow_name, action, *args = data.split(":")
        if flow_name == "go":
            if args or action in EVENT_INTENTS.values():
                raise Stale("menu buttons take no arguments and name no channel event")
            return await self._run_intent(turn, action, [])
        flow = self.flows.get(flow_name)
        handler = flow.actions.get(action) if flow is not None else None
        if flow is None or handler is None:
            raise Stale("no such button")
        if not self._may_run(turn, flow):
            return await self._elsewhere(turn, flow)
        return await handler(turn, args)

    @staticmethod
    def _may_run(turn: Turn, flow: Flow) -> bool:
        """Public flows serve everyone; staff flows a chat acting as staff; member flows a
        chat acting as its member."""
        if flow.public:
            return True
        if flow.staff:
            return turn.as_staff
        return turn.member is not None and not turn.as_staff

    async def _elsewhere(self, turn: Turn, flow: Flow) -> list[Reply]:
        """What a chat gets for a flow it may not run in its present role: the way to bind,
        or its own menu with a word on how to switch."""
        if turn.as_staff:
            return [turn.say("staff_member_only", turn.menu(), member=turn.member is not None)]
        if flow.staff:
            await self._refused_staff(turn, flow)
        if turn.member is None:
            return await self._run_intent(turn, "how_to_bind", [])
        return [turn.say("staff_only", turn.menu(), staff=turn.staff is not None)]

    @staticmethod
    async def _refused_staff(turn: Turn, flow: Flow) -> None:
        """A staff flow asked for from a chat that is not acting as staff: audited, in a unit
        of work of its own (the chat's reply is the refusal, nothing is rolled back)."""
        async with turn.write() as session:
            await staffchats.refused(
                session,
                turn.event.channel,
                flow=flow.name,
                member_id=turn.member.id if turn.member is not None else None,
                staff_id=turn.staff.id if turn.staff is not None else None,
            )


def typed_plainly(event: Event) -> Event:
    """The event with what the person typed (text, command words, a shared phone) stripped of
    escape sequences, control characters and bidi overrides (domain.plaintext): every channel
    comes in here, so none of them reaches a flow, the database or a staff terminal."""
    typed = (event.text, event.command, event.contact_phone)
    plain = tuple(strip_unsafe(value) for value in typed)
    if plain == typed:
        return event
    text, command, phone = plain
    return replace(event, text=text, command=command, contact_phone=phone)


def _client_locale(language: str | None, default: str) -> str:
    """The language an unbound chat is greeted in: the client's, if we speak it."""
    if not language:
        return default
    chosen = resolve_locale(language)
    language_part = language.replace("-", "_").split("_")[0].lower()
    return chosen if chosen.split("_")[0] == language_part else default


__all__ = [
    "BUTTON",
    "COMMAND",
    "CONTACT",
    "EVENT_INTENTS",
    "JOINED",
    "LEFT",
    "LOCALES",
    "TEXT",
    "Answer",
    "Chat",
    "Event",
    "Flow",
    "Handler",
    "Stale",
    "Turn",
]
