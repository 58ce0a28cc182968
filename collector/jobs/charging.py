"""The two halves every job shares: sending one charge to its gateway, and recording many
answers at once.

A charge runs outside any transaction, under the gateway's rate limit and a timeout; a timeout
or an adapter error is ``InDoubt``, never a decline. Answers are recorded in batches, each
batch one statement, shielded from cancellation so a stop signal cannot lose an answer the
gateway already gave.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

import anyio
import asyncpg
from aiolimiter import AsyncLimiter
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from prometheus_client import Counter, Histogram

from collector.config import Settings
from collector.db import money
from collector.db.attempts import card_declines_30d, record_outcomes
from collector.db.attention import apply_isolated, set_aside
from collector.db.pool import Executor
from collector.domain import (
    AttemptStatus,
    ClaimedCharge,
    MethodKind,
    MovementKind,
    PassCounts,
    ending_of,
)
from collector.eligibility import Refused
from collector.failures import describe_failure
from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    Gateway,
    InDoubt,
    Outcome,
    method_kinds,
)
from collector.logs import get_logger
from collector.metrics import (
    CHARGED_CENTS,
    CHARGES,
    CHARGES_IN_FLIGHT,
    GATEWAY_LATENCY,
    IN_DOUBT_RESOLVED,
)
from collector.policy import (
    DEFAULT_CARD_RULES,
    CardHistory,
    CardRetryRules,
    Decision,
    decide,
    decide_not_taken,
    decide_refused,
)

log = get_logger()

T = TypeVar("T")

# The longest a recorded answer may take to write once a stop was asked for.
RECORD_SHIELD_S = 30
# How long the recorder waits for more answers before writing a batch that is not full: a few
# milliseconds turn hundreds of one-row statements into one.
RECORD_LINGER_S = 0.005


METHOD_KIND_MISMATCH = "method_kind_mismatch"
"""The decline code of a charge refused because its gateway does not charge its kind of method."""

# InDoubt reasons kept on the attempt, by the call that could not answer.
_TIMEOUT_REASON = {"charge": "timeout", "lookup": "lookup_timeout"}
_ERROR_REASON = {"charge": "adapter_error", "lookup": "lookup_error"}


def _metadata(claimed: ClaimedCharge) -> dict[str, str]:
    # The attempt's key travels in the gateway's own metadata too, so an adapter can find the
    # charge after the gateway has forgotten the idempotency key (DESIGN.md).
    metadata = {"collector_attempt_key": claimed.idempotency_key, "lease_id": str(claimed.lease_id)}
    if claimed.installment_id is not None:
        metadata["installment_id"] = str(claimed.installment_id)
    if claimed.payment_id is not None:
        metadata["payment_id"] = str(claimed.payment_id)
    if claimed.reinitiation:
        # NACHA adapters file it under "RETRY PYMT", as the rules require of reinitiations.
        metadata["ach_reinitiation"] = "true"
    return metadata


def limiter_for(rate: float) -> AsyncLimiter:
    """A leaky bucket that lets ``rate`` charges a second through, whatever the rate.

    AsyncLimiter(max_rate, time_period) holds ``max_rate`` charges and drains one every
    ``time_period / max_rate`` seconds, and it refuses to acquire more than it holds: a bucket
    of 0.5 a second would refuse the first charge. So a rate below one a second is a bucket of
    one that drains over ``1 / rate`` seconds (0.5: one charge every 2 s); from one a second
    up, a bucket of ``rate`` over one second (a burst of ``rate``, as before).
    """
    if not rate > 0:
        raise ValueError(f"a rate limit must be positive, not {rate!r}")
    capacity = max(rate, 1.0)
    return AsyncLimiter(capacity, capacity / rate)


class Charger:
    """Sends claimed charges to their gateways, each under its rate limit and a timeout."""

    def __init__(
        self,
        gateways: Mapping[str, Gateway],
        *,
        timeout_s: float,
        rate_limits: Mapping[str, float],
    ) -> None:
        self._gateways = gateways
        self._kinds = {name: method_kinds(gateway) for name, gateway in gateways.items()}
        self._timeout_s = timeout_s
        self._limiters = {
            name: limiter_for(rate) for name, rate in rate_limits.items() if name in gateways
        }

    @classmethod
    def for_settings(cls, gateways: Mapping[str, Gateway], settings: Settings) -> Charger:
        """A charger with the configured gateway timeout and rate limits."""
        return cls(gateways, timeout_s=settings.gateway_timeout_s, rate_limits=settings.rate_limits)

    async def charge(self, claimed: ClaimedCharge) -> Outcome:
        """Charge once under the attempt's idempotency key; an unknown answer is InDoubt. A
        method of a kind its gateway does not charge is declined hard without a call."""
        gateway = self._gateways[claimed.gateway]
        kinds = self._kinds.get(claimed.gateway)
        if kinds is not None and claimed.method_kind not in kinds:
            # A token filed under the wrong kind (the API refuses to store one; an older row
            # or another writer may hold one): never sent, and the method is disabled, as an
            # adapter answers a token it cannot use.
            return Declined(
                kind=DeclineKind.HARD,
                code=METHOD_KIND_MISMATCH,
                message=f"gateway {claimed.gateway} does not charge {claimed.method_kind} methods",
            )
        request = ChargeRequest(
            idempotency_key=claimed.idempotency_key,
            customer_id=claimed.customer_id,
            amount_cents=claimed.amount_cents,
            token=claimed.token,
            method_kind=claimed.method_kind,
            description=(
                f"Lease {claimed.lease_id} payment {claimed.payment_id}"
                if claimed.payment_id is not None
                else f"Lease {claimed.lease_id} installment {claimed.installment_id}"
            ),
            metadata=_metadata(claimed),
            # A re-send repeats the date of the first send (DESIGN.md: re-sends are identical).
            effective_on=claimed.effective_on or claimed.as_of,
        )
        limiter = self._limiters.get(claimed.gateway)
        if limiter is not None:
            await limiter.acquire()
        CHARGES_IN_FLIGHT.inc()
        try:
            answer = await self._ask(claimed, "charge", gateway.charge(request))
        finally:
            CHARGES_IN_FLIGHT.dec()
        assert answer is not None  # a charge always answers
        return answer

    def gateway_of(self, claimed: ClaimedCharge) -> Gateway:
        """The adapter that charges this attempt."""
        return self._gateways[claimed.gateway]

    async def lookup(self, claimed: ClaimedCharge) -> Outcome | None:
        """Ask the gateway what became of the attempt's key; InDoubt when it cannot say."""
        gateway = self._gateways[claimed.gateway]
        return await self._ask(claimed, "lookup", gateway.lookup(claimed.idempotency_key))

    async def _ask(
        self, claimed: ClaimedCharge, operation: str, call: Awaitable[Outcome | None]
    ) -> Outcome | None:
        """Await one gateway call under the timeout; what it cannot answer is InDoubt."""
        started = time.perf_counter()
        try:
            # An anyio scope, not asyncio.timeout (which costs less): a native cancellation
            # would break through the shields below it, such as the sandbox's group write
            # that answers every caller in its batch. A plain scope with a deadline, not
            # fail_after: the same scope without its context-manager wrapper, a third less
            # CPU, and every charge runs under one.
            with anyio.CancelScope(deadline=anyio.current_time() + self._timeout_s):
                return await call
            # Reached only when the deadline cancelled the call; a cancellation from outside
            # the scope goes on through it.
            return InDoubt(reason=_TIMEOUT_REASON[operation])
        except TimeoutError:
            # The adapter's own timeout (an HTTP client's): as unknown as ours.
            return InDoubt(reason=_TIMEOUT_REASON[operation])
        except Exception as exc:
            # The request may have reached the gateway: unknown, to be looked up, not declined.
            log.exception(
                "gateway_adapter_error",
                operation=operation,
                attempt_id=claimed.attempt_id,
                gateway=claimed.gateway,
                error=describe_failure(exc),
            )
            return InDoubt(reason=_ERROR_REASON[operation])
        finally:
            _latency(claimed.gateway, operation).observe(time.perf_counter() - started)


