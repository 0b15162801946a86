"""The lifecycle rules: who gets which message on a day, rendered and queued in the outbox.

The rules are data (`scheduler/data/rules.yaml`, overridable per shop, see
`scheduler.ruleconfig`); each rule's members are selected by set-based SQL
(`scheduler.selectors`), streamed in chunks, rendered in the member's language and written to
the outbox under the key (rule, member, occurrence). So:

* `plan` shows what a day's run would queue and changes nothing (coupons not issued yet show a
  placeholder code);
* `run` queues it. Each chunk is one write transaction: keys already in the outbox are skipped
  before anything else happens, a rule's coupon is issued in the same transaction as its
  message (keyed by the message, so a rerun finds the same coupon and code), and the rows are
  inserted with ON CONFLICT DO NOTHING. Running a day twice adds nothing.

Consent for marketing is applied at selection and again by the dispatcher; quiet hours, caps and
channels are the dispatcher's. A rule whose template fails for a member counts the failure and
goes on with the others: one bad staff template must not stop every other message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Coupon, OutboxMessage
from db.session import Database
from db.types import utcnow
from domain import coupons
from domain.errors import TemplateError
from domain.locales import localized
from domain.messages import Renderer
from domain.shop import ShopConfig
from scheduler import outbox
from scheduler.outbox import Intent
from scheduler.ruleconfig import CouponSpec, Rule, load_rules
from scheduler.selectors import Candidate, CandidateQuery, ChainDay, load_chain_day, queries_for

__all__ = ["Planned", "Rule", "RuleRun", "RunSummary", "load_rules", "plan", "run"]

log = logging.getLogger(__name__)
CHUNK = 2_000
# What a preview shows where a coupon's code will be once the run issues it.
PENDING_CODE = "?????-?????"
# Every message must fit the stricter channel: the dispatcher chooses the channel later.
MEASURE_CHANNEL = "wechat"


@dataclass(frozen=True)
class Planned:
    """A message the rules would send: whom, why (rule and occurrence), when and in what words.
    `context` is what the template was given (dates still dates; the outbox stores it as
    `outbox.stored_context(context)`); `queued` says it is already in the outbox (a run would
    skip it); `error` says why it could not be rendered (then `body` is empty)."""

    rule: str
    category: str
    template: str
    member_id: int
    member_ref: str
    occurrence: str
    idempotency_key: str
    locale: str
    not_before: datetime
    context: dict[str, Any]
    body: str
    queued: bool = False
    error: str | None = None


@dataclass
class RuleRun:
    """One rule's share of a run: members selected, messages newly queued, already there,
    not renderable, coupons issued, and the seconds spent selecting, rendering and writing."""

    rule: str
    selected: int = 0
    enqueued: int = 0
    already: int = 0
    failed: int = 0
    coupons: int = 0
    select_seconds: float = 0.0
    render_seconds: float = 0.0
    write_seconds: float = 0.0


@dataclass
class RunSummary:
    day: date
    rules: list[RuleRun] = field(default_factory=list)

    def total(self) -> RuleRun:
        total = RuleRun("total")
        for part in self.rules:
            for name in ("selected", "enqueued", "already", "failed", "coupons"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            for name in ("select_seconds", "render_seconds", "write_seconds"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
        return total


def _chosen(rules: Sequence[Rule], only: str | None) -> list[Rule]:
    if only is None:
        return [r for r in rules if r.enabled]
    chosen = [r for r in rules if r.key == only]
    if not chosen:
        from domain.errors import NotFound

        raise NotFound(f"no rule {only!r}", rule=only)
    return chosen


@asynccontextmanager
async def _reading(db_or_session: Database | AsyncSession) -> AsyncIterator[AsyncSession]:
    if isinstance(db_or_session, AsyncSession):
        yield db_or_session
        return
    async with db_or_session.read() as session:
        yield session


async def _chunks(
    session: AsyncSession, queries: Iterable[CandidateQuery], stats: RuleRun | None = None
) -> AsyncIterator[list[Candidate]]:
    """The rule's candidates in chunks of about CHUNK, streamed (never all rows in memory)."""
    for query in queries:
        started = time.perf_counter()
        result = await session.stream(query.statement.execution_options(yield_per=CHUNK))
        async for rows in result.partitions(CHUNK):
            chunk = [candidate for row in rows for candidate in query.to_candidates(row)]
            if stats is not None:
                stats.select_seconds += time.perf_counter() - started
            yield chunk
            started = time.perf_counter()
        if stats is not None:
            stats.select_seconds += time.perf_counter() - started


