"""WeChat's text-only chat, without a database: buttons as numbered choices, several replies in
one message within WeChat's byte limit, and what each kind of push means to the core."""

from __future__ import annotations

import pytest

from bot.channels import numbered
from bot.channels.wechat import Incoming, event_for
from bot.conversation import BUTTON, COMMAND, JOINED, LEFT, TEXT
from domain.outgoing import Button, Reply


def reply(*rows: tuple[tuple[str, str], ...], text: str = "hi") -> Reply:
    return Reply(text, tuple(tuple(Button(label, data) for label, data in row) for row in rows))


def test_buttons_are_numbered_in_order_across_replies() -> None:
    replies = [
        reply((("积分", "go:points"), ("等级", "go:tier"))),
        reply((("菜单", "go:menu"),)),
    ]
    listed = numbered.numbered(replies)
    assert [(c.key, c.data) for c in listed] == [
        ("1", "go:points"),
        ("2", "go:tier"),
        ("3", "go:menu"),
    ]
    assert not any(c.numeric for c in listed)


def test_a_number_label_is_its_own_key_and_the_others_take_free_numbers() -> None:
    scores = tuple((str(n), f"feedback:score:7:{n}") for n in range(11))
    listed = numbered.numbered([reply(scores, (("不用了", "feedback:skip"),))])
    keys = {c.key: c.data for c in listed}
    assert keys["7"] == "feedback:score:7:7" and keys["0"] == "feedback:score:7:0"
    assert keys["11"] == "feedback:skip"
    # A repeated or padded number label is numbered like any other.
    twice = numbered.numbered([reply((("5", "a:b:1"), ("5", "a:b:2"), ("05", "a:b:3")))])
    assert [c.key for c in twice] == ["5", "1", "2"]


@pytest.mark.parametrize(
    ("typed", "data"),
    [("1", "go:points"), (" 2 ", "go:tier"), ("２", "go:tier"), ("02", "go:tier")],
)
def test_a_typed_key_presses_its_button(typed: str, data: str) -> None:
    assert numbered.pressed(typed, {"1": "go:points", "2": "go:tier"}) == data


@pytest.mark.parametrize("typed", ["3", "", "1号", "one", "1 2", "1234"])
def test_anything_else_is_not_a_press(typed: str) -> None:
    assert numbered.pressed(typed, {"1": "go:points", "2": "go:tier"}) is None


def test_replies_fit_in_the_byte_limit_with_the_choices_whole() -> None:
    tail = "回复 1：积分\n回复 2：菜单"
    assert numbered.fit(["你好", "", "再见"], tail, 2048) == f"你好\n\n再见\n\n{tail}"
    long = "长" * 1000  # 3,000 bytes
    fitted = numbered.fit([long], tail, 2048)
    assert len(fitted.encode()) <= 2048 and fitted.endswith(tail)
    assert "长…\n\n回复 1" in fitted
    # Choices alone too long: cut from the end, still within the limit and whole characters.
    cut = numbered.fit(["x"], "选" * 1000, 100)
    assert len(cut.encode()) <= 100 and cut.endswith("…")
    assert numbered.fit([], "", 2048) == ""


def _incoming(kind: str, text: str = "") -> Incoming:
    return Incoming("oUser", "gh_account", "msg:1", kind, text)


def test_what_each_push_means_to_the_core() -> None:
    offered = {"1": "booking:day:abcd1234:1:20261201:0"}
    cases = {
        ("text", "1"): (BUTTON, "booking:day:abcd1234:1:20261201:0"),
        ("text", "积分"): (TEXT, ""),
        ("click", "points"): (BUTTON, "go:points"),
        ("click", "booking:start"): (BUTTON, "booking:start"),
        ("subscribe", ""): (JOINED, ""),
        ("unsubscribe", ""): (LEFT, ""),
        ("other", ""): (TEXT, ""),
    }
    for (kind, text), (event_kind, data) in cases.items():
        event = event_for(_incoming(kind, text), offered)
        assert (event.kind, event.data) == (event_kind, data), (kind, text)
        assert event.channel == "wechat" and event.address == "oUser"
    scan = event_for(_incoming("scan", "ABCD2345"), {})
    assert (scan.kind, scan.command, scan.text) == (COMMAND, "start", "ABCD2345")
    stop = event_for(_incoming("text", "/stop now"), {})
    assert (stop.kind, stop.command, stop.text) == (COMMAND, "stop", "now")
    # A number with nothing offered is just text.
    assert event_for(_incoming("text", "1"), {}).kind == TEXT
