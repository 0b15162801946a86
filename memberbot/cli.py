"""The `memberbot` command. Each command is a thin shell over a domain use case."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bot.channels.console import interact, script, show
from db.models import Staff
from db.types import utcnow
from domain import binding, bookings, csvimport, members, points, privacy, profiles, staff, tiers
from domain.errors import ConfigError, DomainError, NotFound
from memberbot import bookingview, consolechat, importview, runtime, staffview
from memberbot import demo as demo_chain
from memberbot.feedbackview import complaints_app
from memberbot.outboxview import outbox_app
from memberbot.rulesview import rules_app
from memberbot.segmentsview import segments_app
from memberbot.settings import Settings

T = TypeVar("T")

app = typer.Typer(help="memberbot: member engagement for car service chains.", no_args_is_help=True)
member_app = typer.Typer(help="Look up members.", no_args_is_help=True)
points_app = typer.Typer(help="Points ledger operations.", no_args_is_help=True)
app.add_typer(member_app, name="member")
tiers_app = typer.Typer(help="Membership tiers.", no_args_is_help=True)
staff_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
app.add_typer(staff_app, name="staff")
app.add_typer(points_app, name="points")
app.add_typer(tiers_app, name="tiers")
app.add_typer(complaints_app, name="complaints")
app.add_typer(outbox_app, name="outbox")
app.add_typer(rules_app, name="rules")
app.add_typer(segments_app, name="segments")
bookings_app = typer.Typer(help="Bookings at the stores.", no_args_is_help=True)
app.add_typer(bookings_app, name="bookings")
console = Console()
err = Console(stderr=True)


def run(work: Callable[[runtime.Runtime], Awaitable[T]], settings: Settings | None = None) -> T:
    """Start the runtime, run one unit of work, and turn domain errors into clear exits."""

    async def _main() -> T:
        rt = await runtime.start(settings)
        try:
            return await work(rt)
        finally:
            await rt.db.dispose()

    with clear_errors():
        return asyncio.run(_main())


@contextmanager
def clear_errors(*refusals: type[Exception]) -> Iterator[None]:
    """A configuration problem exits 2 with every (file, key, reason); a refused request exits
    1 with its message. Never a stack trace for what the user can fix."""
    try:
        yield
    except ConfigError as exc:
        err.print("The shop configuration has problems:", style="red")
        for file, key, reason in exc.problems:
            err.print(f"  {file}: {key}: {reason}", markup=False)
        raise typer.Exit(2) from exc
    except (DomainError, *refusals) as exc:
        err.print(str(exc), style="red", markup=False)
        raise typer.Exit(1) from exc


@app.command()
def init() -> None:
    """Create or migrate the database and sync the shop configuration into it."""

    async def work(rt: runtime.Runtime) -> None:
        console.print(
            f"Database ready ({rt.db.dialect}); {len(rt.config.stores)} store(s), "
            f"{len(rt.config.services)} service(s), {len(rt.config.tiers)} tier(s) synced."
        )

    run(work)


@member_app.command("show")
def member_show(
    query: Annotated[str, typer.Argument(help="Phone, plate or member number.")],
) -> None:
    """The staff view of one member: profile, cars, visits, balances, tier."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.read() as session:
            member = await members.find(session, query, rt.settings.default_region)
            view = await profiles.profile(session, member, rt.today(), rt.config.loyalty)
        staffview.render(console, view)

    run(work)


Query = Annotated[str, typer.Argument(help="Phone, plate or member number.")]


