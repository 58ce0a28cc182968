from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.calendar import (
    ach_effective_date,
    ach_settles_on,
    add_banking_days,
    banking_days_between,
    is_banking_day,
    next_banking_day,
    previous_banking_day,
)

# The Federal Reserve's published holiday schedule (K.8) for 2025-2027: each closes the day.
FED_CLOSED = [
    date(2025, 1, 1),  # New Year's Day, Wednesday
    date(2025, 1, 20),  # Birthday of Martin Luther King, Jr.
    date(2025, 2, 17),  # Washington's Birthday
    date(2025, 5, 26),  # Memorial Day
    date(2025, 6, 19),  # Juneteenth, Thursday
    date(2025, 7, 4),  # Independence Day, Friday
    date(2025, 9, 1),  # Labor Day
    date(2025, 10, 13),  # Columbus Day
    date(2025, 11, 11),  # Veterans Day, Tuesday
    date(2025, 11, 27),  # Thanksgiving Day
    date(2025, 12, 25),  # Christmas Day, Thursday
    date(2026, 1, 1),
    date(2026, 1, 19),
    date(2026, 2, 16),
    date(2026, 5, 25),
    date(2026, 6, 19),  # Juneteenth, Friday
    date(2026, 9, 7),
    date(2026, 10, 12),
    date(2026, 11, 11),
    date(2026, 11, 26),  # Thanksgiving Day
    date(2026, 12, 25),  # Christmas Day, Friday
    date(2027, 1, 1),
    date(2027, 1, 18),
    date(2027, 2, 15),
    date(2027, 5, 31),
    date(2027, 7, 5),  # Independence Day falls on a Sunday: closed Monday
    date(2027, 9, 6),
    date(2027, 10, 11),
    date(2027, 11, 11),
    date(2027, 11, 25),
]

# Open although a federal office would close: the holiday is on the Saturday after.
SATURDAY_HOLIDAY_FRIDAYS = [
    date(2026, 7, 3),  # Independence Day 2026-07-04 is a Saturday
    date(2027, 6, 18),  # Juneteenth 2027-06-19 is a Saturday
    date(2027, 12, 24),  # Christmas Day 2027-12-25 is a Saturday
    date(2021, 12, 31),  # New Year's Day 2022-01-01 is a Saturday (the year before)
]

ORDINARY_WEEKDAYS = [
    date(2025, 11, 28),  # the Friday after Thanksgiving
    date(2026, 11, 25),  # the Wednesday before Thanksgiving
    date(2026, 12, 24),  # Christmas Eve
    date(2026, 12, 31),  # New Year's Eve
    date(2027, 7, 6),
]

dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
# Days from which 400 banking days (about 570 calendar days) stay inside the calendar, which
# ends in 2100: past it, add_banking_days refuses (ValueError), as it should.
dates_400_banking_days_before_the_end = st.dates(
    min_value=date(2000, 1, 1), max_value=date(2098, 6, 30)
)


@pytest.mark.parametrize("day", FED_CLOSED, ids=str)
def test_federal_reserve_holidays_are_not_banking_days(day: date) -> None:
    assert day.weekday() < 5
    assert not is_banking_day(day)


@pytest.mark.parametrize("day", SATURDAY_HOLIDAY_FRIDAYS, ids=str)
def test_friday_before_a_saturday_holiday_is_a_banking_day(day: date) -> None:
    assert day.weekday() == 4
    assert is_banking_day(day)


@pytest.mark.parametrize("day", ORDINARY_WEEKDAYS, ids=str)
def test_ordinary_weekdays_are_banking_days(day: date) -> None:
    assert is_banking_day(day)


def test_sunday_holiday_closes_the_following_monday() -> None:
    assert date(2022, 12, 25).weekday() == 6
    assert not is_banking_day(date(2022, 12, 26))
    assert is_banking_day(date(2022, 12, 27))
    assert next_banking_day(date(2022, 12, 23)) == date(2022, 12, 27)


def test_weekends_are_not_banking_days() -> None:
    assert not is_banking_day(date(2026, 7, 4))  # Saturday (and a holiday)
    assert not is_banking_day(date(2026, 3, 7))  # Saturday
    assert not is_banking_day(date(2026, 3, 8))  # Sunday


def test_next_and_previous_banking_day_skip_weekends_and_holidays() -> None:
    assert next_banking_day(date(2026, 11, 25)) == date(2026, 11, 27)  # over Thanksgiving
    assert next_banking_day(date(2026, 7, 2)) == date(2026, 7, 3)
    assert next_banking_day(date(2026, 7, 3)) == date(2026, 7, 6)
    assert next_banking_day(date(2025, 12, 24)) == date(2025, 12, 26)
    assert previous_banking_day(date(2026, 11, 27)) == date(2026, 11, 25)
    assert previous_banking_day(date(2027, 7, 6)) == date(2027, 7, 2)  # over Monday 07-05
    assert previous_banking_day(date(2026, 1, 2)) == date(2025, 12, 31)


