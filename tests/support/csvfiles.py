"""CSV exports written the way shops' tools save them (CRLF line ends, a chosen encoding), for the
parsing and import tests."""

from __future__ import annotations

from pathlib import Path


def write(tmp_path: Path, name: str, lines: list[str], encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path