@member_app.command("consent")
def member_consent(
    query: Query,
    answer: Annotated[bool, typer.Argument(help="yes or no to marketing messages.")],
    source: Annotated[str, typer.Option(help="Where it was given.")] = "counter",
    actor: Annotated[str, typer.Option(help="Who records it.")] = "cli",
) -> None:
    """Record a member's yes or no to marketing; service reminders are not affected."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            await privacy.set_consent(session, member.id, answer, source=source, actor=actor)
        console.print(f"{member.member_ref}: marketing consent {'yes' if answer else 'no'}.")

    run(work)


@member_app.command("export")
def member_export(
    query: Query,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON file to write.")],
    actor: Annotated[str, typer.Option(help="Who takes the copy (audited).")] = "cli",
) -> None:
    """Everything held about a member, as JSON, for their data access request."""

    async def work(rt: runtime.Runtime) -> str:
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            data = await privacy.export(session, member.id, actor=actor)
        output.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        return member.member_ref

    ref = run(work)
    console.print(f"{ref}: personal data written to {output}.")


@member_app.command("erase")
def member_erase(
    query: Query,
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

    console.print(f"{run(work)}: personal data erased.")


@staff_app.command("add")
def staff_add(
    name: Annotated[str, typer.Argument(help="The person's name.")],
    role: Annotated[str, typer.Option(help="staff or manager.")] = staff.STAFF,
    store: Annotated[str | None, typer.Option(help="Store code; none = chain-wide.")] = None,
    telegram_id: Annotated[int | None, typer.Option(help="Their Telegram user id.")] = None,
    actor: Annotated[str, typer.Option(help="Who adds them (audited).")] = "cli",
) -> None:
    """Create a staff or manager account."""

    async def work(rt: runtime.Runtime) -> int:
        async with rt.db.transaction() as session:
            person = await staff.add(
                session,
                name=name,
                role=role,
                store_code=store,
                telegram_user_id=telegram_id,
                actor=actor,
            )
        return int(person.id or 0)

    console.print(f"Staff account {run(work)} created: {name}, {role}, {store or 'chain-wide'}.")


@staff_app.command("list")
def staff_list() -> None:
    """Every staff account, active ones first."""

    async def work(rt: runtime.Runtime) -> list[tuple[Staff, str | None]]:
        async with rt.db.read() as session:
            return list(await staff.roster(session))

    table = Table("Id", "Name", "Role", "Store", "Telegram", "Active")
    for person, code in run(work):
        table.add_row(
            str(person.id),
            person.name,
            person.role,
            code or "chain-wide",
            str(person.telegram_user_id or "-"),
            "yes" if person.active else "no",
        )
    console.print(table)


@staff_app.command("deactivate")
def staff_deactivate(
    staff_id: Annotated[int, typer.Argument(help="The account's id (see staff list).")],
    actor: Annotated[str, typer.Option(help="Who deactivates it (audited).")] = "cli",
) -> None:
    """Close an account; it stays in the records so the audit log can name it."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.transaction() as session:
            await staff.deactivate(session, staff_id, actor=actor)

    run(work)
    console.print(f"Staff account {staff_id} deactivated.")


