"""Showing the demo chain: its stores, its members, what is coming up, one member as staff see
them, and what to try next."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from domain.reports import ACTIVE_DAYS, LOST_DAYS
from memberbot import staffview
from memberbot.demo.chain import DEMO_SHOP, shown_url
from memberbot.demo.summary import DemoSummary, Due
from memberbot.staffview import line as plain_line
from memberbot.staffview import plain

ACTIVITY = (
    ("active", "Active", f"a visit in the last {ACTIVE_DAYS} days"),
    ("lapsing", "Lapsing", f"last visit {ACTIVE_DAYS}–{LOST_DAYS} days ago"),
    ("lost", "Lost", f"no visit for over {LOST_DAYS} days"),
    ("never", "Never visited", "no visit on record"),
)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _due_table(title: str, lines: list[Due], count: int, columns: tuple[str, str]) -> Table:
    table = Table("Date", "Member", "Name", *columns, title=title, title_justify="left")
    for line in lines:
        table.add_row(
            str(line.day or "-"),
            plain(line.member_ref),
            plain(line.name),
            *(plain(detail) for detail in line.details),
        )
    if count > len(lines):
        table.add_row("…", f"{count - len(lines)} more", "", "", "")
    return table


def try_next(summary: DemoSummary) -> list[str]:
    """Real commands to run next, pointed at the demo database and its shop configuration."""
    lines = [
        f"export MEMBERBOT_DATABASE_URL={shown_url(summary.database_url)}",
        f"export MEMBERBOT_SHOP_CONFIG={DEMO_SHOP}",
    ]
    if summary.sample is not None:
        ref = summary.sample.member.member_ref
        lines += [
            f"memberbot member show {ref}",
            f"memberbot chat --phone {ref}",
            f'memberbot points adjust {ref} 200 --reason "goodwill after a late pick-up"',
            f"memberbot member invite {ref}",
        ]
    lines += [
        f"memberbot rules preview --date {summary.today} --limit 2",
        "memberbot outbox status",
        f"memberbot segments export --as-of {summary.today} -o demo-segments.csv",
        "memberbot bookings day --store sh-xuhui",
    ]
    if summary.export is not None:
        lines.append(f"memberbot import visits {summary.export / 'visits.csv'} --dry-run")
    else:
        lines.append(
            "memberbot demo --keep --export demo-csv && "
            "memberbot import visits demo-csv/visits.csv --dry-run"
        )
    return lines


def _render_chain(console: Console, summary: DemoSummary) -> None:
    console.rule(plain_line(("Demo chain", "bold"), f" · {summary.chain} · today {summary.today}"))
    stores = Table(
        "Code",
        "Store",
        "Bays",
        "Members",
        "Visits 12m",
        "Revenue 12m",
        title="Stores (members by home store; the last 12 months)",
        title_justify="left",
    )
    for s in summary.stores:
        stores.add_row(
            plain(s.code),
            plain(s.name),
            str(s.bays),
            f"{s.members:,}",
            f"{s.visits_12m:,}",
            f"¥{s.revenue_12m_cents // 100:,}",
        )
    console.print(stores)
    if not summary.imports:
        console.print("Kept the existing demo database as it is: nothing was imported.")
        return
    imports = Table(
        "File",
        "Rows",
        "Created",
        "Updated",
        "Unchanged",
        "Errors",
        title="Imported through the CSV importer",
        title_justify="left",
    )
    for result in summary.imports:
        imports.add_row(
            f"{result.kind}.csv",
            f"{result.rows_read:,}",
            f"{result.created:,}",
            f"{result.updated:,}",
            f"{result.unchanged:,}",
            str(result.error_count),
        )
    console.print(imports)
    for result in summary.imports:
        for error in result.errors[:3]:
            text = f"  {result.kind}.csv line {error.line}: {error.reason}"
            console.print(plain(text, style="red"))


def _render_members(console: Console, summary: DemoSummary) -> None:
    console.rule("[bold]Members[/bold]")
    console.print(
        f"{summary.members:,} members · {summary.vehicles:,} cars · {summary.visits:,} visits"
    )
    console.print(
        f"Points issued {summary.points_issued:,} · expired {summary.points_expired:,} · "
        f"outstanding {summary.points_outstanding:,}"
    )
    tiers_table = Table("Tier", "Members", "Share", title="Tiers", title_justify="left")
    for label, count in summary.tiers:
        tiers_table.add_row(plain(label), f"{count:,}", _share(count, summary.members))
    activity = Table(
        "Activity", "Members", "Share", "Meaning", title="Activity", title_justify="left"
    )
    for key, label, meaning in ACTIVITY:
        count = summary.activity[key]
        activity.add_row(label, f"{count:,}", _share(count, summary.members), meaning)
    console.print(tiers_table)
    console.print(activity)


def _render_loyalty(console: Console, summary: DemoSummary) -> None:
    """Four lines: coupons, stored value, punch cards and points spent."""
    console.rule("[bold]Loyalty[/bold]")
    totals = summary.loyalty
    if summary.played is not None:
        console.print(
            f"[dim]Played today through the real use cases: {summary.played.total:,} actions "
            f"of {summary.played.members:,} members (rewards, birthday coupons, top-ups, "
            "punch cards, points towards bills).[/dim]"
        )
    sources = ", ".join(f"{c.issued:,} {c.source}" for c in totals.coupons)
    console.print(
        f"Coupons {totals.coupons_issued:,} issued ({sources or 'none'}) · "
        f"{totals.coupons_used:,} used · {totals.coupons_valid:,} valid today"
    )
    console.print(
        f"Stored value {staffview.yuan(totals.stored_value_cents)} held by "
        f"{totals.stored_value_members:,} members"
    )
    console.print(
        f"Punch cards {totals.punch_cards_active:,} active · {totals.punch_uses_left:,} uses left"
    )
    console.print(
        f"Points redeemed {totals.points_redeemed:,} for rewards · "
        f"{totals.points_offset:,} paid towards bills"
    )


def _render_coming_up(console: Console, summary: DemoSummary) -> None:
    console.rule("[bold]Coming up[/bold]")
    expiring = (
        f"Points expiring in the next {summary.expiring_days} days: "
        f"{summary.expiring_points:,} points of {summary.expiring_members:,} members"
    )
    insurance = (
        f"Insurance renewals in the next {summary.insurance_days} days: "
        f"{summary.insurance_count:,} cars"
    )
    inspections = (
        f"Annual inspections in the next {summary.inspection_days} days: "
        f"{summary.inspection_count:,} cars"
    )
    for title, lines, count, columns in (
        (expiring, summary.expiring, summary.expiring_members, ("Points", "Phone")),
        (insurance, summary.insurance, summary.insurance_count, ("Plate", "Car")),
        (inspections, summary.inspections, summary.inspection_count, ("Plate", "Car")),
    ):
        console.print(_due_table(title, lines, count, columns))


def _render_lifecycle(console: Console, summary: DemoSummary) -> None:
    """What today's lifecycle rules queued: the reminders a shop's members would get today."""
    run = summary.lifecycle
    if run is None:
        return
    console.rule(f"[bold]Today's lifecycle messages[/bold] · {run.day}")
    table = Table("Rule", "Queued", "Coupons", title="Queued in the outbox, to be sent by serve")
    for part in run.rules:
        if part.enqueued or part.already:
            queued = f"{part.enqueued + part.already:,}"
            table.add_row(plain(part.rule), queued, f"{part.coupons:,}")
    total = run.total()
    table.add_row("[bold]all[/bold]", f"[bold]{total.enqueued + total.already:,}[/bold]", "")
    console.print(table)
    console.print(
        "Demo members have no chat bound, so `memberbot serve` would count these as "
        "unreachable (for staff to phone) until a member links a chat."
    )


def _render_next(console: Console, summary: DemoSummary) -> None:
    console.rule("[bold]Try next[/bold]")
    console.print(
        "Look around with the CLI. The first two lines point it at the demo instead of your shop:"
    )
    for line in try_next(summary):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    t = summary.timings
    if t:
        steps = ("generate", "import", "loyalty", "scores", "rules")
        parts = [f"{step} {t[step]:.1f} s" for step in steps if step in t]
        console.print(f"[dim]Done in {t.get('total', 0):.1f} s ({', '.join(parts)}).[/dim]")


def render(console: Console, summary: DemoSummary) -> None:
    """The closing summary: the chain, its members, their loyalty ledgers, what is coming up,
    one member, next steps."""
    _render_chain(console, summary)
    _render_members(console, summary)
    _render_loyalty(console, summary)
    _render_coming_up(console, summary)
    _render_lifecycle(console, summary)
    if summary.sample is not None:
        console.rule("[bold]Sample member[/bold] (what staff see at the counter)")
        staffview.render(console, summary.sample)
    _render_next(console, summary)
