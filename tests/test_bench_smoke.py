"""Every benchmark still runs end to end, at a size that takes seconds.

The benchmarks are scripts, not tests, and their figures are read by people; but a script that
no longer runs after a refactoring is found only when someone needs its figures. Each is run
here as a user runs it (`python -m bench.…` from the repository root) on a tiny chain, and its
own correctness lines are checked (every member answered with the right balance, nothing lost
or sent twice, the import's rows all created). Speed is not asserted: that is what the full-size
runs are for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parent.parent


def run_bench(module: str, *args: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    # A missed speed target exits 1; a crash exits otherwise or prints a traceback.
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr[-2000:]
    return done.stdout


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def test_bench_chat_answers_every_member_with_the_right_balance(tmp_path: Path) -> None:
    out = run_bench(
        "bench_chat",
        "--members",
        "300",
        "--ledger-rows",
        "3000",
        "--chats",
        "30",
        "--warmup",
        "0",
        "--database-url",
        sqlite_url(tmp_path / "chat.db"),
        tmp_path=tmp_path,
    )
    assert "30 of 30 answered" in out
    assert "0 wrong balance, 0 extra messages" in out


def test_bench_dispatch_loses_and_doubles_nothing(tmp_path: Path) -> None:
    out = run_bench(
        "bench_dispatch",
        "--messages",
        "40",
        "--database-url",
        sqlite_url(tmp_path / "dispatch.db"),
        tmp_path=tmp_path,
    )
    figures = {
        line.split()[0]: line.split()[-1]
        for line in out.splitlines()
        if line.startswith(("lost ", "doubled "))
    }
    assert "accepted sends     40 in" in out
    assert figures == {"lost": "0", "doubled": "0"}


def test_bench_import_and_rules_run_their_day(tmp_path: Path) -> None:
    imported = run_bench(
        "bench_import",
        "--members",
        "500",
        "--visits",
        "2000",
        "--out",
        str(tmp_path / "import"),
        tmp_path=tmp_path,
    )
    assert "created 2,000, unchanged 0, errors 0" in imported
    rules = run_bench(
        "bench_rules",
        "--members",
        "500",
        "--visits",
        "4000",
        "--database-url",
        sqlite_url(tmp_path / "rules.db"),
        tmp_path=tmp_path,
    )
    assert "second run of the same day" in rules and "0 new rows, 0 coupons" in rules


@pytest.mark.parametrize("mode", [[], ["--aes"]], ids=["plain", "safe"])
def test_bench_wechat_answers_every_request_with_the_members_balance(
    tmp_path: Path, mode: list[str]
) -> None:
    out = run_bench(
        "bench_wechat",
        "--members",
        "20",
        "--warmup",
        "5",
        *mode,
        "--database-url",
        sqlite_url(tmp_path / "wechat.db"),
        tmp_path=tmp_path,
    )
    # The reference's replies and memberbot's, each checked: HTTP 200, signed XML to that
    # member, and for memberbot the member's own balance.
    assert out.count("20 requests in") == 2, out
    assert out.count("replies: 20 right, 0 wrong, 0 errors") == 2, out
    assert "deliveries stored by the server: 25 of 25 sent (25 answered)" in out, out
    assert "ratio to the reference:" in out and "target p99 <= 100 ms:" in out, out
