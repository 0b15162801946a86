"""The counter clerk's page on one member (a `domain.profiles.MemberProfile`), drawn with rich.

Formatting and masking happen here, not in the domain: the clerk sees a masked phone and the
plates of the cars in front of them, where another channel may show less.

`memberbot member show` draws it and so does the demo's summary (`memberbot.demo.render`), which
is why it lives beside `cli/` rather than in `cli/member.py`: the demo package must not import
the CLI that mounts it. For the same reason `plain` lives here: the one way every command and
the demo print text that people wrote.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from db.models import Coupon, MemberScore, Service
from domain import churn, coupons
from domain.identity import mask_phone
from domain.plaintext import inert
from domain.profiles import MemberProfile


def plain(value: object, style: str = "") -> Text:
    """Text that came from members, staff, imports or the shop's YAML, ready to print: never
    read as rich markup (a `[/red]` in a name would crash the command) and with control
    characters and bidi overrides shown as escapes (`domain.plaintext.inert`), never run by
    the terminal. Every table cell, title or line that holds such text goes through here."""
    return Text(inert(str(value)), style=style)


def line(*parts: str | Text | tuple[str, str]) -> Text:
    """One printed line from parts, each `plain` (printed as written, never as markup); a
    `(text, style)` pair gives its text a style, a `Text` part is kept as it is. Our own words
    and people's text can then sit in one f-string-free line without either being read as
    markup."""
    out = Text()
    for part in parts:
        if isinstance(part, Text):
            out.append_text(part)
        elif isinstance(part, tuple):
            out.append_text(plain(*part))
        else:
            out.append_text(plain(part))
    return out


def yuan(cents: int) -> str:
    return f"¥{cents / 100:,.2f}"


def coupon_terms(coupon: Coupon) -> str:
    """`¥50.00 off from ¥300.00` or `10% off`: what the clerk reads to the customer."""
    amount = (
        f"{coupon.percent_off}%" if coupon.kind == coupons.PERCENT else yuan(coupon.value_cents)
    )
    floor = f" from {yuan(coupon.min_spend_cents)}" if coupon.min_spend_cents else ""
    return f"{amount} off{floor}"


def service_name(service: Service | None, code: str) -> str:
    """Both names, as the clerk may serve either language; the bare code if it is no longer
    configured."""
    return f"{service.name_en} / {service.name_zh}" if service else code


def render(console: Console, profile: MemberProfile) -> None:
    m = profile.member
    console.rule(line((m.name, "bold"), "  ", m.member_ref))
    consent = "yes" if m.marketing_consent else "no"
    console.print(
        line(
            f"Phone {mask_phone(m.phone)} · birthday {'on file' if m.birthday else '-'} · "
            f"locale {m.locale} · home store {profile.home_store or '-'} · "
            f"marketing consent {consent}"
        )
    )
    if profile.tags:
        console.print(line("Tags: " + ", ".join(profile.tags)))
    t = profile.tier
    nxt = (
        f"{yuan(t.missing_cents)} more to {t.next_tier.name_en} / {t.next_tier.name_zh}"
        if t.next_tier
        else "top tier"
    )
    console.print(
        line(
            "Tier ",
            (f"{t.tier.name_en} / {t.tier.name_zh}", "bold"),
            f" · 12-month spend {yuan(t.spend_cents)} · {nxt}",
        )
    )
    p = profile.points
    expiry = f", next expiry {p.next_expiry}" if p.next_expiry else ""
    soon = f"{p.expiring_soon:,} expiring by {p.expiring_by}"
    console.print(f"Points [bold]{p.balance:,}[/bold] · {soon}{expiry}")
    console.print(f"Stored value [bold]{yuan(profile.stored_value_cents)}[/bold]")
    if profile.no_shows:
        console.print(f"No-shows: {profile.no_shows} booking(s) not kept")
    if profile.score is not None:
        _render_score(console, profile.score)
    if profile.punch_cards:
        cards = Table("Service", "Left", "Expires", title="Punch cards")
        for status, service in profile.punch_cards:
            cards.add_row(
                plain(service_name(service, status.card.service_code)),
                f"{status.remaining} of {status.card.total_uses}",
                str(status.expires_on or "-"),
            )
        console.print(cards)
    if profile.coupons:
        vouchers = Table("Code", "Value", "For", "Valid until", title="Valid coupons")
        for coupon, reward in profile.coupons:
            vouchers.add_row(
                plain(coupon.code),
                coupon_terms(coupon),
                plain(f"{reward.name_en} / {reward.name_zh}" if reward else coupon.source),
                str(coupon.valid_until),
            )
        console.print(vouchers)
    cars = Table("Plate", "Car", "Bought", "Insurance", "Inspection", title="Cars")
    for car in profile.vehicles:
        name = " ".join(x for x in (car.make, car.model) if x) or "-"
        cars.add_row(
            plain(car.plate),
            plain(name),
            str(car.purchase_date or "-"),
            str(car.insurance_expiry or "-"),
            str(car.inspection_due or "-"),
        )
    console.print(cars)
    visits = Table(
        "Date",
        "Store",
        "Amount",
        "Services",
        "km",
        "Score",
        title=f"Latest visits ({len(profile.visits)} of {profile.visit_count})",
    )
    for visit, store in profile.visits:
        visits.add_row(
            str(visit.visited_on),
            plain(store or "-"),
            yuan(visit.amount_cents),
            plain(", ".join(visit.services) or "-"),
            str(visit.mileage_km or "-"),
            "-" if visit.satisfaction is None else str(visit.satisfaction),
        )
    console.print(visits)


def _render_score(console: Console, score: MemberScore) -> None:
    """Last night's segment and churn risk, with the model's own reasons, so the counter knows
    who to win back and why."""
    reasons = "; ".join(churn.reason_text(code, "en") for code in score.reasons) or "-"
    console.print(
        f"Segment {score.rfm_segment} (RFM {score.rfm_score}) · {score.stickiness} · "
        f"{score.lifecycle} · churn risk [bold]{score.churn_risk:.0%}[/bold] "
        f"(as of {score.as_of}): {reasons}",
        markup=True,
        highlight=False,
    )
