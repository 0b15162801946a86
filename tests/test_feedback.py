"""Survey answers (0-10, once per visit, the member's own visits only, written to the visit for
segments), complaints from filing to one answer by the right staff, the NPS arithmetic, and
what privacy export and erasure do with both; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.models import AuditLog, Complaint, SurveyResponse, Visit
from db.session import Database
from domain import feedback, privacy, staff, visits
from domain.errors import InvalidInput, NotFound
from domain.shop import LoyaltyRules, load_shop_config
from memberbot.cli.complaints import app as complaints_app
from memberbot.runtime import prepare
from memberbot.settings import get_settings
from tests.support.builders import add_store, add_visit, main_store, new_member

RULES = LoyaltyRules()
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
TG = "telegram"


@dataclass
class Shop:
    main: int
    east: int
    alice: int  # home store main, two visits
    bob: int  # home store east, one visit
    carol: int  # no home store, no visit
    alice_old: int
    alice_new: int
    bob_visit: int


async def shop(db: Database) -> Shop:
    main = await main_store(db)
    east = await add_store(db, "east", "东店")
    alice = await new_member(db, "A-1", "13812345678", home_store_id=main)
    bob = await new_member(db, "B-1", "13912345678", name="李女士", home_store_id=east)
    carol = await new_member(db, "C-1", None, name="")
    return Shop(
        main=main,
        east=east,
        alice=alice,
        bob=bob,
        carol=carol,
        alice_old=await add_visit(db, alice, date(2026, 10, 1), 30_000, RULES, store_id=main),
        alice_new=await add_visit(db, alice, date(2026, 11, 20), 8_000, RULES, store_id=main),
        bob_visit=await add_visit(db, bob, date(2026, 11, 21), 50_000, RULES, store_id=east),
    )


async def answer(
    db: Database,
    member_id: int,
    visit_id: int | None,
    score: int,
    comment: str | None = None,
    now: datetime = NOW,
) -> SurveyResponse:
    async with db.transaction() as session:
        return await feedback.answer_survey(
            session, member_id, visit_id=visit_id, score=score, comment=comment, channel=TG, now=now
        )


async def responses(db: Database) -> list[SurveyResponse]:
    async with db.read() as session:
        return list((await session.scalars(select(SurveyResponse))).all())


async def satisfaction(db: Database, visit_id: int) -> int | None:
    async with db.read() as session:
        visit = await session.get(Visit, visit_id)
        assert visit is not None
        return visit.satisfaction


async def test_an_answer_is_recorded_and_written_to_the_visit(db: Database) -> None:
    s = await shop(db)
    response = await answer(db, s.alice, s.alice_old, 9, comment="  洗得很干净  ")
    assert (response.member_id, response.visit_id, response.score) == (s.alice, s.alice_old, 9)
    assert response.comment == "洗得很干净" and response.channel == TG
    assert response.created_at == NOW
    assert await satisfaction(db, s.alice_old) == 9
    assert await satisfaction(db, s.alice_new) is None


async def test_without_a_visit_id_the_latest_visit_is_rated(db: Database) -> None:
    s = await shop(db)
    response = await answer(db, s.alice, None, 4)
    assert response.visit_id == s.alice_new
    assert await satisfaction(db, s.alice_new) == 4
    with pytest.raises(NotFound) as none:
        await answer(db, s.carol, None, 8)
    assert none.value.key == "error.not_found" and none.value.params["query_kind"] == "visit"


@pytest.mark.parametrize("score", [-1, 11, 100, True])
async def test_scores_outside_0_to_10_are_refused(db: Database, score: int) -> None:
    s = await shop(db)
    with pytest.raises(InvalidInput):
        await answer(db, s.alice, s.alice_new, score)
    assert await responses(db) == []
    assert await satisfaction(db, s.alice_new) is None


async def test_the_edges_0_and_10_are_scores(db: Database) -> None:
    s = await shop(db)
    assert (await answer(db, s.alice, s.alice_old, 0)).score == 0
    assert (await answer(db, s.alice, s.alice_new, 10)).score == 10


async def test_only_the_members_own_visits_can_be_rated(db: Database) -> None:
    s = await shop(db)
    with pytest.raises(NotFound):
        await answer(db, s.alice, s.bob_visit, 0)
    with pytest.raises(NotFound):
        await answer(db, s.alice, 999_999, 5)
    with pytest.raises(InvalidInput):
        async with db.transaction() as session:
            await feedback.answer_survey(
                session, s.alice, visit_id=None, score=5, comment=None, channel="fax", now=NOW
            )
    assert await responses(db) == []
    assert await satisfaction(db, s.bob_visit) is None


async def test_one_answer_per_visit_and_a_comment_only_when_there_was_none(
    db: Database,
) -> None:
    s = await shop(db)
    first = await answer(db, s.alice, s.alice_new, 9)
    again = await answer(db, s.alice, s.alice_new, 2, now=NOW + timedelta(hours=1))
    assert again.id == first.id and again.score == 9
    assert await satisfaction(db, s.alice_new) == 9
    with_words = await answer(db, s.alice, s.alice_new, 2, comment="服务很好")
    assert with_words.id == first.id and with_words.comment == "服务很好"
    await answer(db, s.alice, s.alice_new, 2, comment="改主意了")
    rows = await responses(db)
    assert [(r.score, r.comment) for r in rows] == [(9, "服务很好")]


async def test_a_double_tap_at_once_records_one_answer(db: Database) -> None:
    s = await shop(db)
    results = await asyncio.gather(
        *(answer(db, s.alice, s.alice_new, score) for score in (10, 3, 7, 1))
    )
    assert len({r.id for r in results}) == 1
    rows = await responses(db)
    assert len(rows) == 1
    assert await satisfaction(db, s.alice_new) == rows[0].score


async def test_add_comment_is_the_members_own_and_never_replaces(db: Database) -> None:
    s = await shop(db)
    response = await answer(db, s.alice, s.alice_new, 6)
    assert response.id is not None
    async with db.transaction() as session:
        with pytest.raises(NotFound):
            await feedback.add_comment(session, s.bob, response.id, "not mine")
        with pytest.raises(InvalidInput):
            await feedback.add_comment(session, s.alice, response.id, "   ")
        with pytest.raises(InvalidInput):
            await feedback.add_comment(session, s.alice, response.id, "太" * 1001)
    async with db.transaction() as session:
        saved = await feedback.add_comment(session, s.alice, response.id, " 等了太久 ")
    assert saved.comment == "等了太久"
    with pytest.raises(InvalidInput):
        async with db.transaction() as session:
            await feedback.add_comment(session, s.alice, response.id, "再说一句")
    assert [r.comment for r in await responses(db)] == ["等了太久"]


async def test_visit_to_rate(db: Database) -> None:
    s = await shop(db)
    async with db.read() as session:
        latest = await feedback.visit_to_rate(session, s.alice)
        assert await feedback.visit_to_rate(session, s.carol) is None
        with pytest.raises(NotFound):
            await feedback.visit_to_rate(session, s.alice, s.bob_visit)
    assert latest is not None
    assert (latest.visit_id, latest.visited_on) == (s.alice_new, date(2026, 11, 20))
    assert latest.store_name == "总店" and latest.response is None
    await answer(db, s.alice, None, 8)
    async with db.read() as session:
        rated = await feedback.visit_to_rate(session, s.alice)
    assert rated is not None and rated.response is not None and rated.response.score == 8


async def file(db: Database, member_id: int, body: str, now: datetime = NOW) -> Complaint:
    async with db.transaction() as session:
        return await feedback.file_complaint(session, member_id, body, TG, now)


async def open_list(db: Database, store_id: int | None = None) -> list[feedback.OpenComplaint]:
    async with db.read() as session:
        return await feedback.open_complaints(session, store_id=store_id)


def test_score_buttons_read_back_as_they_were_written() -> None:
    """The survey the scheduler sends and the chat that reads the tap share one format."""
    rows = feedback.score_buttons(4711)
    assert [[label for label, _ in row] for row in rows] == [
        [str(n) for n in range(6)],
        [str(n) for n in range(6, 11)],
    ]
    for label, data in (button for row in rows for button in row):
        assert data == f"feedback:score:4711:{label}"
        assert feedback.read_score_button(data.split(":")[2:]) == (4711, int(label))
    for forged in (
        ["4711"],
        ["4711", "11"],
        ["0", "9"],
        ["4711", "+9"],
        ["x", "9"],
        ["1", "2", "3"],
    ):
        assert feedback.read_score_button(forged) is None


async def test_complaint_text_is_checked(db: Database) -> None:
    s = await shop(db)
    for body in ("", "   \n ", "差" * 1001):
        with pytest.raises(InvalidInput):
            await file(db, s.alice, body)
    assert await open_list(db) == []
    longest = await file(db, s.alice, " " + "差" * 1000 + " ")
    assert longest.body == "差" * 1000 and longest.status == feedback.OPEN


async def test_open_complaints_oldest_first_with_member_and_home_store(db: Database) -> None:
    s = await shop(db)
    late = await file(db, s.alice, "洗车后车身还有水渍", NOW + timedelta(hours=2))
    early = await file(db, s.bob, "保养等了三个小时", NOW)
    middle = await file(db, s.carol, "电话没人接", NOW + timedelta(hours=1))
    listed = await open_list(db)
    assert [row.complaint.id for row in listed] == [early.id, middle.id, late.id]
    by_ref = {row.member_ref: row for row in listed}
    assert by_ref["A-1"].home_store_code == "main" and by_ref["A-1"].phone == "+8613812345678"
    assert by_ref["B-1"].home_store_code == "east" and by_ref["B-1"].home_store_id == s.east
    assert by_ref["C-1"].home_store_code is None
    assert [row.member_ref for row in await open_list(db, s.east)] == ["B-1"]
    async with db.read() as session:
        assert await feedback.store_id_for_code(session, "east") == s.east
        with pytest.raises(NotFound):
            await feedback.store_id_for_code(session, "nowhere")
        with pytest.raises(InvalidInput):
            await feedback.open_complaints(session, limit=0)


async def new_staff(db: Database, name: str, role: str, store: str | None) -> int:
    async with db.transaction() as session:
        person = await staff.add(session, name=name, role=role, store_code=store, actor="cli")
        assert person.id is not None
        return person.id


async def reply(db: Database, complaint_id: int, staff_id: int, text: str) -> object:
    async with db.transaction() as session:
        return await feedback.answer_complaint(
            session, complaint_id, staff_id=staff_id, answer=text, now=NOW + timedelta(days=1)
        )


async def test_only_home_store_staff_or_a_chain_manager_answer_once(db: Database) -> None:
    s = await shop(db)
    east_clerk = await new_staff(db, "小李", staff.STAFF, "east")
    main_clerk = await new_staff(db, "小张", staff.STAFF, "main")
    roaming_clerk = await new_staff(db, "小赵", staff.STAFF, None)
    boss = await new_staff(db, "王经理", staff.MANAGER, None)
    gone = await new_staff(db, "老刘", staff.STAFF, "main")
    async with db.transaction() as session:
        await staff.deactivate(session, gone, actor="cli")
    complaint = await file(db, s.alice, "洗车后车身还有水渍")
    assert complaint.id is not None

    for refused in (east_clerk, roaming_clerk, gone):
        with pytest.raises(staff.NotAllowed):
            await reply(db, complaint.id, refused, "抱歉")
    with pytest.raises(NotFound):
        await reply(db, complaint.id, 999, "抱歉")
    with pytest.raises(NotFound):
        await reply(db, 999_999, main_clerk, "抱歉")
    with pytest.raises(InvalidInput):
        await reply(db, complaint.id, main_clerk, "  ")
    assert [row.complaint.id for row in await open_list(db)] == [complaint.id]

    done = await reply(db, complaint.id, main_clerk, " 非常抱歉，已安排免费重洗。 ")
    assert isinstance(done, feedback.ComplaintAnswer)
    assert (done.member_id, done.answer, done.locale) == (
        s.alice,
        "非常抱歉，已安排免费重洗。",
        "zh_CN",
    )
    assert done.filed_at == NOW
    with pytest.raises(InvalidInput) as twice:
        await reply(db, complaint.id, boss, "再次抱歉")
    assert twice.value.params["reason"] == "answered"
    assert await open_list(db) == []
    async with db.read() as session:
        stored = await session.get(Complaint, complaint.id)
    assert stored is not None and stored.status == feedback.ANSWERED
    assert (
        stored.answer == "非常抱歉，已安排免费重洗。"
        and stored.answered_by == f"staff:{main_clerk}"
    )
    assert stored.answered_at == NOW + timedelta(days=1)

    # A chain-wide manager answers any store's members, and those without a home store.
    for member_id in (s.bob, s.carol):
        other = await file(db, member_id, "服务态度不好")
        assert other.id is not None
        assert isinstance(await reply(db, other.id, boss, "已处理"), feedback.ComplaintAnswer)


async def test_answers_are_audited_without_the_words(db: Database) -> None:
    s = await shop(db)
    clerk = await new_staff(db, "小张", staff.STAFF, "main")
    complaint = await file(db, s.alice, "我的手机13812345678没收到提醒")
    assert complaint.id is not None
    await reply(db, complaint.id, clerk, "已为您的车牌沪A12345登记")
    async with db.read() as session:
        log = await session.scalar(select(AuditLog).where(AuditLog.action == "complaint.answer"))
    assert log is not None
    assert (log.actor, log.entity, log.entity_id) == (f"staff:{clerk}", "complaint", complaint.id)
    assert log.detail == {"member_id": s.alice, "store_id": s.main}
    dumped = json.dumps(log.detail, ensure_ascii=False)
    assert "13812345678" not in dumped and "沪A12345" not in dumped


async def test_two_staff_answering_at_once_give_one_answer(db: Database) -> None:
    s = await shop(db)
    clerks = [await new_staff(db, f"员工{i}", staff.STAFF, "main") for i in range(3)]
    complaint = await file(db, s.alice, "洗车后车身还有水渍")
    assert complaint.id is not None
    outcomes = await asyncio.gather(
        *(reply(db, complaint.id, clerk, f"答复{clerk}") for clerk in clerks),
        return_exceptions=True,
    )
    answered = [o for o in outcomes if isinstance(o, feedback.ComplaintAnswer)]
    refused = [o for o in outcomes if isinstance(o, InvalidInput)]
    assert len(answered) == 1 and len(refused) == 2
    async with db.read() as session:
        stored = await session.get(Complaint, complaint.id)
    assert stored is not None and stored.answer == answered[0].answer


def test_nps_arithmetic_rounds_half_away_from_zero() -> None:
    assert feedback.NpsReport(0, 0, 0).score is None
    assert feedback.NpsReport(3, 2, 2).score == 14  # (3 - 2) / 7 = 14.3 %
    assert feedback.NpsReport(1, 7, 0).score == 13  # 12.5 %
    assert feedback.NpsReport(0, 7, 1).score == -13  # -12.5 %
    assert feedback.NpsReport(5, 0, 0).score == 100
    assert feedback.NpsReport(0, 0, 4).score == -100
    assert feedback.NpsReport(1, 1, 1).score == 0 and feedback.NpsReport(1, 1, 1).total == 3


async def test_nps_counts_known_answers_in_a_period_and_a_store(db: Database) -> None:
    s = await shop(db)
    async with db.transaction() as session:
        extra = []
        for n in range(6):
            visit = await visits.record(
                session, s.alice, date(2026, 11, 1 + n), 1_000, RULES, store_id=s.main
            )
            extra.append(visit.id)
    # Main store: 10, 9 promoters; 8, 7 passives; 6, 0 detractors. East store: one promoter.
    for visit_id, score in zip(extra, (10, 9, 8, 7, 6, 0), strict=True):
        await answer(db, s.alice, visit_id, score)
    await answer(db, s.bob, s.bob_visit, 10)
    # Outside the period: before it starts, and exactly at its (exclusive) end.
    await answer(db, s.alice, s.alice_old, 0, now=NOW - timedelta(days=30))
    await answer(db, s.alice, s.alice_new, 0, now=NOW + timedelta(days=7))
    start, end = NOW - timedelta(days=1), NOW + timedelta(days=7)
    async with db.read() as session:
        chain = await feedback.nps(session, start, end)
        main = await feedback.nps(session, start, end, store_id=s.main)
        east = await feedback.nps(session, start, end, store_id=s.east)
        empty = await feedback.nps(session, end, end + timedelta(days=1), store_id=s.east)
        with pytest.raises(InvalidInput):
            await feedback.nps(session, end, start)
    assert (chain.promoters, chain.passives, chain.detractors, chain.score) == (3, 2, 2, 14)
    assert (main.promoters, main.passives, main.detractors, main.score) == (2, 2, 2, 0)
    assert (east.promoters, east.total, east.score) == (1, 1, 100)
    assert empty.total == 0 and empty.score is None


async def test_export_includes_feedback_and_erasure_keeps_only_scores(db: Database) -> None:
    s = await shop(db)
    await answer(db, s.alice, s.alice_new, 3, comment="王先生的车没洗干净")
    await file(db, s.alice, "我的电话是13812345678，请回电")
    await file(db, s.bob, "李女士的投诉")
    async with db.transaction() as session:
        exported = await privacy.export(session, s.alice, actor="manager:1")
    assert [(r["score"], r["comment"]) for r in exported["survey_responses"]] == [
        (3, "王先生的车没洗干净")
    ]
    assert [c["body"] for c in exported["complaints"]] == ["我的电话是13812345678，请回电"]
    json.dumps(exported, ensure_ascii=False)

    async with db.transaction() as session:
        await privacy.erase(session, s.alice, actor="manager:1", reason="member asked")
    rows = await responses(db)
    assert [(r.member_id, r.score, r.comment) for r in rows] == [(s.alice, 3, None)]
    async with db.read() as session:
        left = await session.scalar(
            select(func.count()).select_from(Complaint).where(Complaint.member_id == s.alice)
        )
        report = await feedback.nps(session, NOW - timedelta(days=1), NOW + timedelta(days=1))
    assert left == 0
    assert [row.member_ref for row in await open_list(db)] == ["B-1"]
    assert report.detractors == 1  # the score still counts, anonymously


@pytest.fixture
def complaints_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A SQLite shop file the CLI reads through MEMBERBOT_DATABASE_URL, like the real command."""
    path = tmp_path / "shop.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMBERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.delenv("MEMBERBOT_SHOP_CONFIG", raising=False)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


