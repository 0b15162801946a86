"""The import arrows of docs/architecture.md, read from the code itself.

`memberbot → bot, scheduler → domain → db`: a package imports only itself and the packages
below it, whether at the top of a module, inside a function or under `TYPE_CHECKING`. `domain`
knows no chat library, scheduler, CLI or settings; `bot` runs no SQL of its own (it may name
the session type it hands to `domain`); `scheduler` knows no chat library or web server. A
broken arrow fails with the file and line, so the design holds from now on.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("db", "domain", "bot", "scheduler", "memberbot")

# What each package may import of ours (itself included).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "db": frozenset({"db"}),
    "domain": frozenset({"domain", "db"}),
    "bot": frozenset({"bot", "domain", "db"}),
    "scheduler": frozenset({"scheduler", "domain", "db"}),
    "memberbot": frozenset(OURS),
}
# Libraries a package must not reach for: the channels, the clock, the CLI and the settings
# belong to the layers that own them.
MUST_NOT_IMPORT: dict[str, tuple[str, ...]] = {
    "db": ("telegram", "wechatpy", "apscheduler", "typer", "rich", "starlette", "uvicorn"),
    "domain": (
        "telegram",
        "wechatpy",
        "apscheduler",
        "typer",
        "rich",
        "starlette",
        "uvicorn",
        "pydantic_settings",
    ),
    "bot": ("apscheduler", "typer", "pydantic_settings", "sqlmodel", "sqlalchemy"),
    "scheduler": ("telegram", "wechatpy", "typer", "rich", "starlette", "uvicorn"),
}
# The one SQLAlchemy name `bot` may use: the session type it passes to `domain`.
BOT_MAY_USE = ("sqlalchemy.ext.asyncio",)
# Entry points a tool runs from outside, allowed to read the settings object.
ENTRY_POINTS = {
    # Alembic's own CLI runs this file; without a URL from us it reads the operator's.
    "db/migrations/env.py": frozenset({"memberbot.settings"}),
}


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    imported: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: imports {self.imported}"


def imported_names(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    """Every module an import statement names, with its line; relative imports resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join([package, module] if module else [package])
            found.append((node.lineno, module))
    return found


def violations(root: Path) -> list[Violation]:
    """The forbidden imports of every module under `root`'s packages."""
    found: list[Violation] = []
    for package in OURS:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            allowed_extra = ENTRY_POINTS.get(relative, frozenset())
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
            for line, name in imported_names(tree, package):
                if name in allowed_extra or not forbidden(package, name):
                    continue
                found.append(Violation(relative, line, name))
    return found


def forbidden(package: str, name: str) -> bool:
    top = name.split(".")[0]
    if top in OURS:
        return top not in MAY_IMPORT[package]
    if package == "bot" and any(name == ok or name.startswith(ok + ".") for ok in BOT_MAY_USE):
        return False
    return top in MUST_NOT_IMPORT.get(package, ())


def test_every_import_follows_the_arrows() -> None:
    found = violations(ROOT)
    assert not found, "imports the design forbids:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize(
    ("package", "source", "imported"),
    [
        ("scheduler", "from bot.conversation import Chat\n", "bot.conversation"),
        ("domain", "def f():\n    from memberbot.settings import Settings\n", "memberbot.settings"),
        ("domain", "import telegram\n", "telegram"),
        ("bot", "from sqlalchemy import select\n", "sqlalchemy"),
        (
            "db",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import domain\n",
            "domain",
        ),
        ("scheduler", "from apscheduler import x\nfrom memberbot import app\n", "memberbot"),
    ],
)
def test_a_broken_arrow_is_named_with_file_and_line(
    tmp_path: Path, package: str, source: str, imported: str
) -> None:
    for name in OURS:
        (tmp_path / name).mkdir()
    module = tmp_path / package / "broken.py"
    module.write_text(source, encoding="utf-8")
    [violation] = violations(tmp_path)
    line = source.splitlines().index(
        next(text for text in source.splitlines() if imported.split(".")[0] in text)
    )
    assert violation == Violation(f"{package}/broken.py", line + 1, imported)
    assert str(violation).startswith(f"{package}/broken.py:{line + 1}: imports {imported}")


def test_allowed_imports_are_not_reported(tmp_path: Path) -> None:
    for name in OURS:
        (tmp_path / name).mkdir()
    (tmp_path / "bot" / "ok.py").write_text(
        "from sqlalchemy.ext.asyncio import AsyncSession\nfrom domain import points\n"
        "from db.models import Member\nfrom . import intents\n",
        encoding="utf-8",
    )
    (tmp_path / "memberbot" / "ok.py").write_text(
        "from bot.channels import telegram\nfrom scheduler import jobs\n", encoding="utf-8"
    )
    assert violations(tmp_path) == []
