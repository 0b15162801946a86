"""`memberbot member …`: one member at the counter: their page, their consent, their data.

`show` prints the page staff work from (drawn by `memberbot.staffview`, which the demo's
summary draws too). `export` and `erase` answer a member's data access and erasure requests;
both are audited, and erasure asks for `--yes` because it cannot be undone. `invite` hands out
the one-time code that binds the member's chat, and with `--qr` a WeChat QR code whose scene
is that code. The QR code's settings and file are checked before the code is made; when
WeChat then refuses, the code already made is named, since it works without the QR code.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from db.types import utcnow
from domain import binding, members, privacy, profiles
from domain.counter import lookup
from domain.errors import InvalidInput
from memberbot import runtime, staffview
from memberbot.cli.common import (
    MemberQuery,
    StaffOption,
    clear_errors,
    console,
    counter_run,
    err,
    run,
)
from memberbot.settings import get_settings
from memberbot.staffview import line

if TYPE_CHECKING:
    from bot.channels import wechat_admin

app = typer.Typer(help="Look up members.", no_args_is_help=True)


@app.command("show")
def show(query: MemberQuery) -> None:
    """The staff view of one member: profile, cars, visits, balances, tier."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.read() as session:
            member = await members.find(session, query, rt.settings.default_region)
            view = await profiles.profile(session, member, rt.today(), rt.config.loyalty)
        staffview.render(console, view)

    run(work)


@app.command("find")
def find(
    query: Annotated[str, typer.Argument(help="Member code, member number, phone or plate.")],
    staff: StaffOption = None,
) -> None:
    """Find a member at the counter (audited), phones and plates masked."""

    async def work(rt: runtime.Runtime, session: AsyncSession, who: str) -> lookup.Found:
        return await lookup.find(
            session,
            who,
            query,
            now=utcnow(),
            today=rt.today(),
            rules=rt.config.loyalty,
            region=rt.settings.default_region,
        )

    found = counter_run(staff, lookup.ACTION, work)
    view = found.profile
    line = (
        f"{found.member.member_ref} · {found.member.name} · {found.phone_masked} · "
        f"cars {', '.join(found.plates_masked) or '-'} · {view.tier.tier.name_en} · "
        f"{view.points.balance:,} points · stored value ¥{view.stored_value_cents / 100:,.2f}"
    )
    console.print(line, markup=False, highlight=False)
    for coupon, _ in view.coupons:
        console.print(f"  coupon {coupon.code} until {coupon.valid_until}", markup=False)
    for card, _ in view.punch_cards:
        console.print(
            f"  card {card.card.id}: {card.card.service_code}, {card.remaining} left", markup=False
        )


@app.command("consent")
def consent(
    query: MemberQuery,
    answer: Annotated[bool, typer.Argument(help="yes or no to marketing messages.")],
    source: Annotated[str, typer.Option(help="Where it was given.")] = "counter",
    actor: Annotated[str, typer.Option(help="Who records it.")] = "cli",
) -> None:
    """Record a member's yes or no to marketing; service reminders are not affected."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            await privacy.set_consent(session, member.id, answer, source=source, actor=actor)
        console.print(line(f"{member.member_ref}: marketing consent {'yes' if answer else 'no'}."))

    run(work)


@app.command("export")
def export(
    query: MemberQuery,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON file to write.")],
    actor: Annotated[str, typer.Option(help="Who takes the copy (audited).")] = "cli",
) -> None:
    """Everything held about a member, as JSON, for their data access request."""

    async def work(rt: runtime.Runtime) -> str:
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            data = await privacy.export(session, member.id, actor=actor)
            # Written inside the transaction: a copy that could not be written rolls back
            # the audit entry that says it was taken.
            write_json(output, data)
        return member.member_ref

    ref = run(work)
    console.print(line(f"{ref}: personal data written to {output}."))


def write_json(output: Path, data: object) -> None:
    """The export as UTF-8 JSON; a path that cannot be written is a refusal (exit 1) naming
    it, not a traceback."""
    try:
        output.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc.strerror or exc}") from exc


@app.command("erase")
def erase(
    query: MemberQuery,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why; kept in the audit log.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm; erasure cannot be undone.")] = False,
    actor: Annotated[str, typer.Option(help="Who erases (audited).")] = "cli",
) -> None:
    """Erase a member's personal data; visits and balances stay, anonymous, for the books."""
    if not yes:
        err.print("Erasure cannot be undone: add --yes to confirm.", style="red")
        raise typer.Exit(1)

    async def work(rt: runtime.Runtime) -> str:
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            await privacy.erase(session, member.id, actor=actor, reason=reason)
        return member.member_ref

    console.print(line(f"{run(work)}: personal data erased."))


