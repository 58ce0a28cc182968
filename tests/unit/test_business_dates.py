"""The one rule for business dates, and that every date the engine derives from an accepted one
stays inside the banking calendar."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.business_dates import (
    EARLIEST,
    LATEST,
    MAX_DAYS_AHEAD,
    MAX_RETRY_DAYS,
    check_business_date,
    check_in_range,
)
from collector.calendar import (
    LAST_YEAR,
    ach_effective_date,
    ach_settles_on,
    is_banking_day,
    next_banking_day,
)
from collector.exceptions import CollectorError, DateOutOfRange
from collector.policy import REINITIATION_WINDOW_DAYS, decide_return, next_retry_on

TODAY = date(2026, 12, 1)


def test_today_and_the_past_are_business_dates() -> None:
    assert check_business_date(TODAY, today=TODAY) == TODAY
    assert check_business_date(date(2026, 11, 26), today=TODAY) == date(2026, 11, 26)
    assert check_business_date(EARLIEST, today=TODAY) == EARLIEST


def test_a_date_after_today_is_refused_unless_days_ahead_are_allowed() -> None:
    tomorrow = TODAY + timedelta(days=1)
    with pytest.raises(DateOutOfRange, match=r"2026-12-02 is 1 day\(s\) after today"):
        check_business_date(tomorrow, today=TODAY, zone="America/New_York", hint="use the flag")
    assert check_business_date(tomorrow, today=TODAY, days_ahead=MAX_DAYS_AHEAD) == tomorrow
    last = TODAY + timedelta(days=MAX_DAYS_AHEAD)
    assert check_business_date(last, today=TODAY, days_ahead=MAX_DAYS_AHEAD) == last
    with pytest.raises(DateOutOfRange, match=f"more than the {MAX_DAYS_AHEAD} allowed"):
        check_business_date(last + timedelta(days=1), today=TODAY, days_ahead=MAX_DAYS_AHEAD)


def test_the_message_names_the_zone_and_the_way_out() -> None:
    with pytest.raises(DateOutOfRange) as caught:
        check_business_date(
            date(2027, 12, 31),
            today=TODAY,
            what="--date",
            zone="America/New_York",
            hint="give --allow-future-date",
        )
    assert str(caught.value) == (
        "--date 2027-12-31 is 395 day(s) after today (2026-12-01 in America/New_York);"
        " give --allow-future-date"
    )
    assert isinstance(caught.value, CollectorError)


@pytest.mark.parametrize("day", [date(9999, 12, 31), date(2100, 1, 1), LATEST + timedelta(days=1)])
def test_dates_past_the_calendar_are_refused_even_with_days_ahead(day: date) -> None:
    with pytest.raises(DateOutOfRange, match="last business date"):
        check_business_date(day, today=TODAY, days_ahead=10**6)


@pytest.mark.parametrize("day", [date(1, 1, 1), date(1998, 12, 31)])
def test_dates_before_the_calendar_are_refused(day: date) -> None:
    with pytest.raises(DateOutOfRange, match="first day the banking calendar covers"):
        check_business_date(day, today=TODAY)


def test_a_clock_decades_off_is_no_business_date() -> None:
    with pytest.raises(DateOutOfRange, match="today's date 2150-01-01"):
        check_business_date(TODAY, today=date(2150, 1, 1))
    assert check_in_range(LATEST) == LATEST


def test_the_calendar_refuses_years_it_knows_no_holidays_of() -> None:
    # The holidays package knows none after 2100: an empty year would make Christmas a
    # banking day instead of failing.
    assert not is_banking_day(date(LAST_YEAR, 12, 25))
    with pytest.raises(ValueError, match=f"ends in {LAST_YEAR}"):
        is_banking_day(date(LAST_YEAR + 1, 12, 25))


accepted = st.dates(min_value=EARLIEST, max_value=LATEST)
retry_waits = st.integers(min_value=1, max_value=MAX_RETRY_DAYS)


@given(accepted, retry_waits)
def test_every_date_derived_from_an_accepted_one_is_in_the_calendar(as_of: date, wait: int) -> None:
    # A soft decline's retry, and an ACH debit sent that day: effective and settled dates.
    retry_on = next_retry_on(as_of=as_of, attempt_no=1, retry_days=[wait])
    assert retry_on is not None and retry_on > as_of
    effective = ach_effective_date(retry_on)
    assert ach_settles_on(effective) > effective
    # An NSF return received that day is reinitiated on a banking day within the window.
    decision = decide_return(
        "R01", nsf_returns_before=0, original_on=as_of, as_of=as_of, retry_days=[wait]
    )
    assert decision.next_attempt_on is not None
    assert decision.next_attempt_on <= as_of + timedelta(days=REINITIATION_WINDOW_DAYS)
    # NACHA export: files for the next banking day after the business date.
    assert next_banking_day(as_of) > as_of
