from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.domain import AttemptStatus, MovementKind, ending_of
from collector.gateways.base import Declined, DeclineKind, InDoubt, Processing, Succeeded
from collector.policy import (
    NEEDS_CUSTOMER_CODES,
    NEVER_RETRY_ADVICE,
    CardHistory,
    CardRetryRules,
    decide,
    decide_not_taken,
    next_retry_on,
)

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
    assert d.attempt_status is AttemptStatus.SUCCEEDED
    assert ending_of(d.attempt_status) is MovementKind.SETTLED
    assert d.gateway_ref == "ch_1" and d.next_attempt_on is None


def test_ach_processing_is_pending_settlement_not_paid() -> None:
    d = decide(
        Processing(gateway_ref="ach_1"),
        amount_cents=500,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d.attempt_status is AttemptStatus.PROCESSING
    # Answered, still in flight: the journal marks it accepted and moves no money until it
    # settles or comes back.
    assert ending_of(d.attempt_status) is MovementKind.ACCEPTED and d.next_attempt_on is None


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
    assert ending_of(d.attempt_status) is MovementKind.RELEASED
    assert d.code == "stolen_card"


def test_in_doubt_keeps_the_installment_claimed() -> None:
    d = decide(
        InDoubt(reason="timeout"), amount_cents=1, attempt_no=1, as_of=AS_OF, retry_days=RETRY_DAYS
    )
    assert d.attempt_status is AttemptStatus.IN_DOUBT
    assert not d.disable_method and ending_of(d.attempt_status) is None


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
    # Money is taken only on success; anything but an answer leaves it in flight.
    taken = ending_of(d.attempt_status) is MovementKind.SETTLED
    assert taken == isinstance(outcome, Succeeded)
    assert next_retry_on(as_of=AS_OF, attempt_no=0, retry_days=retry_days) is None


def _soft(advice: str | None = None) -> Declined:
    return Declined(kind=DeclineKind.SOFT, code="do_not_honor", network_advice=advice)


@pytest.mark.parametrize("advice", ["03", "21", "do_not_try_again"])
def test_never_retry_advice_stops_retries_and_disables_the_card(advice: str) -> None:
    d = decide(_soft(advice), amount_cents=1, attempt_no=1, as_of=AS_OF, retry_days=RETRY_DAYS)
    assert d.next_attempt_on is None and d.disable_method


def test_authentication_required_waits_for_the_customer_without_disabling() -> None:
    d = decide(
        Declined(kind=DeclineKind.HARD, code="authentication_required"),
        amount_cents=1,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d.next_attempt_on is None and not d.disable_method


@pytest.mark.parametrize(
    ("brand", "cap"), [("Visa", 15), ("Mastercard", 35), ("Discover", 15), (None, 15)]
)
def test_a_card_at_its_network_cap_is_not_retried(brand: str | None, cap: int) -> None:
    below = CardHistory(brand=brand, declines_30d=cap - 1)
    at = CardHistory(brand=brand, declines_30d=cap)
    kwargs = {"amount_cents": 1, "attempt_no": 1, "as_of": AS_OF, "retry_days": RETRY_DAYS}
    assert decide(_soft(), card=below, **kwargs).next_attempt_on is not None  # type: ignore[arg-type]
    assert decide(_soft(), card=at, **kwargs).next_attempt_on is None  # type: ignore[arg-type]


card_answers = st.one_of(
    st.builds(Succeeded, gateway_ref=st.just("ch")),
    st.builds(
        Declined,
        kind=st.sampled_from(DeclineKind),
        code=st.sampled_from(["insufficient_funds", "stolen_card", "authentication_required", "x"]),
        network_advice=st.sampled_from(
            [None, "01", "03", "21", "do_not_try_again", "try_again_later"]
        ),
    ),
    st.builds(InDoubt, reason=st.just("timeout")),
)


@given(
    answers=st.lists(card_answers, min_size=1, max_size=60),
    brand=st.sampled_from(["Visa", "Mastercard", "Amex", None]),
    gaps=st.lists(st.integers(min_value=0, max_value=10), min_size=60, max_size=60),
)
def test_no_sequence_of_card_answers_schedules_a_forbidden_retry(
    answers: list[object], brand: str | None, gaps: list[int]
) -> None:
    """Drive one card through a history of answers, as the engine would, and check every
    scheduled retry against the rules: none after a never-retry answer or a hard decline,
    none same-day, none once the network's 30-day cap of declines is reached."""
    rules = CardRetryRules()
    declines: list[date] = []
    day = AS_OF
    blocked = False
    for attempt_no, (answer, gap) in enumerate(zip(answers, gaps, strict=False), start=1):
        day += timedelta(days=gap)
        if isinstance(answer, Declined):
            declines.append(day)
        recent = sum(1 for d in declines if (day - d).days < 30)
        card = CardHistory(brand=brand, declines_30d=recent)
        d = decide(
            answer,
            amount_cents=100,
            attempt_no=attempt_no,
            as_of=day,
            retry_days=[1, 2, 3] * 20,
            card=card,
        )  # type: ignore[arg-type]
        if isinstance(answer, Declined) and (
            answer.kind is DeclineKind.HARD
            or answer.network_advice in NEVER_RETRY_ADVICE
            or answer.code in NEEDS_CUSTOMER_CODES
        ):
            blocked = True
        if d.next_attempt_on is not None:
            assert not blocked, "a retry after an answer that forbids retries"
            assert isinstance(answer, Declined) and answer.kind is DeclineKind.SOFT
            assert d.next_attempt_on > day
            assert recent < rules.cap(brand)
        if isinstance(answer, Declined) and answer.kind is DeclineKind.HARD:
            assert d.disable_method or answer.code in NEEDS_CUSTOMER_CODES
        if blocked:
            break
