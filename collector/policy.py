"""What happens after each gateway answer: pure functions, no I/O, ``as_of`` passed in.

The batch and reconciliation both turn an :data:`Outcome` into a :class:`Decision` here, so
the rules live in one place: paid on success, pending settlement while an ACH debit is in
flight, overdue with a retry date after a soft decline, overdue without automatic retry (and
the method disabled) after a hard decline, untouched while the outcome is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from collector.domain import AttemptStatus, InstallmentStatus
from collector.gateways.base import Declined, DeclineKind, InDoubt, Outcome, Processing, Succeeded

NOT_TAKEN_CODE = "not_taken"
"""Outcome code of an in-doubt attempt that the gateway, asked, has no record of."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The new state of an attempt, its installment and its payment method."""

    attempt_status: AttemptStatus
    installment_status: InstallmentStatus
    paid_cents: int  # added to the installment's paid_cents
    next_attempt_on: date | None
    disable_method: bool = False
    code: str | None = None
    message: str | None = None
    gateway_ref: str | None = None


def next_retry_on(*, as_of: date, attempt_no: int, retry_days: Sequence[int]) -> date | None:
    """The date of the next automatic attempt after soft failure number ``attempt_no``.

    ``retry_days[k]`` is the wait after the (k+1)-th attempt; past the end, no more retries.
    Retries are spread over days, never minutes: issuers and NACHA both penalize hammering.
    """
    if attempt_no < 1 or attempt_no > len(retry_days):
        return None
    return as_of + timedelta(days=retry_days[attempt_no - 1])


def decide(
    outcome: Outcome,
    *,
    amount_cents: int,
    attempt_no: int,
    as_of: date,
    retry_days: Sequence[int],
) -> Decision:
    """Map one gateway answer to the attempt's, the installment's and the method's new state."""
    match outcome:
        case Succeeded(gateway_ref=ref, code=code):
            return Decision(
                attempt_status=AttemptStatus.SUCCEEDED,
                installment_status=InstallmentStatus.PAID,
                paid_cents=amount_cents,
                next_attempt_on=None,
                code=code,
                gateway_ref=ref,
            )
        case Processing(gateway_ref=ref, code=code):
            return Decision(
                attempt_status=AttemptStatus.PROCESSING,
                installment_status=InstallmentStatus.PENDING_SETTLEMENT,
                paid_cents=0,
                next_attempt_on=None,
                code=code,
                gateway_ref=ref,
            )
        case Declined(kind=DeclineKind.HARD, code=code, message=message, gateway_ref=ref):
            # Never retry this method: it waits for the customer to set a new primary one.
            return Decision(
                attempt_status=AttemptStatus.DECLINED,
                installment_status=InstallmentStatus.OVERDUE,
                paid_cents=0,
                next_attempt_on=None,
                disable_method=True,
                code=code,
                message=message,
                gateway_ref=ref,
            )
        case Declined(code=code, message=message, gateway_ref=ref):
            return Decision(
                attempt_status=AttemptStatus.DECLINED,
                installment_status=InstallmentStatus.OVERDUE,
                paid_cents=0,
                next_attempt_on=next_retry_on(
                    as_of=as_of, attempt_no=attempt_no, retry_days=retry_days
                ),
                code=code,
                message=message,
                gateway_ref=ref,
            )
        case InDoubt(reason=reason):
            # Unknown is never a decline: the installment stays claimed until a lookup answers.
            return Decision(
                attempt_status=AttemptStatus.IN_DOUBT,
                installment_status=InstallmentStatus.PROCESSING,
                paid_cents=0,
                next_attempt_on=None,
                code=reason,
            )
    raise AssertionError(f"unhandled outcome {outcome!r}")  # pragma: no cover


def decide_not_taken(*, attempt_no: int, as_of: date, retry_days: Sequence[int]) -> Decision:
    """An in-doubt attempt the gateway has no record of: nothing was charged, retry later."""
    return Decision(
        attempt_status=AttemptStatus.FAILED,
        installment_status=InstallmentStatus.OVERDUE,
        paid_cents=0,
        next_attempt_on=next_retry_on(as_of=as_of, attempt_no=attempt_no, retry_days=retry_days),
        code=NOT_TAKEN_CODE,
        message="the gateway has no charge under this idempotency key",
    )