# Lets "-200" through as the delta instead of reading it as an unknown option.
@points_app.command("adjust", context_settings={"ignore_unknown_options": True})
def points_adjust(
    query: Annotated[str, typer.Argument(help="Phone, plate or member number.")],
    delta: Annotated[int, typer.Argument(help="Points to add (positive) or take (negative).")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why; kept in the audit log.")],
    actor: Annotated[str, typer.Option(help="Who is making the change.")] = "cli",
) -> None:
    """Correct a member's points by hand. Needs a reason; never takes the balance below 0."""

    async def work(rt: runtime.Runtime) -> None:
        today = rt.today()
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            await points.adjust(
                session, member.id, delta, today, rt.config.loyalty, reason=reason, actor=actor
            )
            new_balance = await points.balance(session, member.id)
        console.print(f"{member.member_ref}: {delta:+d} points, balance now {new_balance}.")

    run(work)


AsOf = Annotated[
    str | None, typer.Option("--date", help="Business day, YYYY-MM-DD; default today.")
]


def _as_of(rt: runtime.Runtime, text: str | None) -> date:
    if text is None:
        return rt.today()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        message = f"{text!r} is not a date like 2026-03-05"
        raise typer.BadParameter(message, param_hint="--date") from exc


@points_app.command("expire")
def points_expire(as_of: AsOf = None) -> None:
    """Expire points whose lots lapsed before the day (the nightly job, run by hand)."""

    async def work(rt: runtime.Runtime) -> None:
        day = _as_of(rt, as_of)
        async with rt.db.transaction() as session:
            expired = await points.expire(session, day)
        console.print(f"{expired:,} points expired as of {day}.")

    run(work)


@tiers_app.command("review")
def tiers_review(as_of: AsOf = None) -> None:
    """Move every member to the tier their last 12 months of spend earns, up or down."""

    async def work(rt: runtime.Runtime) -> None:
        day = _as_of(rt, as_of)
        async with rt.db.transaction() as session:
            moved = await tiers.review(session, day)
        console.print(f"{moved:,} member(s) changed tier at the review of {day}.")

    run(work)


class ImportKind(StrEnum):
    members = "members"
    vehicles = "vehicles"
    visits = "visits"


@app.command("import")
def import_(
    kind: Annotated[ImportKind, typer.Argument(help="What the file holds.")],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV export, UTF-8 or GBK.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and count only.")] = False,
    no_points: Annotated[bool, typer.Option("--no-points", help="Credit no points.")] = False,
) -> None:
    """Import a dealer or POS export. One bad row and nothing of the file is written."""

    async def work(rt: runtime.Runtime) -> csvimport.ImportResult:
        with importview.progress_bar(console, file) as progress:
            return await csvimport.import_file(
                rt.db,
                kind.value,
                file,
                rt.config.loyalty,
                dry_run=dry_run,
                earn_points=not no_points,
                region=rt.settings.default_region,
                progress=progress,
                today=rt.today(),
            )

    result = run(work)
    importview.render(console, result)
    if result.error_count:
        raise typer.Exit(1)


@app.command()
def demo(
    members: Annotated[
        int, typer.Option(min=1, help="How many members to generate.")
    ] = demo_chain.DEFAULT_MEMBERS,
    seed: Annotated[
        int, typer.Option(help="The same seed builds the same chain.")
    ] = demo_chain.DEFAULT_SEED,
    database_url: Annotated[
        str, typer.Option(help="Where the demo goes; a shop's own database is refused.")
    ] = demo_chain.DEFAULT_DATABASE_URL,
    fresh: Annotated[
        bool,
        typer.Option("--fresh/--keep", help="Rebuild the demo SQLite file, or import on top."),
    ] = True,
    export: Annotated[
        str | None, typer.Option(help="Keep the generated CSV files in this folder.")
    ] = None,
    chat: Annotated[
        bool, typer.Option("--chat/--no-chat", help="End in the sample member's chat.")
    ] = True,
) -> None:
    """Build a demo chain (3 stores, members, cars, 3 years of visits) and show around it."""
    options = demo_chain.DemoOptions(
        database_url=database_url,
        members=members,
        seed=seed,
        fresh=fresh,
        export=Path(export) if export else None,
    )
    with clear_errors(demo_chain.NotADemoDatabase):
        summary = demo_chain.run(options, console)
    demo_chain.render(console, summary)
    if chat:
        _demo_chat(database_url, summary.sample.member.member_ref if summary.sample else None)


def _demo_chat(database_url: str, member_ref: str | None) -> None:
    """End the demo in the member's chat: a live console in a terminal, else a scripted tour."""
    settings = Settings(database_url=database_url, shop_config=demo_chain.DEMO_SHOP)
    live = sys.stdin.isatty() and sys.stdout.isatty()

    async def work(rt: runtime.Runtime) -> None:
        member = await consolechat.first_member(rt, member_ref)
        if member is None:
            return
        session = await consolechat.open_session(rt, member, actor="demo")
        console.rule(f"[bold]The member's chat[/bold] ({member.member_ref}, as on Telegram)")
        if live:
            console.print("Type a number to press a button, words like 积分 or 预约, q to quit.")
            await interact(session, console, console.input)
        else:
            await script(session, console, consolechat.TOUR)
            console.print("Talk to the bot yourself: memberbot chat --demo")

    run(work, settings)


@member_app.command("invite")
def member_invite(
    query: Query,
    hours: Annotated[int, typer.Option(min=1, max=24 * 14, help="How long the code works.")] = 24,
    actor: Annotated[str, typer.Option(help="Who creates it (audited).")] = "cli",
) -> None:
    """A one-time code (and Telegram link) that binds the member's chat; older codes stop
    working."""

    async def work(rt: runtime.Runtime) -> tuple[str, str, str | None]:
        async with rt.db.transaction() as session:
            member = await members.find(session, query, rt.settings.default_region)
            code = await binding.create_invite(
                session, int(member.id or 0), utcnow(), ttl_minutes=hours * 60, actor=actor
            )
        return member.member_ref, code, rt.settings.telegram_bot_username

    ref, code, username = run(work)
    console.print(f"{ref}: invite code [bold]{code}[/bold], valid for {hours} h, single use.")
    if username:
        console.print(f"Telegram link: https://t.me/{username.lstrip('@')}?start={code}")
    else:
        console.print(
            "Set MEMBERBOT_TELEGRAM_BOT_USERNAME to print the Telegram link; the member can "
            "also type the code to the bot."
        )


@app.command("chat")
def chat(
    message: Annotated[
        str | None, typer.Argument(help="Send this one message, print the answer and exit.")
    ] = None,
    phone: Annotated[
        str | None, typer.Option("--phone", help="The member: phone, plate or member number.")
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Talk as the demo's sample member, in the demo database.")
    ] = False,
) -> None:
    """Talk to the bot as a member, in the terminal: the same conversation as on Telegram."""
    if phone is None and not demo:
        err.print("Name the member with --phone (phone, plate or member number), or use --demo.")
        raise typer.Exit(2)
    settings = (
        Settings(database_url=demo_chain.DEFAULT_DATABASE_URL, shop_config=demo_chain.DEMO_SHOP)
        if demo
        else None
    )

    async def work(rt: runtime.Runtime) -> None:
        if phone is not None:
            member = await consolechat.find_member(rt, phone)
        else:
            member = await consolechat.first_member(rt)
            if member is None:
                raise NotFound("the demo database is empty: run `memberbot demo` first")
        session = await consolechat.open_session(rt, member)
        if message is not None:
            show(console, await session.send(message))
        else:
            await interact(session, console, console.input)

    run(work, settings)


@bookings_app.command("day")
def bookings_day(
    store: Annotated[str, typer.Option("--store", help="Store code, as in shop.yaml.")],
    on: Annotated[
        str | None, typer.Option("--date", help="Day, YYYY-MM-DD; default the store's today.")
    ] = None,
    cancelled: Annotated[
        bool, typer.Option("--cancelled", help="Also list cancelled bookings.")
    ] = False,
) -> None:
    """One store's bookings for a day, in time order: the counter's sheet."""

    async def work(rt: runtime.Runtime) -> None:
        async with rt.db.read() as session:
            shop = await bookings.store_by_code(session, store)
            day = _as_of(rt, on) if on else bookingview.store_today(shop, utcnow())
            lines = await bookings.day_sheet(session, shop.id, day, include_cancelled=cancelled)
        bookingview.render_day(console, lines, shop, day)

    run(work)


@app.command()
def serve() -> None:
    """Run the bot (Telegram by long polling, or by webhook when MEMBERBOT_TELEGRAM_WEBHOOK_URL
    is set), the scheduler and /healthz until Ctrl-C or SIGTERM."""
    from memberbot.app import serve as serve_forever  # keeps the other commands' startup light

    with clear_errors():
        asyncio.run(serve_forever())
