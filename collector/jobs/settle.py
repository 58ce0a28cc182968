"""ACH settlement: follow each bank debit until it settles or comes back.

A debit the gateway accepted is ``processing`` (its installment ``pending_settlement``: neither
paid nor overdue). The settlement job, run by every pass and by the daemon, asks each gateway
that can say (a :class:`SettlementSource`) where its debits stand; webhooks and return files
report the same facts by key. All three apply them here, each fact once:

- settled: the attempt succeeds and the installment is paid;
- returned: the return is recorded once, money already counted paid is reversed, the
  installment is overdue again, and the policy decides on reinitiation and on the method
  (NSF: at most twice within 180 days; dead account or revoked authorization: disabled).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial

import anyio
import asyncpg
from asyncpg.pool import PoolConnectionProxy

from collector.db import money
from collector.db.attention import apply_isolated, is_row_error, set_aside
from collector.db.outbox import write_money_events
from collector.db.pool import Connection, Executor
from collector.db.settlement import (
    DebitInFlight,
    attempt_by_key,
    debits_in_flight,
    decline_processing,
    record_return,
    return_rates,
    settle_attempts,
)
from collector.domain import MovementKind
from collector.failures import describe_failure
from collector.gateways.base import (
    Declined,
    Gateway,
    Returned,
    Settlement,
    SettlementSource,
    Succeeded,
    settlement_poll_after,
)
from collector.logs import get_logger
from collector.metrics import (
    ACH_RETURN_RATE,
    ACH_RETURNED,
    ACH_RETURNED_CENTS,
    ACH_SETTLED,
    ACH_SETTLED_CENTS,
    SETTLEMENT_FAILURES,
)
from collector.policy import decide, decide_return

log = get_logger()


@dataclass(slots=True)
class SettleCounts:
    """What one settlement run did."""

    settled: int = 0
    returned: int = 0
    processing: int = 0
    declined: int = 0


async def apply_settlements(
    pool: asyncpg.Pool,
    items: Sequence[tuple[DebitInFlight, Settlement | None]],
    *,
    as_of: date,
    retry_days: Sequence[int],
    source: str,
) -> SettleCounts:
    """Apply what became of these debits, each fact once; return what changed. A fact the
    database refuses is set aside for an operator; the others are applied."""
    counts = SettleCounts()
    settled = [debit for debit, fact in items if isinstance(fact, Succeeded)]
    with anyio.CancelScope(shield=True):
        async with pool.acquire() as conn:

            async def settle_batch(db: Executor, debits: Sequence[DebitInFlight]) -> None:
                ids = set(await settle_attempts(db, debits, as_of=as_of, source=source))
                counts.settled += len(ids)
                for debit in debits:
                    if debit.attempt_id in ids:
                        ACH_SETTLED.labels(gateway=debit.gateway).inc()
                        ACH_SETTLED_CENTS.labels(gateway=debit.gateway).inc(debit.amount_cents)

            await apply_isolated(conn, settled, settle_batch, _set_aside_fact("settlement"))
            for debit, fact in items:
                if isinstance(fact, Returned):
                    counts.returned += await _isolated(
                        conn,
                        debit,
                        "return",
                        partial(
                            _apply_return,
                            debit=debit,
                            fact=fact,
                            as_of=as_of,
                            retry_days=retry_days,
                            source=source,
                        ),
                    )
                elif isinstance(fact, Declined):
                    counts.declined += await _isolated(
                        conn,
                        debit,
                        "settlement",
                        partial(
                            _apply_decline,
                            debit=debit,
                            fact=fact,
                            as_of=as_of,
                            retry_days=retry_days,
                            source=source,
                        ),
                    )
                elif not isinstance(fact, Succeeded):
                    counts.processing += 1
    return counts


def _set_aside_fact(
    subject: str,
) -> Callable[[Executor, DebitInFlight, BaseException], Awaitable[None]]:
    async def set_apart(db: Executor, debit: DebitInFlight, exc: BaseException) -> None:
        await set_aside(
            db,
            subject=subject,
            subject_id=debit.attempt_id,
            customer_id=debit.customer_id,
            reason="refused_by_database",
            detail={
                "sqlstate": getattr(exc, "sqlstate", None),
                "constraint": getattr(exc, "constraint_name", None),
                "gateway": debit.gateway,
            },
        )

    return set_apart


async def _isolated(
    conn: Connection | PoolConnectionProxy,
    debit: DebitInFlight,
    subject: str,
    apply: Callable[[Executor], Awaitable[bool]],
) -> bool:
    """Apply one fact in a transaction of its own; a fact the database refuses is set aside."""
    try:
        async with conn.transaction():
            return bool(await apply(conn))
    except asyncpg.PostgresError as exc:
        if not is_row_error(exc):
            raise
        async with conn.transaction():
            await _set_aside_fact(subject)(conn, debit, exc)
        return False


def _retry_with_new_primary(debit: DebitInFlight, planned: date | None, as_of: date) -> date | None:
    """A new primary method chosen while the debit was in flight is used for what came back:
    the next day, when the rules left no automatic attempt on the returned one."""
    if planned is not None:
        return planned
    if debit.primary_method_id is not None and debit.primary_method_id != debit.payment_method_id:
        return as_of + timedelta(days=1)
    return None


async def _apply_return(
    db: Executor,
    *,
    debit: DebitInFlight,
    fact: Returned,
    as_of: date,
    retry_days: Sequence[int],
    source: str,
) -> bool:
    decision = decide_return(
        fact.code,
        nsf_returns_before=debit.nsf_returns,
        original_on=debit.original_on,
        as_of=as_of,
        retry_days=retry_days,
    )
    reversed_paid = await record_return(
        db,
        attempt_id=debit.attempt_id,
        customer_id=debit.customer_id,
        code=fact.code,
        category=decision.category,
        source=source,
        disable_method=decision.disable_method,
        as_of=as_of,
    )
    if reversed_paid is None:
        return False
    ACH_RETURNED.labels(gateway=debit.gateway).inc()
    ACH_RETURNED_CENTS.labels(gateway=debit.gateway).inc(debit.amount_cents)
    retry_on = _retry_with_new_primary(debit, decision.next_attempt_on, as_of)
    await money.follow(
        db,
        [
            money.Ending(
                attempt_id=debit.attempt_id,
                kind=MovementKind.REVERSED if reversed_paid else MovementKind.RETURNED,
                sets_plan=True,
                retry_on=retry_on,
                reason=fact.code,
            )
        ],
        as_of=as_of,
        source=source,
        customer_of={debit.attempt_id: debit.customer_id},
    )
    await write_money_events(db, [debit.attempt_id], customers=[debit.customer_id])
    log.warning(
        "debit_returned",
        attempt_id=debit.attempt_id,
        installment_id=debit.installment_id,
        payment_id=debit.payment_id,
        gateway=debit.gateway,
        return_code=fact.code,
        category=decision.category,
        amount_cents=debit.amount_cents,
        reversed_paid=reversed_paid,
        next_attempt_on=retry_on.isoformat() if retry_on else None,
        method_disabled=decision.disable_method,
        source=source,
    )
    return True


async def _apply_decline(
    db: Executor,
    *,
    debit: DebitInFlight,
    fact: Declined,
    as_of: date,
    retry_days: Sequence[int],
    source: str,
) -> bool:
    """A payment its gateway left processing failed: declined, as if answered at once."""
    decision = decide(
        fact,
        amount_cents=debit.amount_cents,
        attempt_no=debit.attempt_no,
        as_of=as_of,
        retry_days=retry_days,
    )
    if not await decline_processing(
        db,
        attempt_id=debit.attempt_id,
        customer_id=debit.customer_id,
        code=fact.code,
        message=fact.message,
        disable_method=decision.disable_method,
    ):
        return False
    await money.follow(
        db,
        [
            money.Ending(
                attempt_id=debit.attempt_id,
                kind=MovementKind.RELEASED,
                sets_plan=debit.payment_id is None,
                retry_on=decision.next_attempt_on,
                reason=fact.code,
            )
        ],
        as_of=as_of,
        source=source,
        customer_of={debit.attempt_id: debit.customer_id},
    )
    await write_money_events(db, [debit.attempt_id], customers=[debit.customer_id])
    return True


async def apply_by_key(
    pool: asyncpg.Pool,
    idempotency_key: str,
    fact: Settlement,
    *,
    as_of: date,
    retry_days: Sequence[int],
    source: str,
) -> SettleCounts:
    """Apply a fact reported by key (a webhook, a return file). A fact for no attempt of the
    ledger, or one that contradicts it (a return of a debit never taken), is set aside."""
    debit = await attempt_by_key(pool, idempotency_key)
    if debit is None:
        await set_aside(
            pool,
            subject="settlement",
            subject_id=idempotency_key,
            reason="unknown_attempt",
            detail={"source": source, "fact": type(fact).__name__},
        )
        return SettleCounts()
    if isinstance(fact, Returned) and debit.status not in ("processing", "succeeded", "returned"):
        await set_aside(
            pool,
            subject="return",
            subject_id=debit.attempt_id,
            customer_id=debit.customer_id,
            reason="return_contradicts_ledger",
            detail={"source": source, "status": debit.status, "return_code": fact.code},
        )
        return SettleCounts()
    return await apply_settlements(
        pool, [(debit, fact)], as_of=as_of, retry_days=retry_days, source=source
    )


async def settle(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    *,
    as_of: date,
    retry_days: Sequence[int],
    batch_size: int,
    concurrency: int,
) -> SettleCounts:
    """Ask every settling gateway about each debit in flight, once, and apply the answers."""
    sources: dict[str, SettlementSource] = {
        name: gateway for name, gateway in gateways.items() if isinstance(gateway, SettlementSource)
    }
    total = SettleCounts()
    after_id = 0
    limiter = anyio.CapacityLimiter(concurrency)
    for name in sources:
        # Each settling gateway's series exists from its first pass, at 0: the first failure
        # is then an increase that rate() and increase() can see.
        SETTLEMENT_FAILURES.labels(gateway=name)
        ACH_SETTLED.labels(gateway=name)
        ACH_SETTLED_CENTS.labels(gateway=name)
        ACH_RETURNED.labels(gateway=name)
        ACH_RETURNED_CENTS.labels(gateway=name)
    while sources:
        debits = await debits_in_flight(
            pool, after_id=after_id, gateways=list(sources), limit=batch_size
        )
        if not debits:
            break
        after_id = debits[-1].attempt_id
        facts: list[tuple[DebitInFlight, Settlement | None]] = []
        async with anyio.create_task_group() as tg:
            for debit in debits:
                source = sources[debit.gateway]
                if timedelta(seconds=debit.age_s) < settlement_poll_after(source):
                    continue  # its webhook will most likely tell first
                tg.start_soon(_ask, source, debit, as_of, limiter, facts)
        counts = await apply_settlements(
            pool, facts, as_of=as_of, retry_days=retry_days, source="poll"
        )
        total.settled += counts.settled
        total.returned += counts.returned
        total.processing += counts.processing
        total.declined += counts.declined
    await refresh_return_rates(pool)
    return total


async def _ask(
    source: SettlementSource,
    debit: DebitInFlight,
    as_of: date,
    limiter: anyio.CapacityLimiter,
    facts: list[tuple[DebitInFlight, Settlement | None]],
) -> None:
    async with limiter:
        try:
            fact = await source.settlement(debit.idempotency_key, as_of=as_of)
        except Exception as exc:
            # Unknown for now; the next run asks again. Never a return by default.
            SETTLEMENT_FAILURES.labels(gateway=debit.gateway).inc()
            log.exception(
                "settlement_lookup_failed",
                attempt_id=debit.attempt_id,
                gateway=debit.gateway,
                error=describe_failure(exc),
            )
            fact = None
        facts.append((debit, fact))


async def refresh_return_rates(pool: asyncpg.Pool) -> None:
    """Show the 60-day ACH return rates NACHA watches on the gauges."""
    rates = await return_rates(pool)
    debits = max(rates.debits, 1)
    ACH_RETURN_RATE.labels(category="unauthorized").set(rates.unauthorized / debits)
    ACH_RETURN_RATE.labels(category="administrative").set(rates.administrative / debits)
    ACH_RETURN_RATE.labels(category="overall").set(rates.returns / debits)
