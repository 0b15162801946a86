"""The `memberbot` command: the root Typer app, assembled from one module per command group.

Each command is a thin shell over a domain use case. `common` holds what the commands share
(the consoles, the runner that turns errors into exits, the day options); every other module
holds one group's commands and the tables they print, and imports nothing of this package but
`common`. Only this module knows them all: it mounts them, and the order it adds them in is the
order `memberbot --help` lists them (the root's own commands first, then the groups).
"""

from __future__ import annotations

import typer

from memberbot import runtime
from memberbot.cli import (
    audit,
    bookings,
    chat,
    complaints,
    demo,
    imports,
    member,
    money,
    outbox,
    points,
    rules,
    segments,
    serve,
    staff,
    tiers,
    visit,
    wechat,
)
from memberbot.cli.common import console, run

app = typer.Typer(help="memberbot: member engagement for car service chains.", no_args_is_help=True)


@app.command()
def init() -> None:
    """Create or migrate the database and sync the shop configuration into it."""

    async def work(rt: runtime.Runtime) -> None:
        console.print(
            f"Database ready ({rt.db.dialect}); {len(rt.config.stores)} store(s), "
            f"{len(rt.config.services)} service(s), {len(rt.config.tiers)} tier(s) synced."
        )

    run(work)


app.command("import")(imports.import_)
app.command("demo")(demo.demo)
app.command("chat")(chat.chat)
app.command("serve")(serve.serve)
app.command("audit")(audit.audit)

app.add_typer(member.app, name="member")
app.add_typer(staff.app, name="staff")
app.add_typer(points.app, name="points")
app.add_typer(tiers.app, name="tiers")
app.add_typer(complaints.app, name="complaints")
app.add_typer(outbox.app, name="outbox")
app.add_typer(rules.app, name="rules")
app.add_typer(segments.app, name="segments")
app.add_typer(bookings.app, name="bookings")
app.add_typer(wechat.app, name="wechat")
app.add_typer(visit.app, name="visit")
app.add_typer(money.coupon_app, name="coupon")
app.add_typer(money.wallet_app, name="wallet")
app.add_typer(money.cards_app, name="cards")
points.app.command("pay")(money.pay)

__all__ = ["app"]
