"""Importing a shop's CSV exports: encodings and formats people really send, all-or-nothing
files, idempotent re-imports, points and tiers, on SQLite and PostgreSQL, and the CLI. Reading
cells and files alone, without a database, is tested in test_csvparse.py."""

from __future__ import annotations

import sqlite3
import tracemalloc
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from db.models import (
    Member,
    MileageReading,
    PointsEntry,
    Store,
    TierChange,
    Vehicle,
    Visit,
)
from db.session import Database
from domain import csvimport, csvparse, members, points
from domain.csvimport import ImportResult, RowError, import_file
from domain.shop import LoyaltyRules
from memberbot.cli import app
from memberbot.settings import get_settings
from tests.support.csvfiles import write

RULES = LoyaltyRules()
TODAY = date(2026, 3, 1)

MEMBERS = [
    "member_ref,name,phone,birthday,store,tags,locale,opening_points",
    "M1,王小明,138 1234 5678,1990-03-05,main,VIP;fleet,zh-CN,100",
    "M2,Li Na,+86 139-1234-5678,1985/3/5,,,en-US,",
    "M3,张三,13712345678,1979年3月5日,MAIN,新能源，老客户,zh,0",
]
VEHICLES = [
    "member_ref,plate,vin,make,model,mileage_km,insurance_expiry",
    'M1,沪A·12345,lsvaa4182e2123456,大众,帕萨特,"12,000",2026/9/30',
    "M2,京B54321,,BMW,530Li,,",
]
VISITS = [
    "member_ref,visited_on,amount,visit_ref,store,plate,services,mileage_km,satisfaction",
    'M1,2026-02-01,"¥1,500.00",R1,main,沪A12345,wash;oil_service,13000,9',
    "M1,2026/2/2,￥600,,main,,精致洗车|polish,,",
    "M2,2026年2月3日,RMB 100,R2,,京B54321,,,",
    "M3,2025-12-24,CNY88.50,,,,,,10",
]
# Realistic names; those of three characters are the ones honest GBK could mistake for UTF-8.
CHINESE_NAMES = (  # noqa: SIM905 - a list literal of 58 names is 60 lines
    "王伟 李娜 张敏 刘洋 陈静 杨磊 黄勇 赵艳 吴杰 周涛 徐明 孙超 马丽 朱强 胡军 "
    "郭芳 何平 高峰 林红 罗刚 郑霞 梁辉 谢鹏 宋飞 唐宇 许浩 韩雪 冯博 邓欣 曹阳 "
    "王秀英 李建国 张桂兰 刘志强 陈欣怡 杨梓萱 黄子涵 赵浩然 吴诗琪 周俊杰 "
    "徐嘉怡 孙雨桐 马梦琪 朱一博 胡思远 郭佳怡 何可馨 高宇轩 林欣妍 罗浩宇 "
    "欧阳娜娜 司马光明 诸葛亮 上官婉儿 李四 王五 赵六 钱七"
).split()
CARLESS_VISITS = [
    "member_ref,visited_on,amount,visit_ref",
    "M1,2026-02-01,1500,R1",
    "M2,2026-02-03,100,",
    "M3,2025-12-24,88.50,",
]


async def load(
    db: Database, kind: csvimport.ImportKind, path: Path, **options: object
) -> ImportResult:
    result = await import_file(db, kind, path, RULES, today=TODAY, **options)  # type: ignore[arg-type]
    return result


async def load_all(db: Database, tmp_path: Path) -> list[ImportResult]:
    results = []
    for kind, lines in (("members", MEMBERS), ("vehicles", VEHICLES), ("visits", VISITS)):
        result = await load(db, kind, write(tmp_path, f"{kind}.csv", lines))  # type: ignore[arg-type]
        assert result.errors == [] and result.written, (kind, result.errors)
        results.append(result)
    return results


async def member(db: Database, ref: str) -> Member:
    async with db.read() as session:
        found = await session.scalar(select(Member).where(Member.member_ref == ref))
        assert found is not None, ref
        return found