def _intent(rule: Rule, candidate: Candidate, chain: ChainDay, context: dict[str, Any]) -> Intent:
    return Intent(
        member_id=candidate.member_id,
        rule=rule.key,
        occurrence=candidate.occurrence,
        category=rule.category,
        template_key=rule.template,
        locale=candidate.locale,
        not_before=candidate.not_before or chain.not_before,
        context=context,
        body=None,
    )


def _coupon_key(intent_key: str) -> str:
    return f"rule:{intent_key}"


def _spec(rule: Rule, candidate: Candidate) -> CouponSpec | None:
    return candidate.coupon if candidate.coupon is not None else rule.coupon


def coupon_context(spec: CouponSpec, code: str, locale: str, day: date) -> dict[str, Any]:
    return {
        "code": code,
        "title": localized(locale, spec.title.zh_CN, spec.title.en),
        "value_cents": spec.value_cents,
        "percent_off": spec.percent,
        "min_spend_cents": spec.min_spend_cents,
        "valid_until": spec.valid_until(day),
    }


def _with_rule_flags(rule: Rule, context: dict[str, Any]) -> dict[str, Any]:
    """What the dispatcher reads besides the words: whether quiet hours hold the message, and
    the WeChat template message it may go as."""
    flags: dict[str, Any] = {"quiet_hours": rule.quiet_hours}
    if rule.wechat_template is not None:
        flags["wechat_template"] = rule.wechat_template.model_dump()
    return {**context, "dispatch": flags}


async def _existing(session: AsyncSession, model: Any, column: Any, keys: list[str]) -> dict:
    if not keys:
        return {}
    rows = await session.execute(select(column, model).where(column.in_(keys)))
    return {key: row for key, row in rows.all()}


async def plan(
    db_or_session: Database | AsyncSession,
    rules: Sequence[Rule],
    day: date,
    config: ShopConfig,
    *,
    rule: str | None = None,
    limit: int | None = None,
    now: datetime | None = None,
) -> AsyncIterator[Planned]:
    """The messages a run for `day` would queue, rendered; nothing is written. `limit` caps
    the messages shown per rule; messages already queued are included, marked `queued`."""
    renderer = Renderer()
    async with _reading(db_or_session) as session:
        chain = await load_chain_day(session, day, now or utcnow(), config.zone)
        for chosen in _chosen(rules, rule):
            shown = 0
            queries = await queries_for(session, chosen, chain)
            async for chunk in _chunks(session, queries):
                for planned in await _preview_chunk(session, chosen, chain, chunk, renderer):
                    yield planned
                    shown += 1
                    if limit is not None and shown >= limit:
                        break
                if limit is not None and shown >= limit:
                    break


async def _preview_chunk(
    session: AsyncSession, rule: Rule, chain: ChainDay, chunk: list[Candidate], renderer: Renderer
) -> list[Planned]:
    intents = [_intent(rule, c, chain, c.context) for c in chunk]
    keys = [i.idempotency_key for i in intents]
    queued = await _existing(session, OutboxMessage, OutboxMessage.idempotency_key, keys)
    issued = {}
    if rule.coupon is not None or getattr(rule, "second_coupon", None) is not None:
        issued = await _existing(session, Coupon, Coupon.key, [_coupon_key(k) for k in keys])
    planned = []
    for candidate, intent in zip(chunk, intents, strict=True):
        key = intent.idempotency_key
        found = issued.get(_coupon_key(key))
        code = found.code if found is not None else PENDING_CODE  # not issued by a preview
        context, body, error = _message(renderer, rule, chain, candidate, code)
        planned.append(
            Planned(
                rule=rule.key,
                category=rule.category,
                template=rule.template,
                member_id=candidate.member_id,
                member_ref=candidate.member_ref,
                occurrence=candidate.occurrence,
                idempotency_key=key,
                locale=candidate.locale,
                not_before=intent.not_before,
                context=_with_rule_flags(rule, context),
                body=body,
                queued=key in queued,
                error=error,
            )
        )
    return planned