async def _cli_shop(url: str) -> tuple[int, int, int]:
    database = Database.from_url(url)
    try:
        await prepare(database, load_shop_config(None))
        s = await shop(database)
        await file(database, s.bob, "保养等了三个小时", NOW)
        complaint = await file(database, s.alice, "洗车后车身还有水渍", NOW + timedelta(hours=1))
        clerk = await new_staff(database, "小张", staff.STAFF, "main")
        east_clerk = await new_staff(database, "小李", staff.STAFF, "east")
        assert complaint.id is not None
        return complaint.id, clerk, east_clerk
    finally:
        await database.dispose()


@pytest.mark.db
def test_complaints_cli_lists_and_answers(complaints_cli: Path) -> None:
    complaint_id, clerk, east_clerk = asyncio.run(
        _cli_shop(f"sqlite+aiosqlite:///{complaints_cli}")
    )
    cli = typer.Typer()
    cli.add_typer(complaints_app, name="complaints")
    runner = CliRunner()
    wide = {"COLUMNS": "200"}

    listed = runner.invoke(cli, ["complaints", "list"], env=wide)
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.splitlines() if "-1 " in line]
    assert ["B-1" in lines[0], "A-1" in lines[1]] == [True, True]  # oldest first
    assert "+86138****5678" in listed.output and "east" in lines[0] and "main" in lines[1]
    assert "洗车后车身还有水渍" in listed.output
    assert "13812345678" not in listed.output and "王先生" not in listed.output
    only_main = runner.invoke(cli, ["complaints", "list", "--store", "main"], env=wide)
    assert "A-1" in only_main.output and "B-1" not in only_main.output
    unknown = runner.invoke(cli, ["complaints", "list", "--store", "nowhere"])
    assert unknown.exit_code == 1 and "no such store" in unknown.output

    args = ["complaints", "answer", str(complaint_id), "抱歉，已安排免费重洗"]
    refused = runner.invoke(cli, [*args, "--staff", str(east_clerk)])
    assert refused.exit_code == 1 and "another store" in refused.output
    answered = runner.invoke(cli, [*args, "--staff", str(clerk)])
    assert answered.exit_code == 0, answered.output
    assert f"Complaint {complaint_id} answered" in answered.output
    queued = sqlite_rows(
        complaints_cli, "SELECT rule, category, body FROM outbox_message ORDER BY id"
    )
    assert len(queued) == 1 and queued[0][:2] == ("complaint_answer", "transactional")
    assert "抱歉，已安排免费重洗" in queued[0][2]  # alice's language is Chinese
    twice = runner.invoke(cli, [*args, "--staff", str(clerk)])
    assert twice.exit_code == 1 and "already been answered" in twice.output
    assert len(sqlite_rows(complaints_cli, "SELECT id FROM outbox_message")) == 1
    after = runner.invoke(cli, ["complaints", "list", "--store", "main"], env=wide)
    assert after.exit_code == 0 and "No open complaints." in after.output
    assert runner.invoke(cli, ["complaints", "answer", str(complaint_id), "x"]).exit_code == 2


def sqlite_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as connection:
        return list(connection.execute(sql).fetchall())