async def count(db: Database, model: type) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def snapshot(db: Database) -> tuple[object, ...]:
    """Everything an import writes, summed up: equal snapshots mean nothing changed."""
    async with db.read() as session:
        counts = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (Member, Vehicle, Visit, PointsEntry, MileageReading, TierChange)
        ]
        total = await session.scalar(select(func.coalesce(func.sum(PointsEntry.points), 0)))
        names = (await session.scalars(select(Member.name).order_by(Member.id))).all()
    return (*counts, total, tuple(names))


async def test_a_file_that_changes_encoding_midway_writes_nothing(
    db: Database, tmp_path: Path
) -> None:
    lines = ["member_ref,name,phone"] + [f"M{i},王小明,13812345678" for i in range(4000)]
    path = tmp_path / "mixed.csv"
    path.write_bytes("\n".join(lines).encode() + "\nM2,李娜,13912345678\n".encode("gbk"))
    assert path.stat().st_size > csvparse.SNIFF_BYTES
    result = await load(db, "members", path)
    assert result.written is False
    assert result.errors[-1].reason.startswith("the file is not valid utf-8 text")
    assert await count(db, Member) == 0


async def test_control_characters_and_bidi_overrides_are_bad_rows(
    db: Database, tmp_path: Path
) -> None:
    """A NUL, an escape, a C1 control or a bidi override in a text cell is refused naming its
    column (never its value): on SQLite it would be stored where nobody can type it, on
    PostgreSQL a NUL is a traceback. Line breaks inside a quoted cell are refused too."""
    people = [
        "member_ref,name,phone,store,tags",
        "M\x001,王小明,13812345678,,",
        "M2,\u202e李娜,13912345678,,",
        "M3,张\x85三,13712345678,ma\x1b[2Jin,VIP",
        'M4,"王\n五",13612345678,,\u2066fleet',
        "M5,赵六,13512345678,main,VIP",
    ]
    result = await load(db, "members", write(tmp_path, "m.csv", people))
    assert [(e.line, e.reason) for e in result.errors] == [
        (2, "member_ref holds a control character or a bidi override"),
        (3, "name holds a control character or a bidi override"),
        (4, "name, store hold a control character or a bidi override"),
        (5, "name, tags hold a control character or a bidi override"),
    ]
    assert result.written is False and await count(db, Member) == 0
    await load(db, "members", write(tmp_path, "ok.csv", MEMBERS))
    cars = ["member_ref,plate,make", "M1,沪A12345,大众\x00", "M2,京B\u202d54321,BMW"]
    result = await load(db, "vehicles", write(tmp_path, "v.csv", cars))
    assert [(e.line, e.reason) for e in result.errors] == [
        (2, "make holds a control character or a bidi override"),
        (3, "plate holds a control character or a bidi override"),
    ]
    visits = ["member_ref,visited_on,amount,visit_ref,services", "M1,2026-02-01,10,R\x001,wash"]
    result = await load(db, "visits", write(tmp_path, "v.csv", visits))
    assert [(e.line, e.reason) for e in result.errors] == [
        (2, "visit_ref holds a control character or a bidi override")
    ]
    assert await count(db, Vehicle) == await count(db, Visit) == 0


async def test_a_utf8_row_in_a_gbk_file_is_refused(db: Database, tmp_path: Path) -> None:
    """Excel saves GBK; a row pasted from elsewhere may be UTF-8. Read as GB18030 it would be
    stored garbled (李四 as 鏉庡洓) and reported written: the row is refused on its own line,
    and the honest GBK rows around it are read as they are."""
    rows = [f"C{i:03d},{name},1381234{i:04d}" for i, name in enumerate(CHINESE_NAMES)]
    gbk = ("会员编号,姓名,手机号码\r\n" + "\r\n".join(rows[:40]) + "\r\n").encode("gbk")
    utf8 = "C999,李四,13912345678\r\n".encode()
    rest = ("\r\n".join(rows[40:]) + "\r\n").encode("gbk")
    path = tmp_path / "mixed.csv"
    path.write_bytes(gbk + utf8 + rest)
    result = await load(db, "members", path)
    assert result.encoding == "gb18030"
    assert [e.line for e in result.errors] == [42]
    assert "UTF-8" in result.errors[0].reason and "GBK" in result.errors[0].reason
    assert result.written is False and await count(db, Member) == 0
    path.write_bytes(gbk + rest)
    honest = await load(db, "members", path)
    assert (honest.written, honest.errors, honest.created) == (True, [], len(rows))
    assert (await member(db, "C001")).name == CHINESE_NAMES[1]


