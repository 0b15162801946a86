"""The console channel: the member conversation in a terminal, no token needed.

A newcomer (or a developer) talks to the same conversation core the Telegram and WeChat chats
use. Replies are printed with their buttons numbered; typing a number presses that button,
`/command args` is a command, anything else is free text. The "share my phone" button shares the
phone of the member the session speaks for, as a messenger would share its own account's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from bot.conversation import BUTTON, COMMAND, CONTACT, TEXT, Chat, Event
from domain.binding import CONSOLE
from domain.outgoing import Button, Reply
from domain.plaintext import inert

QUIT_WORDS = frozenset({"q", "quit", "exit", "退出"})
# The console's own stand-in for a messenger account id, so a shared contact is "one's own".
CONSOLE_USER_ID = 1


@dataclass
class ConsoleSession:
    """One member's conversation in the terminal; remembers the last buttons shown so a typed
    number can press one."""

    chat: Chat
    address: str
    phone: str = ""
    language: str | None = None
    choices: list[Button | str] = field(default_factory=list)

    def event_for(self, line: str) -> Event:
        """What a typed line means: a number pressing a shown button, a /command, or text."""
        text = line.strip()
        if text.isdigit() and 1 <= int(text) <= len(self.choices):
            choice = self.choices[int(text) - 1]
            if isinstance(choice, Button):
                return self._event(BUTTON, data=choice.data)
            return self._event(
                CONTACT,
                contact_phone=self.phone,
                contact_user_id=CONSOLE_USER_ID,
            )
        if text.startswith("/"):
            command, _, args = text[1:].partition(" ")
            return self._event(COMMAND, command=command, text=args.strip())
        return self._event(TEXT, text=text)

    async def send(self, line: str) -> list[Reply]:
        replies = await self.chat.handle(self.event_for(line))
        self.choices = _choices(replies)
        return replies

    def _event(self, kind: str, **fields: object) -> Event:
        return Event(
            channel=CONSOLE,
            address=self.address,
            kind=kind,
            sender_id=CONSOLE_USER_ID,
            language=self.language,
            **fields,  # type: ignore[arg-type]
        )


def _choices(replies: Sequence[Reply]) -> list[Button | str]:
    choices: list[Button | str] = []
    for reply in replies:
        choices.extend(reply.all_buttons())
        if reply.contact_button:
            choices.append(reply.contact_button)
    return choices


def show(console: Console, replies: Sequence[Reply], *, first: int = 1) -> None:
    """Print replies as a chat would show them, buttons numbered from `first` on."""
    number = first
    for reply in replies:
        console.print(f"[bold cyan]bot>[/bold cyan] {_shown(reply.text)}")
        for row in reply.buttons:
            cells = []
            for button in row:
                cells.append(f"[bold][{number}][/bold] {_shown(button.label)}")
                number += 1
            console.print("      " + "   ".join(cells))
        if reply.contact_button:
            console.print(f"      [bold][{number}][/bold] {_shown(reply.contact_button)}")
            number += 1


def _shown(text: str) -> str:
    """Text of the conversation (names, cars and what members typed are in it) as rich
    markup that prints it as written: brackets escaped, control characters and bidi overrides
    visible (`domain.plaintext.inert`), never run by the terminal."""
    return escape(inert(text))


async def interact(
    session: ConsoleSession,
    console: Console,
    read_line: Callable[[str], str],
    *,
    opening: str = "/menu",
) -> None:
    """A read-reply loop until the member types q (or the input ends)."""
    show(console, await session.send(opening))
    while True:
        try:
            line = read_line("you> ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if line.strip().casefold() in QUIT_WORDS:
            return
        if not line.strip():
            continue
        show(console, await session.send(line))


async def script(session: ConsoleSession, console: Console, lines: Sequence[str]) -> None:
    """Play typed lines one after another, echoing them: the demo's tour when there is no
    terminal to talk in."""
    for line in lines:
        console.print(f"[bold green]you>[/bold green] {_shown(line)}")
        show(console, await session.send(line))
