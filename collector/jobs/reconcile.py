"""Reconciliation: resolve attempts whose outcome the ledger does not know, without ever
charging under a new key.

- ``pending`` attempts of a pass that died (its liveness lock is free) or whose claim deadline
  passed: ask the gateway by key; if it has nothing, the request never landed, so send it
  again **with the same key** (the gateway deduplicates it).
- ``in_doubt`` attempts (timeout, 5xx): ask the gateway by key; if it has nothing, the charge
  was not taken and the installment becomes overdue with a retry date. Never re-sent: a key
  the gateway no longer remembers would charge anew.

An attempt the gateway still cannot speak for stays in doubt, visible, until it can: passing
time never turns "unknown" into "failed".
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import asyncpg

from collector.db.attempts import UnresolvedAttempt, claim_unresolved
from collector.domain import AttemptStatus, ClaimedCharge
from collector.gateways.base import InDoubt
from collector.jobs.charging import Charger, Recorder
from collector.jobs.manual_pay import record_reconciled_payment
from collector.policy import Decision


async def reconcile(
    pool: asyncpg.Pool,
    charger: Charger,
    recorder: Recorder,
    *,
    gateways: Sequence[str],
    run_id: int,
    batch_size: int,
    concurrency: int,
    deadline_s: int,
) -> int:
    """Take over and resolve every unresolved attempt once; return how many were taken."""
    taken = 0
    after_id = 0
    limiter = anyio.CapacityLimiter(concurrency)
    while True:
        batch = await claim_unresolved(
            pool,
            after_id=after_id,
            limit=batch_size,
            gateways=gateways,
            run_id=run_id,
            deadline_s=deadline_s,
        )
        if not batch:
            return taken
        taken += len(batch)
        after_id = batch[-1].charge.attempt_id
        results: list[tuple[ClaimedCharge, Decision]] = []
        async with anyio.create_task_group() as tg:
            for item in batch:
                tg.start_soon(_resolve_into, results, item, charger, recorder, limiter)
        await recorder.record([(c, d) for c, d in results if c.payment_id is None])
        # Manual payments are few; each is applied to the installments it was allocated to.
        for charge, decision in results:
            if charge.payment_id is not None:
                with anyio.CancelScope(shield=True):
                    await record_reconciled_payment(pool, charge, decision)


async def _resolve_into(
    results: list[tuple[ClaimedCharge, Decision]],
    item: UnresolvedAttempt,
    charger: Charger,
    recorder: Recorder,
    limiter: anyio.CapacityLimiter,
) -> None:
    async with limiter:
        results.append((item.charge, await _resolve(item, charger, recorder)))


async def _resolve(item: UnresolvedAttempt, charger: Charger, recorder: Recorder) -> Decision:
    claimed = item.charge
    found = await charger.lookup(claimed)
    if found is not None and not isinstance(found, InDoubt):
        return recorder.decide(claimed, found)
    if found is None and item.status is AttemptStatus.PENDING:
        return recorder.decide(claimed, await charger.charge(claimed))
    if found is None:
        return recorder.decide_not_taken(claimed)
    return recorder.decide(claimed, found)