async def test_a_bad_byte_is_reported_on_its_own_line(db: Database, tmp_path: Path) -> None:
    """The reader decodes ahead of the rows it hands out: the line of a bad byte is the bad
    row's own, and the rows after it are still read and checked."""
    lines = ["member_ref,name,phone"] + [f"M{i},王小明,13812345678" for i in range(3000)]
    after = [f"N{i},bad,1" for i in range(3)]
    path = tmp_path / "mixed.csv"
    body = "\n".join(lines).encode() + "\nX1,李娜,13912345678\n".encode("gbk")
    path.write_bytes(body + "\n".join(after).encode() + b"\n")
    result = await load(db, "members", path)
    assert [e.line for e in result.errors] == [3002, 3003, 3004, 3005]
    assert result.errors[0].reason == "the file is not valid utf-8 text on this line"
    assert result.rows_read == 3004


async def test_a_line_past_the_cap_is_a_bad_row_and_nothing_is_written(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvparse, "MAX_LINE_CHARS", 200)
    lines = ["member_ref,name,phone", "M1,王小明,13812345678", "M2," + "x" * 300 + ",139"]
    result = await load(db, "members", write(tmp_path, "m.csv", [*lines, "M3,n,13712345678"]))
    assert [(e.line, e.reason) for e in result.errors] == [
        (3, "is longer than 200 characters (a CSV line must be shorter): not read further")
    ]
    assert result.written is False and await count(db, Member) == 0


# ---------------------------------------------------------------- members


async def test_members_from_excel_in_gbk_with_chinese_headers(db: Database, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "会员.csv",
        [
            "会员编号,姓名,手机号码,生日,门店,标签,语言",
            "C001,王小明,13812345678,1990/3/5,main,VIP、车队,中文",
            "C002,李娜,13912345678,,,,",
        ],
        "gbk",
    )
    result = await load(db, "members", path)
    assert (result.written, result.errors, result.created) == (True, [], 2)
    assert result.encoding == "gb18030"
    first = await member(db, "C001")
    assert (first.name, first.phone, first.birthday) == (
        "王小明",
        "+8613812345678",
        date(1990, 3, 5),
    )
    assert first.locale == "zh_CN" and first.tier_code == "standard"
    async with db.read() as session:
        main = await session.scalar(select(Store.id).where(Store.code == "main"))
        assert await members.tags_of(session, first.id) == ["VIP", "车队"]
    assert first.home_store_id == main
    assert (await member(db, "C002")).name == "李娜"


async def test_bom_file_and_the_three_date_forms(db: Database, tmp_path: Path) -> None:
    result = await load(db, "members", write(tmp_path, "m.csv", MEMBERS, "utf-8-sig"))
    assert (result.written, result.errors, result.created) == (True, [], 3)
    assert result.encoding == "utf-8-sig"
    m1, m2, m3 = [await member(db, ref) for ref in ("M1", "M2", "M3")]
    assert [m.birthday for m in (m1, m2, m3)] == [
        date(1990, 3, 5),
        date(1985, 3, 5),
        date(1979, 3, 5),
    ]
    assert [m.locale for m in (m1, m2, m3)] == ["zh_CN", "en", "zh_CN"]
    assert m2.phone == "+8613912345678" and m3.home_store_id == m1.home_store_id is not None
    async with db.read() as session:
        assert await members.tags_of(session, m3.id) == ["新能源", "老客户"]
        assert await points.balance(session, m1.id) == 100
        assert await points.balance(session, m3.id) == 0
    assert not m1.marketing_consent and m1.consent_at is None


