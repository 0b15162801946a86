"""The counter's day sheet of bookings: local times in time order, phones and plates masked,
cancelled bookings only on request, an empty day said plainly. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

from rich.console import Console

from db.models import Store
from db.session import Database
from domain import bookings
from domain.shop import BookingRules
from memberbot.cli.bookings import render_day, store_today
from tests.support.builders import add_car, new_member

NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # Tuesday 09:00 in Shanghai
WED = date(2026, 12, 2)
RULES = BookingRules()


async def main_store(db: Database) -> Store:
    async with db.read() as session:
        return await bookings.store_by_code(session, "main")


async def book(
    db: Database,
    member_id: int,
    store_id: int,
    service: str,
    utc_hour: int,
    day: int = 2,
    vehicle_id: int | None = None,
) -> int:
    async with db.transaction() as session:
        booking = await bookings.reserve(
            session,
            member_id,
            store_id,
            service,
            datetime(2026, 12, day, utc_hour, 0, tzinfo=UTC),
            NOW,
            RULES,
            vehicle_id=vehicle_id,
            source="staff",
        )
        assert booking.id is not None
        return booking.id


def draw(lines: list[bookings.BookingLine], store: Store, day: date) -> str:
    console = Console(record=True, width=200, color_system=None)
    render_day(console, lines, store, day)
    return console.export_text()


async def test_the_day_sheet_shows_local_times_and_masks_personal_data(db: Database) -> None:
    store = await main_store(db)
    assert store.id is not None
    wang = await new_member(db, "C-1", "13812340001", name="王先生")
    wang_car = await add_car(db, wang, "沪A12345")
    li = await new_member(db, "C-2", "13812340002", name="[bold]李女士")
    first = await book(db, li, store.id, "oil_service", 5)  # 13:00 in Shanghai
    second = await book(db, wang, store.id, "wash", 2, vehicle_id=wang_car)  # 10:00
    gone = await book(db, wang, store.id, "wash", 7)  # 15:00, cancelled below
    await book(db, wang, store.id, "wash", 2, day=3)  # Thursday: not on Wednesday's sheet
    async with db.transaction() as session:
        await bookings.cancel(session, gone, member_id=wang, now=NOW, rules=RULES, actor="cli")
    async with db.read() as session:
        sheet = await bookings.day_sheet(session, store.id, WED)
        everything = await bookings.day_sheet(session, store.id, WED, include_cancelled=True)

    text = draw(sheet, store, WED)

    assert "总店 (main) · 2026-12-02 Wednesday" in text
    rows = [line for line in text.splitlines() if "B0000" in line]
    assert len(rows) == 2
    assert rows[0].index("10:00-10:30") < rows[0].index("Car wash / 精致洗车")
    assert "王先生 · C-1 · +86138****0001" in rows[0] and "沪A***45" in rows[0]
    assert "booked" in rows[0] and f"B{second:06d}" in rows[0]
    assert "13:00-14:00" in rows[1] and "[bold]李女士 · C-2 · +86138****0002" in rows[1]
    assert f"B{first:06d}" in rows[1]
    assert "13812340001" not in text and "沪A12345" not in text
    assert "15:00" not in text and f"B{gone:06d}" not in text
    assert "2 booking(s) · 3 bay(s) · times in Asia/Shanghai" in text

    with_cancelled = draw(everything, store, WED)
    assert f"B{gone:06d}" in with_cancelled and "cancelled" in with_cancelled
    assert "2 booking(s)" in with_cancelled


async def test_an_empty_day_and_the_stores_own_day(db: Database) -> None:
    store = await main_store(db)
    assert store.id is not None
    async with db.read() as session:
        sheet = await bookings.day_sheet(session, store.id, WED)
    assert draw(sheet, store, WED).strip() == "总店 (main) · 2026-12-02 Wednesday: no bookings."
    # 23:30 UTC on Tuesday is already Wednesday at a Shanghai counter.
    assert store_today(store, datetime(2026, 12, 1, 23, 30, tzinfo=UTC)) == WED
