"""Who the chat is and how it wants to be spoken to: binding (invite code or own contact), the
menu and help, language, marketing opt-out and opt-in, unbinding; and the person joining or
leaving the chat (WeChat's subscribe and unsubscribe).

This flow is public: an unbound chat reaches only what is here, which is how to bind.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.conversation import Flow, Stale, Turn
from db.models import Member
from domain import binding, members, privacy, staffchats
from domain.locales import LOCALES
from domain.outgoing import Reply

NAME = "account"
CODE_STATE = "account"


async def menu(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    return [turn.say("menu", turn.menu(), unknown=False)]


async def help_(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    return [turn.say("help", turn.menu(), bound=turn.member is not None)]


async def how_to_bind(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """An unbound chat learns its two ways in; the contact button is offered where the channel
    can share one."""
    return [turn.say("how_to_bind", ask_contact=True)]


async def start(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """`/start CODE` (a deep link) binds; a bound chat's plain `/start` opts back in to
    marketing; an unbound chat's is a welcome with the way to bind; a staff chat's is its
    menu."""
    if args and args[0].strip():
        return await _redeem(turn, args[0].strip())
    if turn.as_staff:
        return await menu(turn, [])
    if turn.member is None:
        return await _welcome(turn)
    return await _consent(turn, True)


async def joined(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """The person just joined the chat (followed the WeChat account): a welcome and the way to
    bind, or the menu when the chat already speaks for a member. Unlike a typed `/start`, it
    says nothing about offers: following an account is no consent to marketing."""
    if turn.member is None:
        return await _welcome(turn)
    return await menu(turn, [])


async def _welcome(turn: Turn) -> list[Reply]:
    return [turn.say("welcome"), *(await how_to_bind(turn, []))]


async def left(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """The person left the chat (unfollowed the WeChat account): the chat stops speaking for
    its member, audited as a blocked chat is, and its flow is forgotten. Nothing is said:
    nobody is there to read it."""
    if turn.member is not None:
        async with turn.write() as session:
            await binding.unbind(session, turn.event.channel, turn.event.address, actor=turn.actor)
        turn.member = None
    await turn.clear_state()
    return []


async def code(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Free text from an unbound chat: an invite code if it can be one, else the way in."""
    text = args[0] if args else ""
    if binding.normalize_code(text) is None and staffchats.normalize_code(text) is None:
        return await how_to_bind(turn, [])
    return await _redeem(turn, text)


async def _redeem(turn: Turn, text: str) -> list[Reply]:
    """A member's invite code binds the chat to the member; a staff account's (longer) to the
    account."""
    if staffchats.normalize_code(text) is not None:
        return await _redeem_staff(turn, text)
    async with turn.write() as session:
        bound = await binding.redeem_invite(
            session, turn.event.channel, turn.event.address, text, turn.now
        )
        member = await members.get(session, bound.member_id)
    return await _bound(turn, member)


async def _redeem_staff(turn: Turn, text: str) -> list[Reply]:
    async with turn.write() as session:
        person = await staffchats.redeem_invite(
            session, turn.event.channel, turn.event.address, text, turn.now
        )
    turn.staff, turn.acting_as_member = person, False
    await turn.clear_state()
    return [turn.say("staff_bound", turn.menu(), staff={"name": person.name})]


async def contact(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """A shared contact binds only when it is the sender's own and names one member."""
    async with turn.write() as session:
        bound = await binding.bind_by_contact(
            session,
            turn.event.channel,
            turn.event.address,
            contact_user_id=turn.event.contact_user_id,
            sender_user_id=turn.event.sender_id,
            phone=args[0] if args else "",
            region=turn.chat.region,
            now=turn.now,
        )
        member = await members.get(session, bound.member_id)
    return await _bound(turn, member)


async def _bound(turn: Turn, member: Member) -> list[Reply]:
    turn.member = member
    turn.locale = member.locale if member.locale in LOCALES else turn.locale
    await turn.clear_state()
    return [turn.say("bound", turn.menu())]


async def stop(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    if turn.member is None:
        return await how_to_bind(turn, [])
    return await _consent(turn, False)


async def _consent(turn: Turn, consent: bool) -> list[Reply]:
    async with turn.write() as session:
        await privacy.set_consent(session, turn.member_id, consent, source="chat", actor=turn.actor)
    return [turn.say("opted_in" if consent else "opted_out", turn.menu())]


async def language(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    buttons = [[turn.button(f"lang_{locale}", f"{NAME}:lang:{locale}") for locale in LOCALES]]
    return [turn.say("language", buttons)]


async def set_language(turn: Turn, args: Sequence[str]) -> list[Reply]:
    if len(args) != 1 or args[0] not in LOCALES:
        raise Stale("unknown language")
    locale = args[0]
    if turn.member is not None:
        async with turn.write() as session:
            turn.member = await members.set_locale(session, turn.member_id, locale)
    else:
        await turn.save_state(CODE_STATE, {"locale": locale})
    turn.locale = locale
    return [turn.say("language_set", turn.menu())]


async def unbind(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    if turn.member is None:
        return await how_to_bind(turn, [])
    buttons = [[turn.button("confirm", f"{NAME}:unbind"), turn.button("back", "go:menu")]]
    return [turn.say("unbind_confirm", buttons)]


async def unbind_confirmed(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    if turn.member is None:
        raise Stale("chat is not bound")
    async with turn.write() as session:
        await binding.unbind(session, turn.event.channel, turn.event.address, actor=turn.actor)
    turn.member = None
    await turn.clear_state()
    return [turn.say("unbound", ask_contact=True)]


async def cancel(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """Leave whatever half-finished flow the chat is in."""
    await turn.clear_state()
    return [turn.say("menu", turn.menu(), unknown=False)]


FLOW = Flow(
    name=NAME,
    public=True,
    intents={
        "start": start,
        "joined": joined,
        "left": left,
        "menu": menu,
        "help": help_,
        "how_to_bind": how_to_bind,
        "code": code,
        "contact": contact,
        "stop": stop,
        "language": language,
        "unbind": unbind,
        "cancel": cancel,
    },
    actions={"lang": set_language, "unbind": unbind_confirmed},
)