# A metric's labelled child is looked up (under a lock) at each .labels() call; a pass counts
# every charge, so each child is looked up once and kept.
@functools.cache
def _latency(gateway: str, operation: str) -> Histogram:
    return GATEWAY_LATENCY.labels(gateway=gateway, operation=operation)


@functools.cache
def _charges(gateway: str, method_kind: str, outcome: str) -> Counter:
    return CHARGES.labels(gateway=gateway, method_kind=method_kind, outcome=outcome)


@functools.cache
def _charged_cents(gateway: str, method_kind: str) -> Counter:
    return CHARGED_CENTS.labels(gateway=gateway, method_kind=method_kind)


def count_charge(claimed: ClaimedCharge, status: AttemptStatus) -> None:
    """Count one recorded answer on the dashboards' counters."""
    kind = claimed.method_kind.value
    _charges(claimed.gateway, kind, status.value).inc()
    if status is AttemptStatus.SUCCEEDED:
        _charged_cents(claimed.gateway, kind).inc(claimed.amount_cents)


def count_resolution(claimed: ClaimedCharge, status: AttemptStatus) -> None:
    """Count what a lookup found of an attempt whose first answer (in doubt) was counted
    already: collector_charges_total counts each attempt's first answer once, and an attempt
    still in doubt is not counted again on every pass that asks."""
    if status is AttemptStatus.IN_DOUBT:
        return
    kind = claimed.method_kind.value
    IN_DOUBT_RESOLVED.labels(gateway=claimed.gateway, method_kind=kind, outcome=status.value).inc()
    if status is AttemptStatus.SUCCEEDED:
        _charged_cents(claimed.gateway, kind).inc(claimed.amount_cents)


