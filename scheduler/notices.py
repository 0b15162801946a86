"""One-off messages staff actions send a member (not rules): queued in the same outbox, so the
dispatcher's consent, quiet-hours and delivery guarantees hold for them too."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from domain.feedback import ComplaintAnswer
from domain.messages import Renderer
from scheduler import outbox

COMPLAINT_ANSWER = "complaint_answer"
SURVEY_ANSWER = "survey_answer"


async def complaint_answered(
    session: AsyncSession, answered: ComplaintAnswer, renderer: Renderer | None = None
) -> bool:
    """Queue staff's answer to the member who complained, in the member's language. Queued in
    the caller's transaction, so an answer is recorded and sent, or neither; returns whether it
    was new (answering is once only, so it always is)."""
    return await _answered(
        session, answered, COMPLAINT_ANSWER, str(answered.complaint_id), renderer
    )


async def survey_answered(
    session: AsyncSession, answered: ComplaintAnswer, renderer: Renderer | None = None
) -> bool:
    """Queue staff's answer to a member's low survey score, worded as a complaint's answer
    ("about what you told us on …"); `answered.complaint_id` is the survey answer's id."""
    return await _answered(session, answered, SURVEY_ANSWER, str(answered.complaint_id), renderer)


async def _answered(
    session: AsyncSession,
    answered: ComplaintAnswer,
    rule: str,
    occurrence: str,
    renderer: Renderer | None,
) -> bool:
    renderer = renderer or Renderer()
    context = {"complaint": {"filed_at": answered.filed_at, "answer": answered.answer}}
    body = renderer.render(COMPLAINT_ANSWER, answered.locale, context, channel="wechat")
    intent = outbox.Intent(
        member_id=answered.member_id,
        rule=rule,
        occurrence=occurrence,
        category=outbox.TRANSACTIONAL,
        template_key=COMPLAINT_ANSWER,
        locale=answered.locale,
        not_before=answered.answered_at,
        context={"complaint": {"filed_at": answered.filed_at.isoformat()}},
        body=body,
    )
    return await outbox.enqueue(session, [intent]) == 1
