"""Manual pay: the portal's "pay what is overdue now", through the same attempt ledger and
gateway path as the batch.

Claim (one transaction: lock the lease, then its unpaid installments in due-date order; record
a pending payment, its allocations and its attempt; mark the installments processing so the
batch passes over them), charge outside any transaction, then record the answer together
with the reply to replay for the Idempotency-Key. An unknown answer leaves the attempt in
doubt for reconciliation, as in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg

from collector.db.payments import (
    ClaimedPayment,
    PaymentOutcome,
    PaymentRequest,
    Replay,
    record_payment_outcome,
    response_json,
    start_payment,
)
from collector.domain import AttemptStatus, ClaimedCharge
from collector.jobs.charging import RECORD_SHIELD_S, Charger, count_charge, decide_answers
from collector.logs import get_logger
from collector.policy import DEFAULT_CARD_RULES, CardRetryRules, Decision

log = get_logger()

_PAYMENT_STATUS = {
    AttemptStatus.SUCCEEDED: "succeeded",
    AttemptStatus.PROCESSING: "processing",
    AttemptStatus.DECLINED: "declined",
    AttemptStatus.FAILED: "failed",
    AttemptStatus.IN_DOUBT: "in_doubt",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentAnswer:
    """The HTTP answer to a manual-pay request."""

    status_code: int
    body: dict[str, Any]


def payment_outcome(decision: Decision, *, answer: PaymentAnswer | None = None) -> PaymentOutcome:
    """What to store for a manual payment given the policy's decision on its answer."""
    return PaymentOutcome(
        attempt_status=decision.attempt_status.value,
        payment_status=_PAYMENT_STATUS[decision.attempt_status],
        gateway_ref=decision.gateway_ref,
        code=decision.code,
        message=decision.message,
        disable_method=decision.disable_method,
        response_status=answer.status_code if answer else None,
        response_body=answer.body if answer else None,
    )


def _answer(claimed: ClaimedPayment, decision: Decision) -> PaymentAnswer:
    status = decision.attempt_status
    if status in (AttemptStatus.DECLINED, AttemptStatus.FAILED):
        return PaymentAnswer(
            status_code=402,
            body={
                "detail": f"the payment was declined ({decision.code})",
                "code": decision.code,
            },
        )
    body = response_json(
        {
            "payment_id": claimed.payment_id,
            "lease_id": claimed.charge.lease_id,
            "payment_method_id": claimed.charge.payment_method_id,
            "amount_cents": claimed.charge.amount_cents,
            "status": _PAYMENT_STATUS[status],
            "allocations": [
                {"installment_id": iid, "amount_cents": cents} for iid, cents in claimed.allocations
            ],
            "created_at": claimed.created_at.isoformat(),
        }
    )
    # In doubt: accepted, not yet known; reconciliation settles it by looking the key up.
    return PaymentAnswer(status_code=202 if status is AttemptStatus.IN_DOUBT else 201, body=body)


async def pay_now(
    pool: asyncpg.Pool,
    charger: Charger,
    request: PaymentRequest,
    *,
    retry_days: Sequence[int],
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
) -> PaymentAnswer:
    """Charge a manual payment once per Idempotency-Key and answer as the API will.

    Raises what ``start_payment`` raises; never charges when it raises.
    """
    claimed = await start_payment(pool, request)
    if isinstance(claimed, Replay):
        return PaymentAnswer(status_code=claimed.status_code, body=claimed.body)
    outcome = await charger.charge(claimed.charge)
    [(_, decision)] = await decide_answers(
        pool,
        [(claimed.charge, outcome)],
        as_of=request.as_of,
        retry_days=retry_days,
        card_rules=card_rules,
    )
    answer = _answer(claimed, decision)
    # Shielded: a client that hangs up must not lose an answer the gateway already gave.
    with anyio.CancelScope(shield=True), anyio.fail_after(RECORD_SHIELD_S):
        if await record_payment_outcome(
            pool,
            payment_id=claimed.payment_id,
            attempt_id=claimed.charge.attempt_id,
            outcome=payment_outcome(decision, answer=answer),
        ):
            count_charge(claimed.charge, decision.attempt_status)
    log.info(
        "manual_payment",
        payment_id=claimed.payment_id,
        lease_id=request.lease_id,
        attempt_id=claimed.charge.attempt_id,
        gateway=claimed.charge.gateway,
        outcome=decision.attempt_status.value,
        decline_code=decision.code if answer.status_code == 402 else None,
        amount_cents=claimed.charge.amount_cents,
    )
    return answer


async def record_reconciled_payment(
    pool: asyncpg.Pool, charge: ClaimedCharge, decision: Decision
) -> bool:
    """Apply a reconciled answer to a manual payment (its first reply to the portal stays)."""
    assert charge.payment_id is not None
    changed = await record_payment_outcome(
        pool,
        payment_id=charge.payment_id,
        attempt_id=charge.attempt_id,
        outcome=payment_outcome(decision),
    )
    if changed:
        count_charge(charge, decision.attempt_status)
    return changed