@dataclass(frozen=True, slots=True)
class NotTaken:
    """The answer of a lookup that found no charge under an in-doubt attempt's key."""


Answer = Outcome | NotTaken | Refused
"""What became of a charge: the gateway's answer, a lookup that found nothing, or the
eligibility check's refusal (nothing sent)."""


async def decide_answers(
    db: Executor,
    answers: Sequence[tuple[ClaimedCharge, Answer]],
    *,
    as_of: date,
    retry_days: Sequence[int],
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
) -> list[tuple[ClaimedCharge, Decision]]:
    """The policy's decision for each answer; card soft declines are checked against the
    networks' 30-day caps, per card instrument, with one query for the whole batch."""
    soft_cards = [
        claimed.instrument_key
        for claimed, answer in answers
        if claimed.method_kind is MethodKind.CARD
        and isinstance(answer, Declined)
        and answer.kind is DeclineKind.SOFT
    ]
    recorded = await card_declines_30d(db, soft_cards, as_of=as_of)
    in_batch: dict[str, int] = {}
    decisions = []
    for claimed, answer in answers:
        if isinstance(answer, NotTaken):
            decision = decide_not_taken(
                attempt_no=claimed.attempt_no, as_of=as_of, retry_days=retry_days
            )
        elif isinstance(answer, Refused):
            decision = decide_refused(answer.reason, answer.retry_on)
        else:
            card = None
            if claimed.method_kind is MethodKind.CARD and isinstance(answer, Declined):
                key = claimed.instrument_key
                in_batch[key] = in_batch.get(key, 0) + 1
                card = CardHistory(
                    brand=claimed.brand, declines_30d=recorded.get(key, 0) + in_batch[key]
                )
            decision = decide(
                answer,
                amount_cents=claimed.amount_cents,
                attempt_no=claimed.attempt_no,
                as_of=as_of,
                retry_days=retry_days,
                card=card,
                card_rules=card_rules,
            )
        decisions.append((claimed, decision))
    return decisions