async def test_one_bad_row_writes_nothing_and_names_its_line(db: Database, tmp_path: Path) -> None:
    lines = [
        "member_ref,name,phone,birthday,store",
        "G1,好人,13812345678,,main",
        "G2,Bad Phone,12345,2099-01-01,main",
        "G3,好人,13912345678,,",
        "G4,Bad Store,13712345678,,nowhere",
        "",
        "G5,好人,13612345678,,",
    ]
    result = await load(db, "members", write(tmp_path, "m.csv", lines))
    assert result.written is False
    assert result.rows_read == 5
    assert result.error_count == 2
    assert [e.line for e in result.errors] == [3, 5]
    assert result.errors[0].reason == (
        "phone is not a valid number; birthday is in the future (today is 2026-03-01)"
    ), "every problem of the row, and never the personal data itself"
    assert result.errors[1].reason == "store 'nowhere' is not a store of the shop configuration"
    assert await count(db, Member) == 0


async def test_missing_column_is_reported_on_line_1(db: Database, tmp_path: Path) -> None:
    path = write(tmp_path, "v.csv", ["member_ref,date,plate", "M1,2026-01-01,沪A12345"])
    result = await load(db, "visits", path)
    assert result.written is False and result.error_count == 1
    assert result.errors[0].line == 1
    assert "missing column(s) amount" in result.errors[0].reason
    empty = await load(db, "members", write(tmp_path, "e.csv", []))
    assert empty.errors[0].line == 1 and "empty" in empty.errors[0].reason


async def test_member_repeated_in_a_file_is_an_update_not_a_clash(
    db: Database, tmp_path: Path
) -> None:
    lines = [
        "member_ref,name,phone,tags,marketing_consent",
        "D1,旧名字,13812345678,VIP,",
        "D1,新名字,13812345678,fleet,是",
    ]
    result = await load(db, "members", write(tmp_path, "m.csv", lines))
    assert (result.created, result.updated, result.unchanged, result.errors) == (1, 1, 0, [])
    d1 = await member(db, "D1")
    assert d1.name == "新名字"
    assert d1.marketing_consent and d1.consent_source == "import" and d1.consent_at is not None
    async with db.read() as session:
        assert await members.tags_of(session, d1.id) == ["VIP", "fleet"]


async def test_empty_cells_never_erase_and_opening_points_come_once(
    db: Database, tmp_path: Path
) -> None:
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS))
    again = [
        "member_ref,name,phone,birthday,opening_points",
        "M1,,13812345678,,500",
        "M2,Li Na,13912345678,,300",
    ]
    result = await load(db, "members", write(tmp_path, "m2.csv", again))
    assert (result.created, result.updated, result.unchanged) == (0, 1, 1)
    m1, m2 = await member(db, "M1"), await member(db, "M2")
    assert (m1.name, m1.birthday) == ("王小明", date(1990, 3, 5))
    async with db.read() as session:
        assert await points.balance(session, m1.id) == 100, "M1 had its opening balance already"
        assert await points.balance(session, m2.id) == 300
        lot = await session.scalar(select(PointsEntry).where(PointsEntry.key == f"opening:{m2.id}"))
    assert lot is not None and lot.kind == "opening"
    assert lot.expires_on == points.lot_expiry(TODAY, RULES)


# ---------------------------------------------------------------- vehicles


