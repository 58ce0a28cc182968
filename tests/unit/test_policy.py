from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from collector.domain import AttemptStatus, InstallmentStatus
from collector.gateways.base import Declined, DeclineKind, InDoubt, Processing, Succeeded
from collector.policy import decide, decide_not_taken, next_retry_on

AS_OF = date(2026, 11, 26)
RETRY_DAYS = (3, 5, 7)


def test_success_pays_the_installment_in_full() -> None:
    d = decide(
        Succeeded(gateway_ref="ch_1"),
        amount_cents=1234,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert (d.attempt_status, d.installment_status, d.paid_cents) == (
        AttemptStatus.SUCCEEDED,
        InstallmentStatus.PAID,
        1234,
    )
    assert d.gateway_ref == "ch_1" and d.next_attempt_on is None


def test_ach_processing_is_pending_settlement_not_paid() -> None:
    d = decide(
        Processing(gateway_ref="ach_1"),
        amount_cents=500,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d.installment_status is InstallmentStatus.PENDING_SETTLEMENT
    assert d.paid_cents == 0


def test_soft_decline_retries_after_the_configured_days() -> None:
    soft = Declined(kind=DeclineKind.SOFT, code="insufficient_funds")
    dates = [
        decide(
            soft, amount_cents=1, attempt_no=n, as_of=AS_OF, retry_days=RETRY_DAYS
        ).next_attempt_on
        for n in (1, 2, 3, 4)
    ]
    assert dates == [
        AS_OF + timedelta(days=3),
        AS_OF + timedelta(days=5),
        AS_OF + timedelta(days=7),
        None,
    ]


def test_hard_decline_disables_the_method_and_plans_no_retry() -> None:
    d = decide(
        Declined(kind=DeclineKind.HARD, code="stolen_card"),
        amount_cents=1,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d.disable_method and d.next_attempt_on is None
    assert d.installment_status is InstallmentStatus.OVERDUE
    assert d.code == "stolen_card"


def test_in_doubt_keeps_the_installment_claimed() -> None:
    d = decide(
        InDoubt(reason="timeout"), amount_cents=1, attempt_no=1, as_of=AS_OF, retry_days=RETRY_DAYS
    )
    assert (d.attempt_status, d.installment_status) == (
        AttemptStatus.IN_DOUBT,
        InstallmentStatus.PROCESSING,
    )
    assert not d.disable_method and d.paid_cents == 0


def test_not_taken_is_a_failure_with_a_retry() -> None:
    d = decide_not_taken(attempt_no=1, as_of=AS_OF, retry_days=RETRY_DAYS)
    assert d.attempt_status is AttemptStatus.FAILED
    assert d.next_attempt_on == AS_OF + timedelta(days=3)


outcomes = st.one_of(
    st.builds(Succeeded, gateway_ref=st.text(min_size=1, max_size=5)),
    st.builds(Processing, gateway_ref=st.text(min_size=1, max_size=5)),
    st.builds(Declined, kind=st.sampled_from(DeclineKind), code=st.text(max_size=5)),
    st.builds(InDoubt, reason=st.text(max_size=5)),
)


@given(
    outcome=outcomes,
    amount=st.integers(min_value=1, max_value=10**9),
    attempt_no=st.integers(min_value=1, max_value=50),
    retry_days=st.lists(st.integers(min_value=1, max_value=30), max_size=6),
)
def test_no_outcome_schedules_a_forbidden_retry(
    outcome: object, amount: int, attempt_no: int, retry_days: list[int]
) -> None:
    d = decide(
        outcome, amount_cents=amount, attempt_no=attempt_no, as_of=AS_OF, retry_days=retry_days
    )  # type: ignore[arg-type]
    if d.next_attempt_on is not None:
        # Only a soft decline retries, never on the same day, and never past the cap.
        assert isinstance(outcome, Declined) and outcome.kind is DeclineKind.SOFT
        assert d.next_attempt_on > AS_OF
        assert attempt_no <= len(retry_days)
    assert 0 <= d.paid_cents <= amount
    assert d.paid_cents in (0, amount)
    assert next_retry_on(as_of=AS_OF, attempt_no=0, retry_days=retry_days) is None