def _message(
    renderer: Renderer,
    rule: Rule,
    chain: ChainDay,
    candidate: Candidate,
    coupon_code: str | None,
) -> tuple[dict[str, Any], str, str | None]:
    """The candidate's context (with its coupon, if the rule gives one) and the rendered
    text, or the reason it cannot be rendered: the same for a preview and a run."""
    context = candidate.context
    spec = _spec(rule, candidate)
    if spec is not None:
        if coupon_code is None:
            raise LookupError(f"rule {rule.key}: no coupon issued for {candidate.occurrence}")
        coupon = coupon_context(spec, coupon_code, candidate.locale, chain.day)
        context = {**context, "coupon": coupon}
    body, error = _render(renderer, rule, candidate, context)
    return context, body, error


def _render(
    renderer: Renderer, rule: Rule, candidate: Candidate, context: dict[str, Any]
) -> tuple[str, str | None]:
    try:
        return renderer.render(rule.template, candidate.locale, context, MEASURE_CHANNEL), None
    except TemplateError as exc:
        # The member ref only: the message's context holds names and plates.
        log.warning("rule %s: %s not rendered: %s", rule.key, candidate.member_ref, exc)
        return "", str(exc)


async def run(
    db: Database,
    rules: Sequence[Rule],
    day: date,
    config: ShopConfig,
    now: datetime | None = None,
    *,
    rule: str | None = None,
) -> RunSummary:
    """Queue every enabled rule's messages for `day`; returns the counts per rule."""
    now = now or utcnow()
    renderer = Renderer()
    summary = RunSummary(day=day)
    async with db.read() as session:
        chain = await load_chain_day(session, day, now, config.zone)
        for chosen in _chosen(rules, rule):
            stats = RuleRun(chosen.key)
            summary.rules.append(stats)
            queries = await queries_for(session, chosen, chain)
            async for chunk in _chunks(session, queries, stats):
                stats.selected += len(chunk)
                started = time.perf_counter()
                async with db.transaction() as tx:
                    await _write_chunk(tx, chosen, chain, chunk, renderer, stats)
                stats.write_seconds += time.perf_counter() - started
            # Render time was measured inside the writes; keep the two apart.
            stats.write_seconds -= stats.render_seconds
            log.info(
                "rule %s on %s: %d selected, %d queued, %d already there, %d failed",
                chosen.key,
                day,
                stats.selected,
                stats.enqueued,
                stats.already,
                stats.failed,
            )
    return summary


async def _write_chunk(
    session: AsyncSession,
    rule: Rule,
    chain: ChainDay,
    chunk: list[Candidate],
    renderer: Renderer,
    stats: RuleRun,
) -> None:
    """Queue one chunk: skip keys already queued, issue the coupons of the rest (same
    transaction, keyed by the message), render, insert."""
    fresh: dict[str, tuple[Candidate, Intent]] = {}
    for candidate in chunk:
        intent = _intent(rule, candidate, chain, candidate.context)
        fresh.setdefault(intent.idempotency_key, (candidate, intent))
    queued = await _existing(session, OutboxMessage, OutboxMessage.idempotency_key, list(fresh))
    stats.already += len(chunk) - len(fresh) + len(queued)
    todo = [(key, c, i) for key, (c, i) in fresh.items() if key not in queued]
    wanted = [
        _coupon_request(rule, spec, c, key, chain.day)
        for key, c, _ in todo
        if (spec := _spec(rule, c)) is not None
    ]
    issued = await coupons.issue_many(session, wanted, actor=f"rule:{rule.key}") if wanted else {}
    stats.coupons += len(wanted)
    started = time.perf_counter()
    intents = []
    for key, candidate, intent in todo:
        found = issued.get(_coupon_key(key))
        code = found.code if found is not None else None
        context, body, error = _message(renderer, rule, chain, candidate, code)
        if error is not None:
            stats.failed += 1
            continue
        intents.append(
            replace(
                intent, context=outbox.stored_context(_with_rule_flags(rule, context)), body=body
            )
        )
    stats.render_seconds += time.perf_counter() - started
    added = await outbox.enqueue(session, intents)
    stats.enqueued += added
    stats.already += len(intents) - added


def _coupon_request(
    rule: Rule, spec: CouponSpec, candidate: Candidate, key: str, day: date
) -> coupons.KeyedCoupon:
    """The occasion's coupon, keyed by its message: a rerun or a racing process gets the same
    coupon and code back."""
    return coupons.KeyedCoupon(
        key=_coupon_key(key),
        member_id=candidate.member_id,
        kind=spec.kind,
        value_cents=spec.value_cents,
        percent_off=spec.percent,
        min_spend_cents=spec.min_spend_cents,
        valid_from=day,
        valid_until=spec.valid_until(day),
        source=rule.key,
    )
