"""`memberbot segments …`: member segments and churn risk for the manager's spreadsheet.

The file names members by `member_ref` only: no name, phone or plate, so it can be handed to
whoever plans a campaign. Amounts are in yuan with two decimals (the form the import reads);
segment, stickiness and lifecycle are the stable keys rules use; the churn reasons are words in
the chosen language, separated by `;`. A text cell a spreadsheet would run as a formula
(`=HYPERLINK(…)` as a member ref) is written behind a `'`. The file is UTF-8 with a byte-order
mark, so Excel on a Chinese Windows opens it without garbling the reasons.
"""

from __future__ import annotations

import csv
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from domain import churn, scores
from domain.csvwrite import safe_row
from domain.errors import InvalidInput
from memberbot import runtime
from memberbot.cli.common import AS_OF, console, run
from memberbot.staffview import plain

app = typer.Typer(help="Member segments and churn risk.", no_args_is_help=True)

COLUMNS = (
    "member_ref",
    "recency_days",
    "frequency",
    "monetary",
    "rfm_score",
    "rfm_segment",
    "stickiness",
    "lifecycle_stage",
    "churn_risk",
    "reasons",
)


class Locale(StrEnum):
    zh_CN = "zh_CN"
    en = "en"


def csv_row(row: scores.ScoreRow, locale: str) -> list[str]:
    """One member's line, in the order of COLUMNS; a ref or a reason a spreadsheet would run as
    a formula is escaped (`domain.csvwrite`)."""
    cents = row.monetary_cents
    return safe_row(
        [
            row.member_ref,
            "" if row.recency_days is None else str(row.recency_days),
            str(row.frequency),
            f"{cents // 100}.{cents % 100:02d}",
            row.rfm_score,
            row.rfm_segment,
            row.stickiness,
            row.lifecycle_stage,
            f"{row.churn_risk:.{scores.RISK_DECIMALS}f}",
            ";".join(churn.reason_text(code, locale) for code in row.reasons),
        ]
    )


def write_csv(score_set: scores.ScoreSet, output: Path, locale: str) -> int:
    """Write the header and one row per member; the number of members written. A path that
    cannot be written is a refusal (exit 1) naming it, not a traceback."""
    count = 0
    try:
        with output.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in score_set:
                writer.writerow(csv_row(row, locale))
                count += 1
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc.strerror or exc}") from exc
    return count


@app.command("export")
def export(
    as_of: Annotated[str, AS_OF.option("The day, YYYY-MM-DD; today or earlier.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV file to write.")],
    locale: Annotated[Locale, typer.Option(help="Language of the reasons.")] = Locale.zh_CN,
) -> None:
    """One row per member as of the day: RFM, segment, stickiness, lifecycle, churn risk and
    its reasons, computed only from what was known on that day."""
    day = AS_OF.parse(as_of)

    async def work(rt: runtime.Runtime) -> tuple[int, str]:
        today = rt.today()
        if day > today:
            raise InvalidInput(f"{day} is in the future (today is {today}): nothing to score yet")
        async with rt.db.read() as session:
            score_set = await scores.compute(session, day)
        return write_csv(score_set, output, locale.value), score_set.model.note

    count, note = run(work)
    console.print(plain(f"{count:,} member(s) as of {day} written to {output}."))
    console.print(f"Churn risk: {note}.", markup=False)


@app.command("refresh")
def refresh(
    as_of: Annotated[str | None, AS_OF.option("The day, YYYY-MM-DD; default today.")] = None,
) -> None:
    """Recompute every member's segment and churn risk into the nightly snapshot (what staff
    see in `member show`). `serve` runs this each night in a process of its own."""

    async def work(rt: runtime.Runtime) -> int:
        day = AS_OF.or_today(rt, as_of or None)  # an empty --as-of has always meant today
        if day > rt.today():
            raise InvalidInput(f"{day} is in the future: nothing to score yet")
        async with rt.db.read() as session:
            score_set = await scores.compute(session, day)
        return await scores.store_in_batches(rt.db, score_set)

    console.print(f"{run(work):,} member(s) scored.", markup=False)