async def test_vehicles_and_a_plate_of_another_member(db: Database, tmp_path: Path) -> None:
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS))
    result = await load(db, "vehicles", write(tmp_path, "v.csv", VEHICLES))
    assert (result.created, result.errors) == (2, [])
    async with db.read() as session:
        car = await session.scalar(select(Vehicle).where(Vehicle.plate == "沪A12345"))
        assert car is not None
        readings = (
            await session.scalars(select(MileageReading).where(MileageReading.vehicle_id == car.id))
        ).all()
    assert (car.vin, car.make, car.insurance_expiry) == (
        "LSVAA4182E2123456",
        "大众",
        date(2026, 9, 30),
    )
    assert [(r.km, r.read_on, r.source) for r in readings] == [(12_000, TODAY, "import")]

    moved = [
        "member_ref,plate,mileage_km",
        "M1,沪A12345,12000",  # same reading again: nothing new
        "M3,京B54321,",  # M2's car
        "M9,粤C11111,",  # no such member
    ]
    bad = await load(db, "vehicles", write(tmp_path, "v2.csv", moved))
    assert bad.written is False
    assert [(e.line, e.reason) for e in bad.errors] == [
        (3, "plate belongs to another member"),
        (4, "member_ref 'M9' is not a member (import the members file first)"),
    ]
    newer = await load(db, "vehicles", write(tmp_path, "v3.csv", moved[:2]))
    assert (newer.updated, newer.unchanged) == (0, 1)
    assert await count(db, MileageReading) == 1


# ---------------------------------------------------------------- visits


async def test_visits_store_amounts_services_mileage(db: Database, tmp_path: Path) -> None:
    await load_all(db, tmp_path)
    async with db.read() as session:
        visits = (await session.scalars(select(Visit).order_by(Visit.visited_on))).all()
        readings = (
            await session.scalars(select(MileageReading.km).order_by(MileageReading.km))
        ).all()
    amounts = {v.visited_on: v.amount_cents for v in visits}
    assert amounts == {
        date(2025, 12, 24): 8_850,
        date(2026, 2, 1): 150_000,
        date(2026, 2, 2): 60_000,
        date(2026, 2, 3): 10_000,
    }
    first = next(v for v in visits if v.visit_ref == "R1")
    assert first.services == ["wash", "oil_service"]
    assert first.categories == ["wash", "maintenance"]
    assert (first.mileage_km, first.satisfaction) == (13_000, 9)
    second = next(v for v in visits if v.visited_on == date(2026, 2, 2))
    assert second.services == ["wash", "polish"] and second.categories == ["wash"]
    assert list(readings) == [12_000, 13_000]


async def test_reimporting_the_same_files_changes_nothing(db: Database, tmp_path: Path) -> None:
    await load_all(db, tmp_path)
    before = await snapshot(db)
    again = await load_all(db, tmp_path)
    assert [(r.created, r.updated) for r in again] == [(0, 0)] * 3
    assert [r.unchanged for r in again] == [3, 2, 4]
    assert [r.points_credited for r in again] == [0, 0, 0]
    assert await snapshot(db) == before


async def test_visits_earn_points_at_the_tier_of_import_time_then_upgrade(
    db: Database, tmp_path: Path
) -> None:
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS))
    async with db.transaction() as session:
        await session.execute(
            update(Member).where(Member.member_ref == "M2").values(tier_code="gold")
        )
    lines = [
        "member_ref,visited_on,amount",
        "M1,2026-01-10,1500.99",  # standard: 1500 points
        "M1,2026-01-20,1000",  # standard still: 1000; 2500 yuan makes M1 silver afterwards
        "M2,2026-01-10,100",  # gold x1.5: 150 points
        "M3,2026-01-10,0.99",  # less than a yuan: no points, no lot
    ]
    result = await load(db, "visits", write(tmp_path, "v.csv", lines))
    assert (result.created, result.errors) == (4, [])
    assert (result.points_credited, result.tier_upgrades) == (2650, 1)
    m1, m2, m3 = [await member(db, ref) for ref in ("M1", "M2", "M3")]
    async with db.read() as session:
        assert await points.balance(session, m1.id) == 100 + 2500
        assert await points.balance(session, m2.id) == 150
        assert await points.balance(session, m3.id) == 0
        lots = (
            await session.scalars(
                select(PointsEntry).where(PointsEntry.kind == "earn").order_by(PointsEntry.id)
            )
        ).all()
        change = await session.scalar(select(TierChange).where(TierChange.member_id == m1.id))
    assert m1.tier_code == "silver" and m2.tier_code == "gold"
    assert change is not None and (change.from_tier, change.reason) == ("standard", "import")
    for lot in lots:
        assert lot.key == f"visit:{lot.visit_id}"
        assert lot.expires_on == points.lot_expiry(lot.occurred_on, RULES)