@app.command("invite")
def invite(
    query: MemberQuery,
    hours: Annotated[int, typer.Option(min=1, max=24 * 14, help="How long the code works.")] = 24,
    qr: Annotated[
        Path | None,
        typer.Option(
            "--qr",
            dir_okay=False,
            help="Also write a WeChat QR code (PNG) that binds the member's WeChat when scanned.",
        ),
    ] = None,
    actor: Annotated[str, typer.Option(help="Who creates it (audited).")] = "cli",
) -> None:
    """A one-time code (and Telegram link, and with --qr a WeChat QR code) that binds the
    member's chat; older codes stop working."""
    access = _qr_ready(qr) if qr is not None else None

    async def work(rt: runtime.Runtime) -> Invited:
        now = utcnow()
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            code = await binding.create_invite(
                session, int(member.id or 0), now, ttl_minutes=hours * 60, actor=actor
            )
        invited = Invited(member.member_ref, code, rt.settings.telegram_bot_username)
        if access is None:
            return invited
        return await invited.with_qr(rt, access, now + timedelta(hours=hours))

    invited = run(work)
    ref, code, username = invited.ref, invited.code, invited.username
    console.print(
        line(f"{ref}: invite code ", (code, "bold"), f", valid for {hours} h, single use.")
    )
    if username:
        console.print(line(f"Telegram link: https://t.me/{username.lstrip('@')}?start={code}"))
    else:
        console.print(
            "Set MEMBERBOT_TELEGRAM_BOT_USERNAME to print the Telegram link; the member can "
            "also type the code to the bot."
        )
    if qr is not None:
        _write_qr(invited, qr)


@dataclass(frozen=True)
class Invited:
    """An invite just made, and its WeChat QR code when one was asked for: the PNG, or why
    there is none (the code itself works either way)."""

    ref: str
    code: str
    username: str | None
    png: bytes | None = None
    qr_seconds: int = 0
    qr_problem: str | None = None

    async def with_qr(
        self, rt: runtime.Runtime, access: wechat_admin.ApiAccess, expires_at: datetime
    ) -> Invited:
        from bot.channels import wechat_admin

        seconds = int((expires_at - utcnow()).total_seconds())
        api = access.client(rt.db)
        try:
            made = await wechat_admin.invite_qr(api, self.code, seconds)
        except wechat_admin.AdminCallFailed as exc:
            return replace(self, qr_problem=str(exc))
        finally:
            api.close()
        png = wechat_admin.qr_png(made.url)
        return replace(self, png=png, qr_seconds=made.expire_seconds)


def _qr_ready(path: Path) -> wechat_admin.ApiAccess:
    """Before any code is made: the WeChat settings, and a place the PNG can be written."""
    from memberbot.app import wechat_api_access

    with clear_errors():
        access = wechat_api_access(get_settings())
    folder = path.parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        err.print(f"Cannot write the QR code to {path}: no such writable folder.", markup=False)
        raise typer.Exit(2)
    return access


def _write_qr(invited: Invited, path: Path) -> None:
    problem = invited.qr_problem
    if invited.png is not None:
        try:
            path.write_bytes(invited.png)
        except OSError as exc:
            problem = f"cannot write {path} ({exc.strerror or type(exc).__name__})"
    if problem is None:
        hours = math.ceil(invited.qr_seconds / 3600)
        console.print(
            f"WeChat QR code written to {path}: following the account through it (or scanning "
            f"it while following) binds the chat; it works for {hours} h."
        )
        return
    err.print(
        f"The invite code {invited.code} was created and works without the QR code (typed, or "
        f"by the Telegram link), but the WeChat QR code was not made: {problem}",
        markup=False,
    )
    raise typer.Exit(1)
