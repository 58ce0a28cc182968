from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.calendar import ach_effective_date, is_banking_day
from collector.domain import AttemptStatus, MovementKind, ending_of
from collector.gateways.base import Declined, DeclineKind, InDoubt, Processing, Succeeded
from collector.policy import (
    DEAD_ACCOUNT_RETURNS,
    DEFAULT_CARD_RULES,
    MAX_REINITIATIONS,
    NEEDS_CUSTOMER_CODES,
    NEVER_RETRY_ADVICE,
    NOT_TAKEN_CODE,
    UNAUTHORIZED_RETURNS,
    CardHistory,
    CardRetryRules,
    Decision,
    ReturnDecision,
    decide,
    decide_not_taken,
    decide_refused,
    decide_return,
    next_retry_on,
    return_category,
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


# -- what each answer keeps --------------------------------------------------------------------


def test_success_keeps_the_gateways_code_and_disables_nothing() -> None:
    d = decide(
        Succeeded(gateway_ref="ch_9", code="approved_with_id"),
        amount_cents=1,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d == Decision(
        attempt_status=AttemptStatus.SUCCEEDED,
        next_attempt_on=None,
        code="approved_with_id",
        gateway_ref="ch_9",
    )
    assert not d.disable_method and d.message is None and d.network_advice is None


def test_processing_keeps_its_gateway_reference_and_code() -> None:
    d = decide(
        Processing(gateway_ref="py_ach_7"),
        amount_cents=1,
        attempt_no=2,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d == Decision(
        attempt_status=AttemptStatus.PROCESSING,
        next_attempt_on=None,
        code="processing",
        gateway_ref="py_ach_7",
    )


def test_a_soft_decline_keeps_what_the_gateway_said() -> None:
    declined = Declined(
        kind=DeclineKind.SOFT,
        code="insufficient_funds",
        message="Your card has insufficient funds.",
        gateway_ref="ch_declined",
        network_advice="try_again_later",
    )
    d = decide(declined, amount_cents=1, attempt_no=1, as_of=AS_OF, retry_days=RETRY_DAYS)
    assert d == Decision(
        attempt_status=AttemptStatus.DECLINED,
        next_attempt_on=AS_OF + timedelta(days=3),
        disable_method=False,
        code="insufficient_funds",
        message="Your card has insufficient funds.",
        gateway_ref="ch_declined",
        network_advice="try_again_later",
    )


def test_a_soft_decline_with_advice_that_allows_retries_is_retried() -> None:
    d = decide(_soft("01"), amount_cents=1, attempt_no=1, as_of=AS_OF, retry_days=RETRY_DAYS)
    assert d.next_attempt_on == AS_OF + timedelta(days=3) and not d.disable_method
    assert d.network_advice == "01"


def test_a_soft_authentication_required_waits_for_the_customer_without_disabling() -> None:
    d = decide(
        Declined(kind=DeclineKind.SOFT, code="authentication_required"),
        amount_cents=1,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d.attempt_status is AttemptStatus.DECLINED
    assert d.next_attempt_on is None and not d.disable_method


@pytest.mark.parametrize("advice", sorted(NEVER_RETRY_ADVICE))
def test_authentication_required_is_not_disabled_even_with_never_retry_advice(
    advice: str,
) -> None:
    d = decide(
        Declined(kind=DeclineKind.SOFT, code="authentication_required", network_advice=advice),
        amount_cents=1,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d.next_attempt_on is None and not d.disable_method


def test_in_doubt_keeps_the_reason_as_its_code_and_plans_nothing() -> None:
    d = decide(
        InDoubt(reason="read_timeout"),
        amount_cents=1,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
    )
    assert d == Decision(
        attempt_status=AttemptStatus.IN_DOUBT, next_attempt_on=None, code="read_timeout"
    )


def test_a_not_taken_attempt_pays_nothing_and_stays_overdue_with_the_next_retry() -> None:
    d = decide_not_taken(attempt_no=2, as_of=AS_OF, retry_days=RETRY_DAYS)
    assert d == Decision(
        attempt_status=AttemptStatus.FAILED,
        next_attempt_on=AS_OF + timedelta(days=5),
        code=NOT_TAKEN_CODE,
        message="the gateway has no charge under this idempotency key",
    )
    # Released, not settled: the money goes back to what is owed (overdue), nothing was paid.
    assert ending_of(d.attempt_status) is MovementKind.RELEASED
    assert not d.disable_method
    assert NOT_TAKEN_CODE == "not_taken"


def test_a_not_taken_attempt_past_the_schedule_plans_no_retry() -> None:
    d = decide_not_taken(attempt_no=4, as_of=AS_OF, retry_days=RETRY_DAYS)
    assert d.next_attempt_on is None and d.attempt_status is AttemptStatus.FAILED


def test_a_refused_presentment_plans_nothing_and_says_why() -> None:
    d = decide_refused("card_retry_cap")
    assert d == Decision(
        attempt_status=AttemptStatus.REFUSED,
        next_attempt_on=None,
        code="card_retry_cap",
        message="refused before presentment: card_retry_cap",
    )
    assert ending_of(d.attempt_status) is MovementKind.RELEASED and not d.disable_method


# -- the retry schedule ------------------------------------------------------------------------


def test_the_last_scheduled_retry_is_used_and_the_one_after_is_not() -> None:
    assert next_retry_on(as_of=AS_OF, attempt_no=3, retry_days=RETRY_DAYS) == AS_OF + timedelta(
        days=7
    )
    assert next_retry_on(as_of=AS_OF, attempt_no=4, retry_days=RETRY_DAYS) is None
    assert next_retry_on(as_of=AS_OF, attempt_no=0, retry_days=RETRY_DAYS) is None
    assert next_retry_on(as_of=AS_OF, attempt_no=-1, retry_days=RETRY_DAYS) is None
    assert next_retry_on(as_of=AS_OF, attempt_no=1, retry_days=()) is None


@given(
    retry_days=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
    attempt_no=st.integers(min_value=-2, max_value=10),
)
def test_the_retry_after_attempt_n_waits_the_nth_configured_days(
    retry_days: list[int], attempt_no: int
) -> None:
    planned = next_retry_on(as_of=AS_OF, attempt_no=attempt_no, retry_days=retry_days)
    if 1 <= attempt_no <= len(retry_days):
        assert planned == AS_OF + timedelta(days=retry_days[attempt_no - 1])
    else:
        assert planned is None


# -- the card networks' caps -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("brand", "cap"),
    [
        ("visa", 15),
        (" VISA ", 15),
        ("mastercard", 35),
        ("MasterCard", 35),
        ("master card", 35),
        ("mc", 35),
        (" MC", 35),
        ("amex", 15),
        ("", 15),
        (None, 15),
    ],
)
def test_the_cap_is_that_of_the_cards_network_whatever_the_spelling(
    brand: str | None, cap: int
) -> None:
    assert DEFAULT_CARD_RULES.cap(brand) == cap


def test_caps_set_apart_per_network_are_each_used_for_their_own_brand() -> None:
    rules = CardRetryRules(
        visa_max_declines_30d=3, mastercard_max_declines_30d=5, other_max_declines_30d=7
    )
    assert [rules.cap(b) for b in ("Visa", "mastercard", "master card", "mc", "discover")] == [
        3,
        5,
        5,
        5,
        7,
    ]


def test_a_visa_cap_set_apart_is_used_when_deciding_a_retry() -> None:
    rules = CardRetryRules(visa_max_declines_30d=3, other_max_declines_30d=30)
    kwargs = {"amount_cents": 1, "attempt_no": 1, "as_of": AS_OF, "retry_days": RETRY_DAYS}
    at_visa_cap = CardHistory(brand="visa", declines_30d=3)
    assert decide(_soft(), card=at_visa_cap, card_rules=rules, **kwargs).next_attempt_on is None  # type: ignore[arg-type]
    under = CardHistory(brand="visa", declines_30d=2)
    assert decide(_soft(), card=under, card_rules=rules, **kwargs).next_attempt_on is not None  # type: ignore[arg-type]
    other = CardHistory(brand="amex", declines_30d=3)
    assert decide(_soft(), card=other, card_rules=rules, **kwargs).next_attempt_on is not None  # type: ignore[arg-type]


def test_a_card_at_its_cap_is_declined_without_disabling_it() -> None:
    at = CardHistory(brand="visa", declines_30d=15)
    d = decide(_soft(), amount_cents=1, attempt_no=1, as_of=AS_OF, retry_days=RETRY_DAYS, card=at)
    assert d.next_attempt_on is None and not d.disable_method


@given(
    cap=st.integers(min_value=1, max_value=50),
    declines=st.integers(min_value=0, max_value=60),
    brand=st.sampled_from(["visa", "mastercard", "discover"]),
)
def test_a_soft_decline_is_retried_exactly_while_the_card_is_under_its_cap(
    cap: int, declines: int, brand: str
) -> None:
    rules = CardRetryRules(
        visa_max_declines_30d=cap, mastercard_max_declines_30d=cap, other_max_declines_30d=cap
    )
    d = decide(
        _soft(),
        amount_cents=1,
        attempt_no=1,
        as_of=AS_OF,
        retry_days=RETRY_DAYS,
        card=CardHistory(brand=brand, declines_30d=declines),
        card_rules=rules,
    )
    assert (d.next_attempt_on is not None) == (declines < cap)


# -- returned bank debits ----------------------------------------------------------------------

RETURNED_ON = date(2026, 6, 1)  # a Monday
ORIGINAL_ON = date(2026, 5, 26)


def _return(
    code: str,
    *,
    before: int = 0,
    as_of: date = RETURNED_ON,
    original_on: date = ORIGINAL_ON,
    retry_days: tuple[int, ...] = RETRY_DAYS,
) -> ReturnDecision:
    return decide_return(
        code,
        nsf_returns_before=before,
        original_on=original_on,
        as_of=as_of,
        retry_days=retry_days,
    )


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("R01", "nsf"),
        ("R09", "nsf"),
        ("R02", "administrative"),
        ("R03", "administrative"),
        ("R04", "administrative"),
        ("R05", "unauthorized"),
        ("R07", "unauthorized"),
        ("R10", "unauthorized"),
        ("R11", "unauthorized"),
        ("R29", "unauthorized"),
        ("R51", "unauthorized"),
        ("R08", "other"),  # stop payment
        ("R16", "other"),  # account frozen: dead, but not an administrative return
        ("R20", "other"),  # non-transaction account: likewise
        ("R14", "other"),
        ("", "other"),
    ],
)
def test_each_return_code_counts_under_its_nacha_category(code: str, category: str) -> None:
    assert return_category(code) == category
    assert _return(code).category == category


@pytest.mark.parametrize("code", ["R01", "R09"])
def test_an_nsf_return_is_reinitiated_after_the_configured_days_keeping_the_method(
    code: str,
) -> None:
    first = _return(code, before=0)
    assert first == ReturnDecision(
        category="nsf", next_attempt_on=RETURNED_ON + timedelta(days=3), disable_method=False
    )
    # The second reinitiation waits the second configured delay: Saturday 06-06, so Monday.
    second = _return(code, before=1)
    assert second == ReturnDecision(
        category="nsf", next_attempt_on=date(2026, 6, 8), disable_method=False
    )


@pytest.mark.parametrize(("code", "before"), [("R01", 2), ("R09", 2), ("R01", 3)])
def test_the_third_nsf_return_is_not_reinitiated(code: str, before: int) -> None:
    assert _return(code, before=before) == ReturnDecision(
        category="nsf", next_attempt_on=None, disable_method=False
    )


def test_a_reinitiation_date_is_rolled_to_the_next_banking_day() -> None:
    # 2026-11-23 + 3 days is Thanksgiving: the debit is re-presented the Friday after.
    decision = _return("R01", as_of=date(2026, 11, 23), original_on=date(2026, 11, 16))
    assert decision.next_attempt_on == date(2026, 11, 27)


def test_a_reinitiation_waits_a_day_when_no_retry_days_are_configured() -> None:
    assert _return("R01", retry_days=()).next_attempt_on == RETURNED_ON + timedelta(days=1)


def test_a_reinitiation_past_the_configured_days_waits_the_last_of_them() -> None:
    assert _return("R01", before=1, retry_days=(4,)).next_attempt_on == RETURNED_ON + timedelta(
        days=4
    )


def test_a_reinitiation_on_day_180_is_planned_and_on_day_181_not() -> None:
    original_on = date(2026, 1, 2)  # day 180 is Wednesday 2026-07-01, day 181 a Thursday
    on_day_180 = _return("R01", as_of=date(2026, 6, 28), original_on=original_on, retry_days=(3,))
    assert on_day_180.next_attempt_on == date(2026, 7, 1)
    on_day_181 = _return("R01", as_of=date(2026, 6, 29), original_on=original_on, retry_days=(3,))
    assert on_day_181.next_attempt_on is None and not on_day_181.disable_method


def test_the_180_days_are_judged_on_the_banking_day_the_debit_would_go_out() -> None:
    # Day 180 is Saturday 2026-07-04: inside the window, but the debit would go out on
    # Monday 07-06, day 182.
    decision = _return("R01", as_of=date(2026, 7, 1), original_on=date(2026, 1, 5), retry_days=(3,))
    assert decision.next_attempt_on is None


@pytest.mark.parametrize("code", sorted(DEAD_ACCOUNT_RETURNS))
def test_a_dead_account_return_disables_the_method_and_is_never_re_presented(code: str) -> None:
    decision = _return(code)
    assert decision.next_attempt_on is None and decision.disable_method


@pytest.mark.parametrize("code", sorted(UNAUTHORIZED_RETURNS))
def test_an_unauthorized_return_disables_the_method_and_is_never_re_presented(code: str) -> None:
    assert _return(code) == ReturnDecision(
        category="unauthorized", next_attempt_on=None, disable_method=True
    )


@pytest.mark.parametrize("code", ["R08", "R14", "R15", "R23", "X99"])
def test_any_other_return_disables_the_method_and_waits_for_the_customer(code: str) -> None:
    assert _return(code) == ReturnDecision(
        category="other", next_attempt_on=None, disable_method=True
    )


@given(
    code=st.sampled_from(["R01", "R09"]),
    before=st.integers(min_value=0, max_value=4),
    original_on=st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)),
    waited=st.integers(min_value=0, max_value=200),
    retry_days=st.lists(st.integers(min_value=1, max_value=30), max_size=4),
)
def test_no_nsf_return_is_reinitiated_a_third_time_or_past_180_days_or_off_a_banking_day(
    code: str, before: int, original_on: date, waited: int, retry_days: list[int]
) -> None:
    as_of = original_on + timedelta(days=waited)
    decision = _return(
        code, before=before, as_of=as_of, original_on=original_on, retry_days=tuple(retry_days)
    )
    assert decision.category == "nsf" and not decision.disable_method
    wait = retry_days[min(before + 1, len(retry_days)) - 1] if retry_days else 1
    candidate = ach_effective_date(as_of + timedelta(days=wait))
    planned = before < MAX_REINITIATIONS and candidate <= original_on + timedelta(days=180)
    assert decision.next_attempt_on == (candidate if planned else None)
    if decision.next_attempt_on is not None:
        assert is_banking_day(decision.next_attempt_on) and decision.next_attempt_on > as_of


def test_an_outcome_of_no_known_kind_is_a_bug_never_a_decision() -> None:
    with pytest.raises(AssertionError, match="unhandled outcome 'charged'"):
        decide("charged", amount_cents=1, attempt_no=1, as_of=AS_OF, retry_days=RETRY_DAYS)  # type: ignore[arg-type]