async def test_lots_already_lapsed_at_import_are_expired(db: Database, tmp_path: Path) -> None:
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS[:2]))
    lines = ["member_ref,visited_on,amount", "M1,2023-06-01,300", "M1,2025-06-01,200"]
    result = await load(db, "visits", write(tmp_path, "v.csv", lines))
    assert result.points_credited == 500
    m1 = await member(db, "M1")
    async with db.read() as session:
        assert await points.balance(session, m1.id) == 100 + 200


async def test_no_points_imports_visits_without_lots(db: Database, tmp_path: Path) -> None:
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS), earn_points=False)
    path = write(tmp_path, "v.csv", CARLESS_VISITS)
    result = await load(db, "visits", path, earn_points=False)
    assert (result.created, result.points_credited) == (3, 0)
    assert await count(db, PointsEntry) == 0, "no opening points, no earned points"
    assert await count(db, Visit) == 3


async def test_same_member_day_and_amount_is_one_visit(db: Database, tmp_path: Path) -> None:
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS))
    lines = [
        "member_ref,visited_on,amount",
        "M1,2026-02-01,100",
        "M1,2026/2/1,¥100.00",  # the same visit written differently
        "M1,2026-02-01,45",
    ]
    path = write(tmp_path, "v.csv", lines)
    first = await load(db, "visits", path)
    assert (first.created, first.unchanged) == (2, 1)
    second = await load(db, "visits", path)
    assert (second.created, second.unchanged) == (0, 3)
    assert await count(db, Visit) == 2
    m1 = await member(db, "M1")
    async with db.read() as session:
        assert await points.balance(session, m1.id) == 100 + 100 + 45


async def test_bad_visit_rows(db: Database, tmp_path: Path) -> None:
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS))
    await load(db, "vehicles", write(tmp_path, "v.csv", VEHICLES))
    await load(db, "visits", write(tmp_path, "ok.csv", VISITS[:2]))
    tomorrow = (TODAY + timedelta(days=1)).isoformat()
    lines = [
        "member_ref,visited_on,amount,visit_ref,plate,satisfaction,store",
        "M1,2026-02-05,100,R9,京B54321,,",  # M2's car
        f"M1,{tomorrow},100,,,,",
        "M1,2026-02-05,100,,,11,",
        "M1,2026-02-01,999,R1,,,",  # R1 was 1,500.00
        "M1,2026-02-05,1,2,3",
        "M9,2026-02-05,100,,,,",
        "M1,2026-02-05,100,,,,elsewhere",
        "M1,2026-02-06,100,R10,沪A12345,8,main",  # a good one
    ]
    result = await load(db, "visits", write(tmp_path, "bad.csv", lines))
    assert result.written is False
    reasons = {e.line: e.reason for e in result.errors}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8]
    assert reasons[2] == "plate is not a car of this member (import the vehicles file)"
    assert reasons[3] == f"visited_on {tomorrow!r} is in the future (today is 2026-03-01)"
    assert reasons[4] == "satisfaction '11' is not a score from 0 to 10"
    assert reasons[5] == "visit_ref 'R1' was imported before with another member, day or amount"
    assert reasons[6].startswith("plate is not a licence plate")
    assert reasons[7].startswith("member_ref 'M9' is not a member")
    assert reasons[8] == "store 'elsewhere' is not a store of the shop configuration"
    assert await count(db, Visit) == 1


async def test_dry_run_counts_but_writes_nothing(db: Database, tmp_path: Path) -> None:
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS))
    path = write(tmp_path, "v.csv", CARLESS_VISITS)
    before = await snapshot(db)
    result = await load(db, "visits", path, dry_run=True)
    assert (result.dry_run, result.written, result.created, result.errors) == (True, False, 3, [])
    assert result.points_credited > 0
    assert await snapshot(db) == before