def ending(claimed: ClaimedCharge, decision: Decision) -> money.Ending:
    """What a recorded decision does to the attempt's money. A batch attempt's release sets
    the installment's plan (the retry date, or none); a manual payment's leaves the plan the
    batch had."""
    kind = ending_of(decision.attempt_status)
    return money.Ending(
        attempt_id=claimed.attempt_id,
        kind=kind,
        sets_plan=kind is MovementKind.RELEASED and claimed.payment_id is None,
        retry_on=decision.next_attempt_on,
        reason=decision.code,
    )


async def record_decisions(
    db: Executor,
    batch: Sequence[tuple[ClaimedCharge, Decision]],
    *,
    as_of: date,
    source: str,
) -> set[int]:
    """Store batch attempts' decisions and apply their money, one transaction for the batch;
    a row the database refuses is set aside and the others are recorded. Returns the attempt
    ids that changed."""
    changed: set[int] = set()

    async def apply(conn: Executor, items: Sequence[tuple[ClaimedCharge, Decision]]) -> None:
        ids = await record_outcomes(
            conn,
            [
                (claimed.attempt_id, claimed.customer_id, d, ending(claimed, d))
                for claimed, d in items
            ],
            as_of=as_of,
            source=source,
        )
        changed.update(ids)

    async def set_apart(
        conn: Executor, item: tuple[ClaimedCharge, Decision], exc: BaseException
    ) -> None:
        claimed, decision = item
        await set_aside(
            conn,
            subject="attempt",
            subject_id=claimed.attempt_id,
            customer_id=claimed.customer_id,
            reason="record_refused_by_database",
            detail={
                "sqlstate": getattr(exc, "sqlstate", None),
                "constraint": getattr(exc, "constraint_name", None),
                "outcome": decision.attempt_status.value,
                "installment_id": claimed.installment_id,
                "payment_id": claimed.payment_id,
            },
        )

    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            await apply_isolated(conn, batch, apply, set_apart)
    else:
        await apply_isolated(db, batch, apply, set_apart)
    return changed


