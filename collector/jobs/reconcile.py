"""Reconciliation: resolve attempts whose outcome the ledger does not know, without ever
charging under a new key.

- ``pending`` attempts of a pass that died (its liveness lock is free) or whose claim deadline
  passed: ask the gateway by key; if it has nothing, the request never landed, so send it
  again **with the same key** (the gateway deduplicates it), exactly as first sent (amount,
  method, reinitiation label, effective date), once the eligibility check agrees that the
  money may still be presented today.
- ``in_doubt`` attempts (timeout, 5xx): ask the gateway by key; if it has nothing, the charge
  was not taken and the installment becomes overdue with a retry date. Never re-sent: a key
  the gateway no longer remembers would charge anew.

An attempt the gateway still cannot speak for stays in doubt, visible, until it can: passing
time never turns "unknown" into "failed".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import anyio
import asyncpg

from collector.db.attempts import UnresolvedAttempt, claim_unresolved, touch_sent
from collector.domain import AttemptStatus, ClaimedCharge
from collector.eligibility import Refused
from collector.gateways.base import InDoubt, key_retention, lookup_lag
from collector.jobs.charging import Answer, Charger, NotTaken, Recorder
from collector.jobs.manual_pay import record_reconciled_payment
from collector.jobs.presentment import judge
from collector.policy import DEFAULT_CARD_RULES, CardRetryRules


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
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
) -> int:
    """Take over and resolve every unresolved attempt once; return how many were taken."""
    taken = 0
    after_id = 0
    limiter = anyio.CapacityLimiter(concurrency)
    while True:
        claimed = await claim_unresolved(
            pool,
            after_id=after_id,
            limit=batch_size,
            gateways=gateways,
            run_id=run_id,
            deadline_s=deadline_s,
        )
        if claimed.scanned_to is None:
            return taken
        after_id = claimed.scanned_to
        batch = claimed.taken
        if not batch:
            continue  # every candidate was taken by another pass meanwhile
        taken += len(batch)
        in_doubt = {
            item.charge.attempt_id for item in batch if item.status is AttemptStatus.IN_DOUBT
        }
        recorder.answered_before(in_doubt)
        answers: list[tuple[ClaimedCharge, Answer]] = []
        async with anyio.create_task_group() as tg:
            for item in batch:
                tg.start_soon(
                    _resolve_into, answers, item, charger, limiter, pool, recorder.as_of, card_rules
                )
        with anyio.CancelScope(shield=True):
            await recorder.record_answers([(c, a) for c, a in answers if c.payment_id is None])
            # Manual payments are few; each is applied to the installments it covers.
            payments = await recorder.decide([(c, a) for c, a in answers if c.payment_id])
            for charge, decision in payments:
                await record_reconciled_payment(
                    pool,
                    charge,
                    decision,
                    as_of=recorder.as_of,
                    answered_before=charge.attempt_id in in_doubt,
                )


async def _resolve_into(
    answers: list[tuple[ClaimedCharge, Answer]],
    item: UnresolvedAttempt,
    charger: Charger,
    limiter: anyio.CapacityLimiter,
    pool: asyncpg.Pool,
    as_of: date,
    card_rules: CardRetryRules,
) -> None:
    async with limiter:
        answers.append((item.charge, await _resolve(item, charger, pool, as_of, card_rules)))


async def _resolve(
    item: UnresolvedAttempt,
    charger: Charger,
    pool: asyncpg.Pool,
    as_of: date,
    card_rules: CardRetryRules,
) -> Answer:
    # A re-send repeats the stored request: its effective date and reinitiation label are
    # those of the first send (ClaimedCharge carries them from the attempt row).
    claimed = item.charge
    found = await charger.lookup(claimed)
    if found is not None:
        return found  # an answer, or InDoubt when the gateway still cannot say
    gateway = charger.gateway_of(claimed)
    age = timedelta(seconds=item.age_s)  # since the last send of this key
    retention = key_retention(gateway)
    if item.status is AttemptStatus.PENDING and (retention is None or age < retention):
        # Never answered, and the gateway still knows the key: send it again under that key,
        # if the money may still be presented today. If the first request did land, the
        # gateway answers with it instead of charging anew.
        verdict = (await judge(pool, [claimed], as_of=as_of, card_rules=card_rules))[
            claimed.attempt_id
        ]
        if isinstance(verdict, Refused):
            return verdict
        await touch_sent(pool, claimed.attempt_id)
        return await charger.charge(claimed)
    if age < lookup_lag(gateway):
        # The gateway's search may not show a charge taken moments ago (Stripe's lags up to
        # an hour): "not found" is not an answer yet.
        return InDoubt(reason="lookup_lag")
    # In doubt and not found, or too old for the gateway to still know its key: re-sending
    # could charge anew, so it was not taken, and the policy retries under a new key.
    return NotTaken()
