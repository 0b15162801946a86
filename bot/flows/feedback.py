"""Telling the chain how it went: the 0-10 survey about the latest visit (with an optional
comment) and complaints that staff answer.

Score buttons carry everything they need, `feedback:score:<visit_id>:<score>` (written and read
by `domain.feedback`, which the scheduler's survey shares), so the survey the scheduler sends
after a visit works in a chat with no saved state. Their arguments are never trusted: a visit
that is not the member's, a score outside 0-10 or anything not a number is a stale button and
writes nothing.

After a score, and after asking for a complaint, the chat waits for words: the next free text
is the comment or the complaint. Free text that names an intent (积分, 取消, menu) is not taken
as words: the wait ends and the chat answers that intent instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from bot import intents
from bot.conversation import Flow, Stale, Turn
from domain import binding, feedback
from domain.errors import NotFound
from domain.identity import mask_phone
from domain.locales import DEFAULT_LOCALE
from domain.outgoing import Button, Reply

NAME = "feedback"
AWAIT_COMMENT, AWAIT_COMPLAINT = "comment", "complaint"


def score_buttons(visit_id: int) -> list[list[Button]]:
    """The eleven answers, 0 to 10, in two rows that fit a phone screen."""
    return [
        [Button(label, data) for label, data in row] for row in feedback.score_buttons(visit_id)
    ]


async def survey(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """Ask about the member's most recent visit, unless there is none or it is rated already."""
    async with turn.read() as session:
        visit = await feedback.visit_to_rate(session, turn.member_id)
    if visit is None:
        return [turn.say("feedback_no_visit", turn.menu())]
    about = {"visited_on": visit.visited_on, "store_name": visit.store_name or ""}
    if visit.response is not None:
        return [turn.say("feedback_already", turn.menu(), visit=about, score=visit.response.score)]
    return [turn.say("feedback_survey", score_buttons(visit.visit_id), visit=about)]


async def score(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Record the tapped score, then offer to hear more. A second tap on any score of a rated
    visit keeps the first answer and says so."""
    pressed = feedback.read_score_button(args)
    if pressed is None:
        raise Stale("not a score button's visit and score")
    visit_id, value = pressed
    try:
        async with turn.write() as session:
            rating = await feedback.rate_visit(
                session, turn.member_id, visit_id, value, turn.event.channel, turn.now
            )
    except NotFound as exc:
        raise Stale("not this member's visit") from exc
    response, already = rating.response, rating.again
    if already and response.comment is not None:
        return [turn.say("feedback_already", turn.menu(), score=response.score)]
    await turn.save_state(NAME, {"await": AWAIT_COMMENT, "response_id": response.id})
    no_thanks = turn.button(f"{NAME}.no_thanks", f"{NAME}:skip")
    return [turn.say("feedback_thanks", [[no_thanks]], score=response.score, already=already)]


async def skip(turn: Turn, _args: Sequence[str]) -> list[Reply]:
    """ "No thanks" to a comment: stop waiting for one."""
    if turn.state is not None and turn.state.flow == NAME:
        await turn.clear_state()
    return [turn.say("feedback_skipped", turn.menu())]


async def complaint(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """Ask what went wrong; `/complaint <text>` files the text at once."""
    if args and args[0].strip():
        return await _file(turn, args[0])
    await turn.save_state(NAME, {"await": AWAIT_COMPLAINT})
    return [turn.say("feedback_complaint_ask", [[turn.button("cancel")]], again=False)]


async def on_text(turn: Turn, args: Sequence[str]) -> list[Reply]:
    """The words the chat was waiting for: a comment on a score, or a complaint."""
    text = args[0].strip() if args else ""
    if intents.text_intent(text) is not None:
        # A menu word is a request, not a comment: stop waiting and answer it afresh.
        await turn.clear_state()
        return await turn.chat.handle(turn.event)
    waiting = turn.state.data.get("await") if turn.state is not None else None
    if waiting == AWAIT_COMPLAINT:
        if not text:
            return [turn.say("feedback_complaint_ask", [[turn.button("cancel")]], again=True)]
        return await _file(turn, text)
    if waiting == AWAIT_COMMENT:
        return await _comment(turn, text)
    await turn.clear_state()
    raise Stale("feedback state without a known wait")


async def _comment(turn: Turn, text: str) -> list[Reply]:
    response_id = turn.state.data.get("response_id") if turn.state is not None else None
    if not isinstance(response_id, int) or isinstance(response_id, bool):
        await turn.clear_state()
        raise Stale("comment state without an answer")
    if not text:
        no_thanks = turn.button(f"{NAME}.no_thanks", f"{NAME}:skip")
        return [turn.say("feedback_comment_again", [[no_thanks]])]
    try:
        async with turn.write() as session:
            await feedback.add_comment(session, turn.member_id, response_id, text)
            await _stop_waiting(turn, session)
    except NotFound as exc:
        await turn.clear_state()
        raise Stale("the answer is gone") from exc
    turn.state = None
    return [turn.say("feedback_comment_saved", turn.menu())]


async def _file(turn: Turn, text: str) -> list[Reply]:
    """File the complaint and end the wait in one unit of work, so a retry cannot file twice."""
    async with turn.write() as session:
        filed = await feedback.complain(session, turn.member_id, text, turn.event.channel, turn.now)
        await _stop_waiting(turn, session)
    turn.state = None
    complaint_id = filed.complaint.id
    await _alert_staff(turn, filed.recipients, complaint_id, text)
    return [turn.say("feedback_complaint_filed", turn.menu(), complaint={"id": complaint_id})]


async def _alert_staff(
    turn: Turn, recipients: list[str], complaint_id: int | None, text: str
) -> None:
    """Staff of the member's store hear of it at once (the complaint is already on their list;
    the alert is a courtesy, so a failed one changes nothing)."""
    member = turn.member
    if not recipients or member is None:
        return
    alert = turn.chat.render(
        "staff_complaint",
        DEFAULT_LOCALE,
        {
            "complaint": {"id": complaint_id, "body": text},
            "member": {
                "member_ref": turn.member.member_ref,
                "phone": mask_phone(turn.member.phone),
            },
        },
    )
    await turn.chat.tell_staff(recipients, Reply(alert))


async def _stop_waiting(turn: Turn, session: AsyncSession) -> None:
    if turn.state is not None:
        await binding.clear_state(session, turn.event.channel, turn.event.address)


FLOW = Flow(
    name=NAME,
    intents={"survey": survey, "complaint": complaint},
    actions={"score": score, "skip": skip},
    on_text=on_text,
)
