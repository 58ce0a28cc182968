"""The eligibility check, rule by rule, at its boundaries (pure: no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.domain import MethodKind
from collector.eligibility import (
    ACCOUNT_CLOSED,
    AUTHORIZATION_REVOKED,
    CARD_NEVER_RETRY,
    CARD_RETRY_CAP,
    DEAD_ACCOUNT_RETURNS,
    DEBIT_NOTICE_REQUIRED,
    PRENOTE_PENDING,
    PRENOTE_RETURNED,
    PROMISE_OPEN,
    REFUSAL_REASONS,
    REINITIATION_AMOUNT_DIFFERS,
    REINITIATION_WINDOW_PASSED,
    REINITIATIONS_EXHAUSTED,
    TWO_STRIKE_STOP,
    Eligible,
    InstrumentHistory,
    MoneyLine,
    NoticeFacts,
    NsfHistory,
    PrenoteFacts,
    Presentation,
    Refused,
    check,
    combine,
    debit_varies,
    notice_required,
    nsf_history,
)
from collector.policy import NSF_RETURNS, UNAUTHORIZED_RETURNS, CardRetryRules

ORIGINAL_ON = date(2026, 6, 1)
CLEAN = InstrumentHistory()


def debit(*, amount_cents: int = 10_000, as_of: date = ORIGINAL_ON) -> Presentation:
    return Presentation(
        attempt_id=9,
        installment_id=1,
        method_kind=MethodKind.ACH,
        brand=None,
        amount_cents=amount_cents,
        as_of=as_of,
    )


def card(brand: str | None = "visa") -> Presentation:
    return Presentation(
        attempt_id=9,
        installment_id=1,
        method_kind=MethodKind.CARD,
        brand=brand,
        amount_cents=10_000,
        as_of=ORIGINAL_ON,
    )


def nsf(*, reinitiations: int = 0, returned_cents: int = 10_000) -> NsfHistory:
    return NsfHistory(
        original_on=ORIGINAL_ON, returned_cents=returned_cents, reinitiations=reinitiations
    )


# -- bank debits -------------------------------------------------------------------------------


def test_a_debit_with_no_history_is_eligible_and_no_reinitiation() -> None:
    assert check(debit(), instrument=CLEAN) == Eligible(reinitiation=False)


def test_a_debit_after_an_unauthorized_return_is_refused_for_good() -> None:
    history = InstrumentHistory(unauthorized_return=True, dead_account_return=True)
    assert check(debit(), instrument=history, nsf=nsf()) == Refused(AUTHORIZATION_REVOKED)


def test_a_debit_of_a_closed_account_is_refused() -> None:
    history = InstrumentHistory(dead_account_return=True)
    assert check(debit(), instrument=history) == Refused(ACCOUNT_CLOSED)


@pytest.mark.parametrize("made", [0, 1])
def test_an_nsf_debit_may_be_reinitiated_twice(made: int) -> None:
    verdict = check(debit(), instrument=CLEAN, nsf=nsf(reinitiations=made))
    assert verdict == Eligible(reinitiation=True)


@pytest.mark.parametrize("made", [2, 3])
def test_a_third_reinitiation_is_refused(made: int) -> None:
    verdict = check(debit(), instrument=CLEAN, nsf=nsf(reinitiations=made))
    assert verdict == Refused(REINITIATIONS_EXHAUSTED)


def test_a_reinitiation_on_day_180_is_eligible_and_on_day_181_refused() -> None:
    last = ORIGINAL_ON + timedelta(days=180)
    assert check(debit(as_of=last), instrument=CLEAN, nsf=nsf()) == Eligible(reinitiation=True)
    late = check(debit(as_of=last + timedelta(days=1)), instrument=CLEAN, nsf=nsf())
    assert late == Refused(REINITIATION_WINDOW_PASSED)


@pytest.mark.parametrize("amount", [9_999, 10_001, 4_000])
def test_a_reinitiation_of_another_amount_is_refused(amount: int) -> None:
    verdict = check(debit(amount_cents=amount), instrument=CLEAN, nsf=nsf())
    assert verdict == Refused(REINITIATION_AMOUNT_DIFFERS)


def test_the_count_is_checked_before_the_window_and_the_amount() -> None:
    # All three rules broken at once: the count is the reason given.
    verdict = check(
        debit(amount_cents=1, as_of=ORIGINAL_ON + timedelta(days=365)),
        instrument=CLEAN,
        nsf=nsf(reinitiations=2),
    )
    assert verdict == Refused(REINITIATIONS_EXHAUSTED)
    verdict = check(
        debit(amount_cents=1, as_of=ORIGINAL_ON + timedelta(days=365)),
        instrument=CLEAN,
        nsf=nsf(),
    )
    assert verdict == Refused(REINITIATION_WINDOW_PASSED)


@given(
    made=st.integers(min_value=0, max_value=5),
    days=st.integers(min_value=0, max_value=400),
)
def test_no_reinitiation_is_eligible_past_the_count_or_the_window(made: int, days: int) -> None:
    verdict = check(
        debit(as_of=ORIGINAL_ON + timedelta(days=days)),
        instrument=CLEAN,
        nsf=nsf(reinitiations=made),
    )
    assert isinstance(verdict, Eligible) == (made < 2 and days <= 180)
    if isinstance(verdict, Eligible):
        assert verdict.reinitiation


# -- cards --------------------------------------------------------------------------------------


def test_a_card_with_advice_never_to_retry_is_refused() -> None:
    assert check(card(), instrument=InstrumentHistory(never_retry=True)) == Refused(
        CARD_NEVER_RETRY
    )


def test_card_rules_ignore_bank_history() -> None:
    history = InstrumentHistory(unauthorized_return=True, dead_account_return=True)
    assert check(card(), instrument=history, nsf=nsf(reinitiations=5)) == Eligible()


@pytest.mark.parametrize(
    ("brand", "cap"), [("visa", 15), ("Visa", 15), ("mastercard", 35), ("mc", 35), (None, 15)]
)
def test_a_card_is_refused_at_its_networks_cap(brand: str | None, cap: int) -> None:
    below = InstrumentHistory(declines_30d=cap - 1)
    at = InstrumentHistory(declines_30d=cap)
    assert check(card(brand), instrument=below) == Eligible()
    assert check(card(brand), instrument=at) == Refused(CARD_RETRY_CAP)


def test_presentments_still_unanswered_count_toward_the_cap() -> None:
    rules = CardRetryRules(visa_max_declines_30d=3)
    assert (
        check(
            card(),
            instrument=InstrumentHistory(declines_30d=1, unresolved_before=1),
            card_rules=rules,
        )
        == Eligible()
    )
    assert check(
        card(), instrument=InstrumentHistory(declines_30d=1, unresolved_before=2), card_rules=rules
    ) == Refused(CARD_RETRY_CAP)


def test_a_cap_set_apart_for_visa_is_used_for_visa_only() -> None:
    rules = CardRetryRules(visa_max_declines_30d=2, other_max_declines_30d=10)
    history = InstrumentHistory(declines_30d=2)
    assert check(card("visa"), instrument=history, card_rules=rules) == Refused(CARD_RETRY_CAP)
    assert check(card("amex"), instrument=history, card_rules=rules) == Eligible()


# -- an attempt over several installments ------------------------------------------------------


def test_one_refused_installment_refuses_the_whole_attempt_with_its_reason() -> None:
    verdicts = [Eligible(), Refused(ACCOUNT_CLOSED), Refused(CARD_RETRY_CAP)]
    assert combine(verdicts) == Refused(ACCOUNT_CLOSED)


def test_an_attempt_is_a_reinitiation_if_any_of_its_money_is() -> None:
    assert combine([Eligible(), Eligible(reinitiation=True)]) == Eligible(reinitiation=True)
    assert combine([Eligible(), Eligible()]) == Eligible(reinitiation=False)
    assert combine([]) == Eligible(reinitiation=False)


def test_every_refusal_reason_is_in_the_closed_set() -> None:
    assert {
        AUTHORIZATION_REVOKED,
        ACCOUNT_CLOSED,
        REINITIATIONS_EXHAUSTED,
        REINITIATION_WINDOW_PASSED,
        REINITIATION_AMOUNT_DIFFERS,
        CARD_NEVER_RETRY,
        CARD_RETRY_CAP,
        DEBIT_NOTICE_REQUIRED,
        TWO_STRIKE_STOP,
        PRENOTE_PENDING,
        PRENOTE_RETURNED,
        PROMISE_OPEN,
    } == REFUSAL_REASONS


# -- reading an installment's lines on one account ---------------------------------------------


def presented(
    line_id: int, attempt: int, *, on: date, cents: int = 10_000, sent: bool = True
) -> MoneyLine:
    return MoneyLine(
        id=line_id,
        attempt_id=attempt,
        returned=False,
        nsf=False,
        amount_cents=cents,
        as_of=on,
        sent=sent,
    )


def returned(
    line_id: int, attempt: int, *, on: date, nsf: bool = True, cents: int = 10_000
) -> MoneyLine:
    return MoneyLine(
        id=line_id, attempt_id=attempt, returned=True, nsf=nsf, amount_cents=cents, as_of=on
    )


def test_money_that_never_came_back_nsf_has_no_nsf_history() -> None:
    assert nsf_history([]) is None
    lines = [presented(1, 1, on=ORIGINAL_ON), returned(2, 1, on=ORIGINAL_ON, nsf=False)]
    assert nsf_history(lines) is None


def test_the_original_is_the_first_entry_that_came_back_nsf() -> None:
    first = ORIGINAL_ON
    lines = [
        presented(1, 1, on=first),
        returned(2, 1, on=first + timedelta(days=3)),
        presented(3, 2, on=first + timedelta(days=5)),
        returned(4, 2, on=first + timedelta(days=8), cents=10_000),
    ]
    history = nsf_history(list(reversed(lines)))  # order comes from the ids
    assert history == NsfHistory(original_on=first, returned_cents=10_000, reinitiations=1)


def test_presentments_before_the_first_return_are_not_reinitiations() -> None:
    # 40.00 presented, another debit of 60.00 sent while it was in flight, then the 40.00
    # came back: the 60.00 is not a reinitiation of it.
    lines = [
        presented(1, 1, on=ORIGINAL_ON, cents=4_000),
        presented(2, 2, on=ORIGINAL_ON + timedelta(days=1), cents=6_000),
        returned(3, 1, on=ORIGINAL_ON + timedelta(days=3), cents=4_000),
    ]
    assert nsf_history(lines) == NsfHistory(
        original_on=ORIGINAL_ON, returned_cents=4_000, reinitiations=0
    )


def test_a_presentment_that_never_reached_the_bank_is_no_reinitiation() -> None:
    lines = [
        presented(1, 1, on=ORIGINAL_ON),
        returned(2, 1, on=ORIGINAL_ON + timedelta(days=3)),
        presented(3, 2, on=ORIGINAL_ON + timedelta(days=5), sent=False),
        presented(4, 3, on=ORIGINAL_ON + timedelta(days=6)),
    ]
    history = nsf_history(lines)
    assert history is not None and history.reinitiations == 1


def test_the_amount_to_match_is_that_of_the_latest_nsf_return() -> None:
    lines = [
        presented(1, 1, on=ORIGINAL_ON, cents=10_000),
        returned(2, 1, on=ORIGINAL_ON, cents=10_000),
        presented(3, 2, on=ORIGINAL_ON, cents=7_000),
        returned(4, 2, on=ORIGINAL_ON, cents=7_000),
        returned(5, 3, on=ORIGINAL_ON, nsf=False, cents=1),
    ]
    history = nsf_history(lines)
    assert history is not None and history.returned_cents == 7_000


def test_a_return_whose_presentment_is_not_in_view_dates_the_original_by_itself() -> None:
    back = ORIGINAL_ON + timedelta(days=4)
    history = nsf_history([returned(7, 1, on=back)])
    assert history == NsfHistory(original_on=back, returned_cents=10_000, reinitiations=0)


def test_a_dead_account_is_one_returned_closed_missing_invalid_frozen_or_non_transaction() -> None:
    # NACHA R02 account closed, R03 no account, R04 invalid account number, R16 account
    # frozen, R20 non-transaction account: the history flags the instrument as a dead account
    # on any of these, and every later debit of it is refused (account_closed).
    assert frozenset({"R02", "R03", "R04", "R16", "R20"}) == DEAD_ACCOUNT_RETURNS
    # Neither an NSF return (reinitiated) nor an unauthorized one (its own refusal) is one.
    assert not DEAD_ACCOUNT_RETURNS & (NSF_RETURNS | UNAUTHORIZED_RETURNS)


# -- Regulation E: notice of a varying debit ------------------------------------------------------

NOTICE_DAY = date(2026, 11, 2)


def notice_facts(**kw: object) -> NoticeFacts:
    values: dict[str, object] = {"scheduled_cents": 5_000, "previous_cents": 5_000}
    values.update(kw)
    return NoticeFacts(**values)  # type: ignore[arg-type]


def notice_verdict(amount: int, notice: NoticeFacts | None, *, on: date = NOTICE_DAY):  # type: ignore[no-untyped-def]
    return check(
        Presentation(
            attempt_id=1,
            installment_id=1,
            method_kind=MethodKind.CARD,
            brand="Visa",
            amount_cents=amount,
            as_of=on,
        ),
        instrument=InstrumentHistory(),
        notice=notice,
    )


def test_a_debit_varies_from_the_previous_or_else_the_scheduled_amount() -> None:
    assert not debit_varies(5_000, notice_facts())
    assert debit_varies(4_000, notice_facts())
    assert not debit_varies(5_000, notice_facts(previous_cents=None))
    assert debit_varies(5_500, notice_facts(previous_cents=None))
    # Notice only outside the customer's range, both ends included.
    ranged = notice_facts(range_min_cents=4_000, range_max_cents=6_000)
    assert not notice_required(4_000, ranged) and not notice_required(6_000, ranged)
    assert notice_required(6_001, ranged) and notice_required(3_999, ranged)
    assert not notice_required(5_000, notice_facts())


def test_a_varying_debit_goes_only_ten_days_after_its_notice() -> None:
    assert notice_verdict(4_000, notice_facts()) == Refused(
        DEBIT_NOTICE_REQUIRED, retry_on=NOTICE_DAY + timedelta(10)
    )
    notified = notice_facts(notified_on=NOTICE_DAY - timedelta(days=9))
    assert notice_verdict(4_000, notified) == Refused(
        DEBIT_NOTICE_REQUIRED, retry_on=NOTICE_DAY + timedelta(days=1)
    )
    assert (
        notice_verdict(4_000, notice_facts(notified_on=NOTICE_DAY - timedelta(days=10)))
        == Eligible()
    )
    assert notice_verdict(5_000, notice_facts()) == Eligible()  # the same amount: no notice needed
    assert notice_verdict(4_000, None) == Eligible()  # the customer's own payment


# -- the two-strike stop -----------------------------------------------------------------------


def _card(*, automatic: bool) -> Presentation:
    return Presentation(
        attempt_id=9,
        installment_id=1,
        method_kind=MethodKind.CARD,
        brand="visa",
        amount_cents=5_000,
        as_of=ORIGINAL_ON,
        automatic=automatic,
    )


@pytest.mark.parametrize("kind", [MethodKind.CARD, MethodKind.ACH])
def test_two_failures_in_a_row_stop_automatic_presentments_only(kind: MethodKind) -> None:
    rules = CardRetryRules(two_strike_limit=2)
    auto = Presentation(
        attempt_id=9,
        installment_id=1,
        method_kind=kind,
        brand=None,
        amount_cents=5_000,
        as_of=ORIGINAL_ON,
        automatic=True,
    )
    one, two = InstrumentHistory(strikes=1), InstrumentHistory(strikes=2)
    assert check(auto, instrument=one, card_rules=rules) == Eligible()
    assert check(auto, instrument=two, card_rules=rules) == Refused(TWO_STRIKE_STOP)
    manual = Presentation(
        attempt_id=9,
        installment_id=1,
        method_kind=kind,
        brand=None,
        amount_cents=5_000,
        as_of=ORIGINAL_ON,
    )
    assert check(manual, instrument=two, card_rules=rules) == Eligible()
    off = CardRetryRules(two_strike_limit=0)
    assert check(auto, instrument=InstrumentHistory(strikes=9), card_rules=off) == Eligible()


def test_a_revoked_authorization_or_never_retry_advice_is_named_before_the_stop() -> None:
    struck = InstrumentHistory(strikes=2, never_retry=True)
    assert check(_card(automatic=True), instrument=struck) == Refused(CARD_NEVER_RETRY)
    revoked = InstrumentHistory(strikes=2, unauthorized_return=True)
    auto_debit = Presentation(
        attempt_id=9,
        installment_id=1,
        method_kind=MethodKind.ACH,
        brand=None,
        amount_cents=5_000,
        as_of=ORIGINAL_ON,
        automatic=True,
    )
    assert check(auto_debit, instrument=revoked) == Refused(AUTHORIZATION_REVOKED)


# --- NACHA account validation (prenotes) ------------------------------------------------------

PRENOTE_WED = date(2026, 12, 2)  # a prenote's file effective Wednesday 2 December 2026


def debit_on(day: date) -> Presentation:
    return Presentation(
        attempt_id=1,
        installment_id=1,
        method_kind=MethodKind.ACH,
        brand=None,
        amount_cents=5_000,
        as_of=day,
        automatic=True,
    )


def test_a_live_debit_waits_three_banking_days_after_its_prenotes_effective_date() -> None:

    filed = PrenoteFacts(requested_on=date(2026, 12, 1), effective_on=PRENOTE_WED, written=True)
    monday = date(2026, 12, 7)  # Thursday, Friday, Monday: the third banking day
    for day in (PRENOTE_WED, date(2026, 12, 3), date(2026, 12, 4), date(2026, 12, 5)):
        assert check(debit_on(day), instrument=CLEAN, prenote=filed) == Refused(
            PRENOTE_PENDING, retry_on=monday
        )
    assert check(debit_on(monday), instrument=CLEAN, prenote=filed) == Eligible()
    # A longer wait is a setting.
    rules = CardRetryRules(prenote_wait_days=5)
    assert check(debit_on(monday), instrument=CLEAN, prenote=filed, card_rules=rules) == Refused(
        PRENOTE_PENDING, retry_on=date(2026, 12, 9)
    )


def test_a_prenote_not_yet_filed_or_not_yet_sent_holds_the_debit_from_the_next_file() -> None:

    # Accepted Friday 4 December, not in a written file: the earliest file is effective
    # Monday 7, so the debit waits until Thursday 10.
    unfiled = PrenoteFacts(requested_on=date(2026, 12, 4))
    assert check(debit_on(date(2026, 12, 4)), instrument=CLEAN, prenote=unfiled) == Refused(
        PRENOTE_PENDING, retry_on=date(2026, 12, 10)
    )
    # No prenote at all yet (the pass sends one today): the same estimate; the day it comes,
    # the check is made again with the real file.
    assert check(debit_on(date(2026, 12, 4)), instrument=CLEAN, prenote=PrenoteFacts()) == (
        Refused(PRENOTE_PENDING, retry_on=date(2026, 12, 10))
    )
    # Still unfiled on the planned day: held again, never presented unvalidated.
    assert isinstance(
        check(debit_on(date(2026, 12, 10)), instrument=CLEAN, prenote=unfiled), Refused
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("R02", ACCOUNT_CLOSED),
        ("R03", ACCOUNT_CLOSED),
        ("R04", ACCOUNT_CLOSED),
        ("R10", AUTHORIZATION_REVOKED),
    ],
)
def test_a_prenote_returned_for_a_closed_account_ends_its_debits(code: str, reason: str) -> None:

    # Even a debit after a validated one, or an adapter's validation, does not reopen it.
    closed = PrenoteFacts(closed_code=code, validated=True, debited_before=True, returned=1)
    verdict = check(debit_on(date(2027, 1, 4)), instrument=CLEAN, prenote=closed)
    assert verdict == Refused(reason)


def test_validated_or_already_debited_accounts_need_no_prenote() -> None:

    day = date(2026, 12, 4)
    assert check(debit_on(day), instrument=CLEAN, prenote=PrenoteFacts(validated=True)) == (
        Eligible()
    )
    assert check(debit_on(day), instrument=CLEAN, prenote=PrenoteFacts(debited_before=True)) == (
        Eligible()
    )
    # Prenotes returned for other reasons, twice: no more prenotes, no live debit.
    assert check(debit_on(day), instrument=CLEAN, prenote=PrenoteFacts(returned=2)) == Refused(
        PRENOTE_RETURNED
    )
    assert PRENOTE_RETURNED in REFUSAL_REASONS


# -- promises to pay ---------------------------------------------------------------------------


@pytest.mark.parametrize("presentation", [debit(), card()])
def test_a_promise_pauses_automatic_presentments_until_it_resumes(
    presentation: Presentation,
) -> None:
    automatic = replace(presentation, automatic=True)
    resume_on = ORIGINAL_ON + timedelta(days=3)
    assert check(automatic, instrument=CLEAN, paused_until=resume_on) == Refused(
        PROMISE_OPEN, retry_on=resume_on
    )
    # On the day it resumes, and for the customer's own payment, it is no obstacle.
    on_the_day = replace(automatic, as_of=resume_on)
    assert check(on_the_day, instrument=CLEAN, paused_until=resume_on) == Eligible()
    assert check(presentation, instrument=CLEAN, paused_until=resume_on) == Eligible()
