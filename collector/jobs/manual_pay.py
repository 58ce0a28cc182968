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
from datetime import date, datetime
from typing import Any

import anyio
import asyncpg

from collector.db.attempts import held_key
from collector.db.attention import is_row_error, set_aside
from collector.db.payments import (
    ClaimedPayment,
    Earlier,
    PaymentOutcome,
    PaymentRequest,
    Present,
    record_payment_outcome,
    refuse_payment,
    response_json,
    start_payment,
)
from collector.db.pool import Executor
from collector.domain import AttemptStatus, ClaimedCharge
from collector.exceptions import Conflict, TryAgain
from collector.jobs.charging import (
    RECORD_SHIELD_S,
    Charger,
    count_charge,
    count_resolution,
    decide_answers,
    ending,
)
from collector.jobs.presentment import screen
from collector.logs import get_logger
from collector.policy import DEFAULT_CARD_RULES, CardRetryRules, Decision

log = get_logger()

_PAYMENT_STATUS = {
    AttemptStatus.SUCCEEDED: "succeeded",
    AttemptStatus.PROCESSING: "processing",
    AttemptStatus.DECLINED: "declined",
    AttemptStatus.FAILED: "failed",
    AttemptStatus.IN_DOUBT: "in_doubt",
    AttemptStatus.REFUSED: "refused",
}
# Where a payment stands once its answer is known: a repeat of its key replays that.
_FINAL = frozenset({"succeeded", "processing", "declined", "failed", "refused", "returned"})

HELD_KEY_TRIES = 3
"""Payment ids a manual payment tries when the idempotency key derived from one
(``collector-pay-<id>``) is held by an attempt of another customer; then the portal is told
to try again."""
HELD_KEY_RETRY_AFTER_S = 1


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
        network_advice=decision.network_advice,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Shown:
    """What an answer to the portal shows of a payment."""

    payment_id: int
    lease_id: int
    payment_method_id: int
    amount_cents: int
    allocations: Sequence[tuple[int, int]]
    created_at: datetime
    payoff: bool = False


def _answer(shown: _Shown, payment_status: str, code: str | None) -> PaymentAnswer:
    """The portal's answer for a payment in this state."""
    if payment_status in ("declined", "failed"):
        return PaymentAnswer(
            status_code=402,
            body={"detail": f"the payment was declined ({code})", "code": code},
        )
    if payment_status == "refused":
        return PaymentAnswer(
            status_code=422,
            body={
                "detail": f"this payment may not be presented to this method now ({code})",
                "code": code,
            },
        )
    body = response_json(
        {
            "payment_id": shown.payment_id,
            "lease_id": shown.lease_id,
            "payment_method_id": shown.payment_method_id,
            "amount_cents": shown.amount_cents,
            "status": payment_status,
            "allocations": [
                {"installment_id": iid, "amount_cents": cents} for iid, cents in shown.allocations
            ],
            "created_at": shown.created_at.isoformat(),
            # Only a payoff says so: every other answer keeps the shape it had.
            **({"payoff": True} if shown.payoff else {}),
        }
    )
    # In doubt (or not answered yet): accepted, not yet known; reconciliation settles it by
    # looking the key up.
    pending = payment_status in ("in_doubt", "pending")
    return PaymentAnswer(status_code=202 if pending else 201, body=body)


def replay(earlier: Earlier, *, lease_id: int) -> PaymentAnswer:
    """The answer to a repeat of an Idempotency-Key: the first answer while it still holds;
    once an unknown answer (202, or none: the request died after its claim) has been resolved,
    the final one. Raises Conflict while the payment is still being charged."""
    final = earlier.payment_status in _FINAL
    answered = earlier.status_code is not None and earlier.body is not None
    if answered and (earlier.status_code != 202 or not final):
        assert earlier.status_code is not None and earlier.body is not None
        return PaymentAnswer(status_code=earlier.status_code, body=earlier.body)
    if not final:
        raise Conflict("a payment with this Idempotency-Key is still being processed")
    shown = _Shown(
        payment_id=earlier.payment_id,
        lease_id=lease_id,
        payment_method_id=earlier.payment_method_id,
        amount_cents=earlier.amount_cents,
        allocations=earlier.allocations,
        created_at=earlier.created_at,
        payoff=earlier.payoff,
    )
    return _answer(shown, earlier.payment_status, earlier.outcome_code)