def test_add_banking_days() -> None:
    assert add_banking_days(date(2026, 11, 25), 0) == date(2026, 11, 25)
    assert add_banking_days(date(2026, 11, 26), 0) == date(2026, 11, 27)
    assert add_banking_days(date(2026, 11, 25), 1) == date(2026, 11, 27)
    assert add_banking_days(date(2026, 11, 25), 2) == date(2026, 11, 30)
    # A Saturday rolls to Monday first, then counts.
    assert add_banking_days(date(2026, 3, 7), 1) == date(2026, 3, 10)
    # Across the year end: 12-24 (Thu), 12-25 closed, 12-28..12-31, 2027-01-01 closed.
    assert add_banking_days(date(2026, 12, 24), 5) == date(2027, 1, 4)
    with pytest.raises(ValueError, match="n must be >= 0"):
        add_banking_days(date(2026, 1, 5), -1)


def test_ach_effective_date_is_the_due_date_or_the_next_banking_day() -> None:
    assert ach_effective_date(date(2026, 11, 25)) == date(2026, 11, 25)
    assert ach_effective_date(date(2026, 11, 26)) == date(2026, 11, 27)  # Thanksgiving
    assert ach_effective_date(date(2026, 7, 4)) == date(2026, 7, 6)  # Saturday holiday
    assert ach_effective_date(date(2026, 7, 3)) == date(2026, 7, 3)
    assert ach_effective_date(date(2022, 12, 25)) == date(2022, 12, 27)  # Sunday, Monday closed


def test_ach_settles_two_banking_days_after_the_effective_date() -> None:
    assert ach_settles_on(date(2026, 11, 24)) == date(2026, 11, 27)  # Tue → over Thanksgiving
    assert ach_settles_on(date(2026, 7, 2)) == date(2026, 7, 6)
    assert ach_settles_on(date(2025, 12, 23), days=1) == date(2025, 12, 24)
    assert ach_settles_on(date(2025, 12, 23), days=0) == date(2025, 12, 23)


def test_banking_days_between() -> None:
    assert banking_days_between(date(2026, 11, 25), date(2026, 11, 25)) == 0
    assert banking_days_between(date(2026, 11, 25), date(2026, 11, 27)) == 1
    assert banking_days_between(date(2026, 11, 20), date(2026, 11, 30)) == 5
    assert banking_days_between(date(2026, 11, 30), date(2026, 11, 20)) == -5
    # 2026 has 261 weekdays, and 10 of its 11 holidays fall on one (07-04 is a Saturday).
    assert banking_days_between(date(2025, 12, 31), date(2026, 12, 31)) == 251


def test_dates_before_the_calendar_starts_are_refused() -> None:
    with pytest.raises(ValueError, match="starts in 1999"):
        is_banking_day(date(1998, 12, 30))


@given(dates)
def test_next_banking_day_is_a_banking_day_strictly_after(day: date) -> None:
    nxt = next_banking_day(day)
    assert nxt > day and is_banking_day(nxt)
    # Nothing in between is a banking day (a holiday weekend spans at most 4 days).
    assert (nxt - day).days <= 4
    assert not any(is_banking_day(day + timedelta(days=i)) for i in range(1, (nxt - day).days))


@given(dates)
def test_previous_banking_day_is_a_banking_day_strictly_before(day: date) -> None:
    prev = previous_banking_day(day)
    assert prev < day and is_banking_day(prev)
    assert next_banking_day(prev) >= day


@given(dates_400_banking_days_before_the_end, st.integers(min_value=0, max_value=400))
def test_add_banking_days_is_strictly_monotonic_in_n(day: date, n: int) -> None:
    here, there = add_banking_days(day, n), add_banking_days(day, n + 1)
    assert is_banking_day(here) and is_banking_day(there)
    assert day <= here < there
    assert there == next_banking_day(here)


@given(dates_400_banking_days_before_the_end, st.integers(min_value=0, max_value=400))
def test_banking_days_between_counts_what_add_banking_days_adds(day: date, n: int) -> None:
    rolled = 0 if is_banking_day(day) else 1  # add_banking_days first rolls to a banking day
    assert banking_days_between(day, add_banking_days(day, n)) == n + rolled


@given(dates, st.integers(min_value=-60, max_value=60))
def test_banking_days_between_matches_a_day_by_day_count(start: date, offset: int) -> None:
    end = start + timedelta(days=offset)
    lo, hi = min(start, end), max(start, end)
    brute = sum(1 for i in range(1, (hi - lo).days + 1) if is_banking_day(lo + timedelta(days=i)))
    assert banking_days_between(start, end) == (brute if end >= start else -brute)


@given(dates)
def test_ach_effective_date_never_precedes_the_due_date(due_on: date) -> None:
    effective = ach_effective_date(due_on)
    assert is_banking_day(effective)
    assert effective == due_on or (effective == next_banking_day(due_on) > due_on)