async def test_progress_reports_bytes_up_to_the_file_size(db: Database, tmp_path: Path) -> None:
    seen: list[int] = []
    path = write(tmp_path, "m.csv", MEMBERS)
    await import_file(db, "members", path, RULES, today=TODAY, progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == path.stat().st_size


async def test_large_file_in_many_chunks(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small chunks: duplicates across and inside chunks, and errors in line order."""
    monkeypatch.setattr(csvimport, "CHUNK_ROWS", 7)
    rows = ["member_ref,name,phone"]
    rows += [f"L{i:03d},name{i},138{i:08d}" for i in range(60)]
    rows += ["L005,renamed,13800000005", "L070,bad,1"]
    result = await load(db, "members", write(tmp_path, "m.csv", rows))
    assert [e.line for e in result.errors] == [63]
    rows.pop()
    result = await load(db, "members", write(tmp_path, "m.csv", rows))
    assert (result.created, result.updated, result.written) == (60, 1, True)
    assert (await member(db, "L005")).name == "renamed"


async def test_memory_does_not_grow_with_the_file(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's heap peak while importing 4x the rows stays that of one chunk, not the file."""
    monkeypatch.setattr(csvimport, "CHUNK_ROWS", 500)
    refs = [f"P{i:04d}" for i in range(400)]
    people = ["member_ref,name,phone", *(f"{r},n,1380000{i:04d}" for i, r in enumerate(refs))]
    await load(db, "members", write(tmp_path, "m.csv", people))

    def visits(name: str, rows: int) -> Path:
        lines = ["member_ref,visited_on,amount,visit_ref,services"]
        for i in range(rows):
            day = date(2025, 1, 1) + timedelta(days=i % 300)
            lines.append(f"{refs[i % 400]},{day},{(i % 7) * 10 + 45},{name}{i},wash;polish")
        return write(tmp_path, f"{name}.csv", lines)

    async def heap_peak(path: Path) -> int:
        tracemalloc.start()
        try:
            result = await load(db, "visits", path)
            assert result.written and result.created > 0
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    await heap_peak(visits("warm", 1_000))  # compiled statements and caches
    small = await heap_peak(visits("small", 3_000))
    large = await heap_peak(visits("large", 12_000))
    assert large < small * 1.5 + 512 * 1024, (small, large)


# ---------------------------------------------------------------- caps


HUGE = "100000000000000000000"


async def test_amounts_points_and_mileage_past_the_caps_are_bad_rows(
    db: Database, tmp_path: Path
) -> None:
    """Past the caps of domain.limits a cell is a bad row naming the cap, never a traceback or
    a ledger line no later adjustment can correct; nothing of the file is written."""
    people = [
        "member_ref,name,phone,opening_points",
        f"C1,甲,13812345678,{HUGE}",
        "C2,乙,13912345678,100000001",
        "C3,丙,13712345678,100000000",
    ]
    bad = await load(db, "members", write(tmp_path, "m.csv", people))
    assert [(e.line, e.reason) for e in bad.errors] == [
        (2, f"opening_points {HUGE!r} is more than 100,000,000 points"),
        (3, "opening_points '100000001' is more than 100,000,000 points"),
    ]
    assert await count(db, Member) == 0
    await load(db, "members", write(tmp_path, "ok.csv", MEMBERS))
    cars = ["member_ref,plate,mileage_km", f"M1,沪A12345,{HUGE}", "M2,京B54321,2000001km"]
    bad = await load(db, "vehicles", write(tmp_path, "v.csv", cars))
    assert [(e.line, e.reason) for e in bad.errors] == [
        (2, f"mileage_km {HUGE!r} is more than 2,000,000 km"),
        (3, "mileage_km '2000001km' is more than 2,000,000 km"),
    ]
    visits = [
        "member_ref,visited_on,amount",
        f"M1,2026-02-01,{HUGE}",
        "M1,2026-02-02,92233720368547758.07",
        'M1,2026-02-03,"30,000,000"',
        "M1,2026-02-04,10000000.01",
        "M1,2026-02-05,9" + "9" * 5000,
    ]
    bad = await load(db, "visits", write(tmp_path, "v.csv", visits))
    assert bad.written is False and await count(db, Visit) == 0
    assert [e.line for e in bad.errors] == [2, 3, 4, 5, 6]
    assert all(e.reason.endswith("is more than 10,000,000 yuan") for e in bad.errors)
    assert len(bad.errors[-1].reason) < 120, "a long cell is not repeated whole"


async def test_amounts_up_to_the_cap_are_stored_on_both_databases(
    db: Database, tmp_path: Path
) -> None:
    """Ten million yuan is the largest amount; three of them earn points, sums of cents and
    points past 2^31 included (BIGINT on PostgreSQL, see migration 0008)."""
    await load(db, "members", write(tmp_path, "m.csv", MEMBERS[:2]))
    lines = ["member_ref,visited_on,amount", *(f"M1,2026-02-0{d},10000000" for d in (1, 2, 3))]
    result = await load(db, "visits", write(tmp_path, "v.csv", lines))
    assert (result.written, result.errors, result.points_credited) == (True, [], 30_000_000)
    m1 = await member(db, "M1")
    async with db.read() as session:
        spend = await session.scalar(select(func.sum(Visit.amount_cents)))
        assert spend == 3_000_000_000
        assert await points.balance(session, m1.id) == 100 + 30_000_000
    async with db.transaction() as session:
        for _ in range(22):  # 2.2 billion points, all lapsing on one day: one expiry line
            await points.adjust(
                session, m1.id, 100_000_000, date(2020, 1, 1), RULES, reason="test", actor="t"
            )
        expired = await points.expire(session, date(2024, 1, 1))
    assert expired == 2_200_000_000


# ---------------------------------------------------------------- the command


@pytest.mark.db
def test_memberbot_import_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", "sqlite+aiosqlite:///shop.db")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        members_csv = write(tmp_path, "members.csv", MEMBERS, "gbk")
        dry = runner.invoke(app, ["import", "members", str(members_csv), "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "members (GBK): 3 rows read: 3 created, 0 updated, 0 unchanged." in dry.output
        assert "Dry run" in dry.output

        done = runner.invoke(app, ["import", "members", str(members_csv)])
        assert done.exit_code == 0, done.output
        assert "Written." in done.output
        assert "Importing" not in done.output, "no progress bar without a terminal"

        header = "member_ref,visited_on,amount"
        visits_csv = write(tmp_path, "v.csv", [header, "M1,2026-02-01,10", "M1,2026-13-01,10"])
        bad = runner.invoke(app, ["import", "visits", str(visits_csv)])
        assert bad.exit_code == 1, bad.output
        assert "Nothing was written: 1 bad row(s)." in bad.output
        assert "line 3: visited_on '2026-13-01' is not a calendar day" in bad.output

        good = write(tmp_path, "v2.csv", [header, "M1,2026-02-01,10"])
        free = runner.invoke(app, ["import", "visits", str(good), "--no-points"])
        assert free.exit_code == 0, free.output
        assert "1 created" in free.output

        with sqlite3.connect(tmp_path / "shop.db") as conn:
            assert conn.execute("SELECT count(*) FROM member").fetchone()[0] == 3
            assert conn.execute("SELECT count(*) FROM visit").fetchone()[0] == 1
            earned = conn.execute("SELECT count(*) FROM points_entry WHERE kind = 'earn'")
            assert earned.fetchone()[0] == 0
    finally:
        get_settings.cache_clear()


def test_import_result_rows_are_plain_data() -> None:
    assert RowError(3, "x") == RowError(3, "x")
    result = ImportResult(kind="visits")
    for n in range(csvimport.MAX_ERRORS_KEPT + 5):
        result.add_error(RowError(n + 2, "bad"))
    assert result.error_count == csvimport.MAX_ERRORS_KEPT + 5
    assert len(result.errors) == csvimport.MAX_ERRORS_KEPT