def _shown(claimed: ClaimedPayment, *, payoff: bool) -> _Shown:
    return _Shown(
        payoff=payoff,
        payment_id=claimed.payment_id,
        lease_id=claimed.charge.lease_id,
        payment_method_id=claimed.charge.payment_method_id,
        amount_cents=claimed.charge.amount_cents,
        allocations=claimed.allocations,
        created_at=claimed.created_at,
    )


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

    async def present_payment(
        db: Executor, charge: ClaimedCharge
    ) -> tuple[ClaimedCharge, str | None]:
        # The same eligibility check as the batch's, in the claim's transaction; a refusal is
        # stored with the payment, so a repeat of the key replays it.
        to_send, refused = await screen(db, [charge], as_of=request.as_of, card_rules=card_rules)
        if not refused:
            return to_send[0], None
        reason = refused[0][1].reason
        answer = _answer(
            _Shown(
                payment_id=charge.payment_id or 0,
                lease_id=charge.lease_id,
                payment_method_id=charge.payment_method_id,
                amount_cents=charge.amount_cents,
                allocations=charge.presents,
                created_at=datetime.min,
                payoff=request.payoff,
            ),
            "refused",
            reason,
        )
        assert charge.payment_id is not None
        await refuse_payment(
            db,
            customer_id=charge.customer_id,
            payment_id=charge.payment_id,
            status_code=answer.status_code,
            body=answer.body,
        )
        return charge, reason

    claimed = await _start_past_held_keys(pool, request, present_payment)
    if isinstance(claimed, Earlier):
        return replay(claimed, lease_id=request.lease_id)
    if claimed.refused is not None:
        log.info(
            "manual_payment",
            payment_id=claimed.payment_id,
            lease_id=request.lease_id,
            attempt_id=claimed.charge.attempt_id,
            gateway=claimed.charge.gateway,
            outcome="refused",
            decline_code=claimed.refused,
            amount_cents=claimed.charge.amount_cents,
        )
        return _answer(_shown(claimed, payoff=request.payoff), "refused", claimed.refused)
    outcome = await charger.charge(claimed.charge)
    [(_, decision)] = await decide_answers(
        pool,
        [(claimed.charge, outcome)],
        as_of=request.as_of,
        retry_days=retry_days,
        card_rules=card_rules,
    )
    answer = _answer(
        _shown(claimed, payoff=request.payoff),
        _PAYMENT_STATUS[decision.attempt_status],
        decision.code,
    )
    # Shielded: a client that hangs up must not lose an answer the gateway already gave.
    with anyio.CancelScope(shield=True), anyio.fail_after(RECORD_SHIELD_S):
        if await record_payment_answer(
            pool, claimed.charge, decision, as_of=request.as_of, answer=answer
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


async def _start_past_held_keys(
    pool: asyncpg.Pool, request: PaymentRequest, present: Present
) -> ClaimedPayment | Earlier:
    """start_payment, past keys held elsewhere: a key another customer's attempt holds (one
    carried over from an earlier system, or a restored database whose sequence went back)
    refuses the claim before anything is sent. Its transaction rolled back, nothing was
    recorded; the held key is set aside for an operator (counted, alerted, logged), and the
    next try takes a new payment id, so a new key. Raises TryAgain when every try met one."""
    for _ in range(HELD_KEY_TRIES):
        try:
            return await start_payment(pool, request, present=present)
        except asyncpg.UniqueViolationError as exc:
            key = held_key(exc)
            if key is None:
                raise
            await set_aside(
                pool,
                subject="attempt",
                subject_id=key or "unnamed",
                reason="manual_pay_key_held",
                detail={"lease_id": request.lease_id, "constraint": exc.constraint_name},
            )
    raise TryAgain(
        "the payment could not be started and nothing was charged; try again shortly",
        retry_after_s=HELD_KEY_RETRY_AFTER_S,
    )


async def record_payment_answer(
    pool: asyncpg.Pool,
    charge: ClaimedCharge,
    decision: Decision,
    *,
    as_of: date,
    answer: PaymentAnswer | None = None,
    source: str = "manual",
) -> bool:
    """Store a manual payment's answer and apply its money in one statement; False when it
    was already resolved. A row the database refuses is set aside (the attempt stays
    unresolved, for reconciliation) rather than lost in an error."""
    assert charge.payment_id is not None
    kind = ending(charge, decision).kind
    async with pool.acquire() as conn:
        try:
            return await record_payment_outcome(
                conn,
                customer_id=charge.customer_id,
                payment_id=charge.payment_id,
                attempt_id=charge.attempt_id,
                outcome=payment_outcome(decision, answer=answer),
                money_kind=kind.value if kind is not None else None,
                as_of=as_of,
                source=source,
            )
        except asyncpg.PostgresError as exc:
            if not is_row_error(exc):
                raise
            await set_aside(
                conn,
                subject="payment",
                subject_id=charge.payment_id,
                customer_id=charge.customer_id,
                reason="record_refused_by_database",
                detail={"sqlstate": exc.sqlstate, "outcome": decision.attempt_status.value},
            )
            return False


async def record_reconciled_payment(
    pool: asyncpg.Pool,
    charge: ClaimedCharge,
    decision: Decision,
    *,
    as_of: date,
    answered_before: bool,
) -> bool:
    """Apply a reconciled answer to a manual payment (its first reply to the portal stays,
    and a repeat of its key replays the final state once it is known). ``answered_before``:
    its first answer (in doubt) was counted already, so this one counts as a resolution."""
    changed = await record_payment_answer(pool, charge, decision, as_of=as_of, source="reconcile")
    if changed:
        if answered_before:
            count_resolution(charge, decision.attempt_status)
        else:
            count_charge(charge, decision.attempt_status)
    return changed
