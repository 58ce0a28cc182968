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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import anyio
import asyncpg

from collector.db.settlement import (
    DebitInFlight,
    attempt_by_key,
    debits_in_flight,
    record_return,
    return_rates,
    settle_installment_debits,
    settle_payment_debit,
)
from collector.gateways.base import (
    Gateway,
    Returned,
    Settlement,
    SettlementSource,
    Succeeded,
    settlement_poll_after,
)
from collector.logs import get_logger
from collector.metrics import ACH_RETURN_RATE
from collector.policy import decide_return

log = get_logger()


@dataclass(slots=True)
class SettleCounts:
    """What one settlement run did."""

    settled: int = 0
    returned: int = 0
    processing: int = 0


async def apply_settlements(
    pool: asyncpg.Pool,
    items: Sequence[tuple[DebitInFlight, Settlement | None]],
    *,
    as_of: date,
    retry_days: Sequence[int],
    source: str,
) -> SettleCounts:
    """Apply what became of these debits, each fact once; return what changed."""
    counts = SettleCounts()
    settled_batch = [
        debit.attempt_id
        for debit, fact in items
        if isinstance(fact, Succeeded) and debit.installment_id is not None
    ]
    with anyio.CancelScope(shield=True):
        counts.settled += await settle_installment_debits(pool, settled_batch)
        for debit, fact in items:
            if isinstance(fact, Succeeded) and debit.payment_id is not None:
                counts.settled += await settle_payment_debit(
                    pool, payment_id=debit.payment_id, attempt_id=debit.attempt_id
                )
            elif isinstance(fact, Returned):
                counts.returned += await _apply_return(
                    pool, debit, fact, as_of=as_of, retry_days=retry_days, source=source
                )
            elif fact is None or not isinstance(fact, Succeeded):
                counts.processing += 1
    return counts


async def _apply_return(
    pool: asyncpg.Pool,
    debit: DebitInFlight,
    fact: Returned,
    *,
    as_of: date,
    retry_days: Sequence[int],
    source: str,
) -> bool:
    decision = decide_return(
        fact.code,
        nsf_returns_before=debit.nsf_returns,
        original_on=debit.first_attempt_on,
        as_of=as_of,
        retry_days=retry_days,
    )
    applied = await record_return(
        pool,
        attempt_id=debit.attempt_id,
        code=fact.code,
        category=decision.category,
        source=source,
        next_attempt_on=decision.next_attempt_on,
        disable_method=decision.disable_method,
        as_of=as_of,
    )
    if applied:
        log.warning(
            "debit_returned",
            attempt_id=debit.attempt_id,
            installment_id=debit.installment_id,
            payment_id=debit.payment_id,
            gateway=debit.gateway,
            return_code=fact.code,
            category=decision.category,
            amount_cents=debit.amount_cents,
            reversed_paid=debit.status == "succeeded",
            next_attempt_on=decision.next_attempt_on.isoformat()
            if decision.next_attempt_on
            else None,
            method_disabled=decision.disable_method,
            source=source,
        )
    return applied


async def apply_by_key(
    pool: asyncpg.Pool,
    idempotency_key: str,
    fact: Settlement,
    *,
    as_of: date,
    retry_days: Sequence[int],
    source: str,
) -> SettleCounts:
    """Apply a fact reported by key (a webhook, a return file); unknown keys change nothing."""
    debit = await attempt_by_key(pool, idempotency_key)
    if debit is None:
        log.warning("settlement_for_unknown_attempt", source=source)
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
            log.exception(
                "settlement_lookup_failed",
                attempt_id=debit.attempt_id,
                gateway=debit.gateway,
                error=type(exc).__name__,
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
