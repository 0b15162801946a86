"""`memberbot coupon redeem`, `wallet topup|spend`, `cards sell|use` and `points pay`: money at
the counter as the staff account at the terminal (`domain.counter.money`). Each prints the
member's new balances; run again with the same `--key`, it changes nothing and says so."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from domain import members
from domain.counter import money
from memberbot.cli.common import (
    DATE,
    KeyOption,
    MemberQuery,
    StaffOption,
    StoreOption,
    counter_run,
    print_receipt,
    store_id_of,
    yuan_to_cents,
)

coupon_app = typer.Typer(help="Coupons at the counter.", no_args_is_help=True)
wallet_app = typer.Typer(help="Stored value at the counter.", no_args_is_help=True)
cards_app = typer.Typer(help="Punch cards at the counter.", no_args_is_help=True)

Bill = Annotated[str, typer.Option("--bill", help="The bill in yuan, e.g. 300.50.")]
Amount = Annotated[str, typer.Argument(help="Yuan, e.g. 200 or 200.50.")]


def yuan(cents: int) -> str:
    return f"¥{cents / 100:,.2f}"


async def member_id(rt, session, query: str) -> int:  # type: ignore[no-untyped-def]
    return int((await members.find(session, query, rt.settings.default_region)).id or 0)


@coupon_app.command("redeem")
def redeem(
    code: Annotated[str, typer.Argument(help="The coupon's code, as the member shows it.")],
    bill: Bill,
    service: Annotated[
        list[str] | None, typer.Option("--service", help="A service on the bill; repeat.")
    ] = None,
    store: StoreOption = None,
    staff: StaffOption = None,
    key: KeyOption = None,
) -> None:
    """Use a coupon on a bill: validity, minimum spend, store and service are checked."""
    cents = yuan_to_cents(bill, "--bill")

    async def work(rt, session, who):  # type: ignore[no-untyped-def]
        return await money.redeem_coupon(
            session,
            who,
            code=code,
            bill_cents=cents,
            today=rt.today(),
            services=service,
            store_id=await store_id_of(session, store),
            key=key,
        )

    receipt = counter_run(staff, money.REDEEM, work)
    off, due = receipt.detail["discount_cents"], receipt.detail["to_pay_cents"]
    print_receipt(receipt, f"coupon redeemed: {yuan(off)} off, {yuan(due)} to pay.")


def pay(
    query: MemberQuery,
    points_used: Annotated[int, typer.Argument(help="Points to pay with.", min=1)],
    bill: Bill,
    store: StoreOption = None,
    staff: StaffOption = None,
    key: KeyOption = None,
) -> None:
    """Pay part of a bill with the member's points."""
    cents = yuan_to_cents(bill, "--bill")

    async def work(rt, session, who):  # type: ignore[no-untyped-def]
        return await money.pay_with_points(
            session,
            who,
            member_id=await member_id(rt, session, query),
            points_used=points_used,
            bill_cents=cents,
            today=rt.today(),
            rules=rt.config.loyalty,
            store_id=await store_id_of(session, store),
            key=key,
        )

    receipt = counter_run(staff, money.PAY_POINTS, work)
    off, due = receipt.detail["offset_cents"], receipt.detail["to_pay_cents"]
    print_receipt(receipt, f"{points_used:,} points paid {yuan(off)}, {yuan(due)} to pay.")


def _wallet(
    action: str, query: str, amount: str, store: str | None, staff: str | None, key: str | None
) -> None:
    cents = yuan_to_cents(amount, "AMOUNT")
    move = money.top_up if action == money.TOP_UP else money.spend

    async def work(rt, session, who):  # type: ignore[no-untyped-def]
        return await move(
            session,
            who,
            member_id=await member_id(rt, session, query),
            amount_cents=cents,
            store_id=await store_id_of(session, store),
            key=key,
        )

    receipt = counter_run(staff, action, work)
    said = "topped up" if action == money.TOP_UP else "paid from stored value"
    print_receipt(receipt, f"{yuan(cents)} {said}.")


@wallet_app.command("topup")
def topup(
    query: MemberQuery,
    amount: Amount,
    store: StoreOption = None,
    staff: StaffOption = None,
    key: KeyOption = None,
) -> None:
    """Credit money the member paid in."""
    _wallet(money.TOP_UP, query, amount, store, staff, key)


@wallet_app.command("spend")
def spend(
    query: MemberQuery,
    amount: Amount,
    store: StoreOption = None,
    staff: StaffOption = None,
    key: KeyOption = None,
) -> None:
    """Pay from the member's stored value; never below zero."""
    _wallet(money.SPEND, query, amount, store, staff, key)


@cards_app.command("sell")
def sell(
    query: MemberQuery,
    service: Annotated[str, typer.Argument(help="The service code the card is for.")],
    uses: Annotated[int, typer.Option("--uses", min=1, help="How many services.")] = 10,
    expires: Annotated[str | None, DATE.option("Last day it is valid; default never.")] = None,
    store: StoreOption = None,
    staff: StaffOption = None,
    key: KeyOption = None,
) -> None:
    """Sell the member a punch card (paid for at the till)."""
    last_day: date | None = DATE.parse(expires) if expires else None

    async def work(rt, session, who):  # type: ignore[no-untyped-def]
        return await money.sell_card(
            session,
            who,
            member_id=await member_id(rt, session, query),
            service_code=service,
            uses=uses,
            expires_on=last_day,
            store_id=await store_id_of(session, store),
            key=key,
        )

    receipt = counter_run(staff, money.SELL_CARD, work)
    print_receipt(receipt, f"card {receipt.detail['card_id']} sold: {uses} x {service}.")


@cards_app.command("use")
def use(
    query: MemberQuery,
    card_id: Annotated[int, typer.Argument(help="The card's id (see member show).")],
    store: StoreOption = None,
    staff: StaffOption = None,
    key: KeyOption = None,
) -> None:
    """Punch one use off the member's card."""

    async def work(rt, session, who):  # type: ignore[no-untyped-def]
        return await money.use_card(
            session,
            who,
            member_id=await member_id(rt, session, query),
            card_id=card_id,
            today=rt.today(),
            store_id=await store_id_of(session, store),
            key=key,
        )

    receipt = counter_run(staff, money.USE_CARD, work)
    print_receipt(receipt, f"card {card_id} used, {receipt.detail['remaining']} left.")