async def send_soon(stream: MemoryObjectSendStream[T], item: T) -> None:
    """Send ``item`` at once when the stream has room, else wait for room.

    A stream's send() yields to the event loop before it looks; a pass sends every claim and
    every answer through one, and its process is the pass's bottleneck."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def _gather(
    results: MemoryObjectReceiveStream[tuple[ClaimedCharge, Answer]],
    batch: list[tuple[ClaimedCharge, Answer]],
    size: int,
) -> None:
    """Add to ``batch`` what is ready, then what arrives within the linger, up to ``size``.

    What is ready is taken without a trip through the event loop per answer (a stream's
    receive() yields before it looks); the recorder waits only when nothing is."""
    deadline = anyio.current_time() + RECORD_LINGER_S
    while len(batch) < size:
        try:
            batch.append(results.receive_nowait())
            continue
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            return
        with anyio.move_on_after(deadline - anyio.current_time()) as waited:
            try:
                batch.append(await results.receive())
            except anyio.EndOfStream:
                return
        if waited.cancelled_caught:
            return


class Recorder:
    """Records gateway answers in batches, as the policy decides, and keeps the pass's counts."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        counts: PassCounts,
        *,
        as_of: date,
        retry_days: Sequence[int],
        batch_size: int,
        progress: Callable[[int], None] | None = None,
        card_rules: CardRetryRules = DEFAULT_CARD_RULES,
        source: str = "batch",
    ) -> None:
        self._card_rules = card_rules
        self._source = source
        self._pool = pool
        self._counts = counts
        self.as_of = as_of
        self._retry_days = retry_days
        self._batch_size = batch_size
        self._progress = progress
        # Attempts whose first answer (in doubt) an earlier pass already counted: a lookup's
        # answer is their resolution, not a second answer.
        self._answered_before: set[int] = set()

    def answered_before(self, attempt_ids: Iterable[int]) -> None:
        """Note attempts already answered (in doubt) and counted by an earlier pass."""
        self._answered_before.update(attempt_ids)

    async def decide(
        self, answers: Sequence[tuple[ClaimedCharge, Answer]], *, db: Executor | None = None
    ) -> list[tuple[ClaimedCharge, Decision]]:
        """The policy's decisions for a batch of answers."""
        return await decide_answers(
            db or self._pool,
            answers,
            as_of=self.as_of,
            retry_days=self._retry_days,
            card_rules=self._card_rules,
        )

    async def drain(self, results: MemoryObjectReceiveStream[tuple[ClaimedCharge, Answer]]) -> None:
        """Record everything sent on ``results``, grouping what is ready into one statement."""
        async with results, self._pool.acquire() as conn:
            while True:
                try:
                    batch = [await results.receive()]
                except anyio.EndOfStream:
                    return
                await _gather(results, batch, self._batch_size)
                await self.record_answers(batch, db=conn)

    async def record_answers(
        self, batch: Sequence[tuple[ClaimedCharge, Answer]], *, db: Executor | None = None
    ) -> None:
        """Decide and record one batch of answers; shielded, so cancellation waits for it."""
        with anyio.CancelScope(shield=True), anyio.fail_after(RECORD_SHIELD_S):
            await self.record(await self.decide(batch, db=db), db=db)

    async def record(
        self, batch: Sequence[tuple[ClaimedCharge, Decision]], *, db: Executor | None = None
    ) -> None:
        """Record one batch; shielded, so cancellation waits for the commit."""
        with anyio.CancelScope(shield=True), anyio.fail_after(RECORD_SHIELD_S):
            changed = await record_decisions(
                db or self._pool, batch, as_of=self.as_of, source=self._source
            )
        counts = self._counts
        for claimed, d in batch:
            if claimed.attempt_id not in changed:
                continue
            status = d.attempt_status
            if claimed.attempt_id in self._answered_before:
                count_resolution(claimed, status)
            else:
                count_charge(claimed, status)
            if status is AttemptStatus.SUCCEEDED:
                counts.succeeded += 1
                counts.charged_cents += claimed.amount_cents
                continue
            if status is AttemptStatus.PROCESSING:
                counts.processing += 1
                counts.processing_cents += claimed.amount_cents
                continue
            if status is AttemptStatus.DECLINED:
                counts.declined += 1
            elif status is AttemptStatus.IN_DOUBT:
                counts.in_doubt += 1
            elif status is AttemptStatus.REFUSED:
                counts.refused += 1
            else:
                counts.failed += 1
            # Everything an operator needs to act on it without the database: which charge
            # (the key to search the gateway by), which try, on what, and what the network
            # said (its message is masked as the answer was built).
            log.warning(
                "charge_failed",
                attempt_id=claimed.attempt_id,
                idempotency_key=claimed.idempotency_key,
                attempt_no=claimed.attempt_no,
                installment_id=claimed.installment_id,
                lease_id=claimed.lease_id,
                customer_id=claimed.customer_id,
                payment_method_id=claimed.payment_method_id,
                method_kind=claimed.method_kind.value,
                source=claimed.source.value,
                gateway=claimed.gateway,
                outcome=status.value,
                decline_code=d.code,
                decline_message=d.message,
                network_advice=d.network_advice,
                amount_cents=claimed.amount_cents,
                next_attempt_on=d.next_attempt_on.isoformat() if d.next_attempt_on else None,
                method_disabled=d.disable_method,
            )
        if self._progress is not None:
            self._progress(len(batch))
