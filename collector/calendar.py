"""Banking days for ACH: weekends and the holidays the Federal Reserve Banks observe.

The FedACH operator settles entries only on days the Federal Reserve Banks are open. They close
on Saturdays, Sundays and eleven holidays (New Year's Day, Birthday of Martin Luther King, Jr.,
Washington's Birthday, Memorial Day, Juneteenth, Independence Day, Labor Day, Columbus Day,
Veterans Day, Thanksgiving Day, Christmas Day). Unlike federal offices, the Reserve Banks do
**not** close on the Friday before a holiday that falls on a Saturday (2026-07-04 is a
Saturday, so Friday 2026-07-03 is a banking day); a holiday that falls on a Sunday closes them
on the following Monday (2022-12-25, so Monday 2022-12-26 is closed). The dates come from the
``holidays`` package's Federal Reserve calendar (market ``XFED``), which models exactly that
rule; ad-hoc closures announced by the Board are not in it.

Every function is pure: dates in, dates out, no clock reads. Dates before 1999 or after 2100
(the years the package's Federal Reserve calendar covers: past 2100 it knows no holidays at
all) are refused with ``ValueError`` rather than answered wrongly.
"""

from __future__ import annotations

import functools
from datetime import date, timedelta

__all__ = [
    "FIRST_YEAR",
    "LAST_YEAR",
    "ach_effective_date",
    "ach_settles_on",
    "add_banking_days",
    "banking_days_between",
    "is_banking_day",
    "next_banking_day",
    "previous_banking_day",
]

FIRST_YEAR = 1999
"""The first year the Federal Reserve calendar covers."""
LAST_YEAR = 2100
"""The last year the Federal Reserve calendar covers (the ``holidays`` package has none after)."""

_ONE_DAY = timedelta(days=1)
_SATURDAY = 5  # date.weekday(): Monday is 0


@functools.cache
def _weekday_holidays(year: int) -> frozenset[date]:
    """The Federal Reserve holidays of ``year`` that close a weekday (cached per year)."""
    if year < FIRST_YEAR:
        raise ValueError(f"the Federal Reserve calendar starts in {FIRST_YEAR}, not {year}")
    if year > LAST_YEAR:
        raise ValueError(f"the Federal Reserve calendar ends in {LAST_YEAR}, not {year}")
    # A holiday on a Saturday stays on the Saturday (the Reserve Banks are open the Friday
    # before) and one on a Sunday is observed on the Monday, inside the same year, so one
    # year's set never reaches into the next.
    # Imported on first use: the calendar package costs every process ~100 ms and several MB,
    # and most passes never ask for a banking day.
    import holidays

    closed = holidays.financial_holidays("XFED", years=year)
    return frozenset(day for day in closed if day.weekday() < _SATURDAY)


def is_banking_day(day: date) -> bool:
    """Whether the Federal Reserve Banks are open (and ACH entries settle) on ``day``."""
    closed = _weekday_holidays(day.year)  # first: a weekend outside the calendar is refused too
    return day.weekday() < _SATURDAY and day not in closed


def next_banking_day(day: date) -> date:
    """The first banking day strictly after ``day``."""
    day += _ONE_DAY
    while not is_banking_day(day):
        day += _ONE_DAY
    return day


def previous_banking_day(day: date) -> date:
    """The last banking day strictly before ``day``."""
    day -= _ONE_DAY
    while not is_banking_day(day):
        day -= _ONE_DAY
    return day


def add_banking_days(day: date, n: int) -> date:
    """The ``n``-th banking day after ``day`` rolled forward to a banking day (``n >= 0``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not is_banking_day(day):
        day = next_banking_day(day)
    for _ in range(n):
        day = next_banking_day(day)
    return day


def banking_days_between(start: date, end: date) -> int:
    """The number of banking days in ``(start, end]``; negative when ``end`` is before ``start``."""
    if end < start:
        return -banking_days_between(end, start)
    # Weekdays in (start, end] by whole weeks plus the leftover days, then minus the holidays
    # that close a weekday in that range: constant work per year instead of per day.
    days = (end - start).days
    weeks, rest = divmod(days, 7)
    count = weeks * 5
    weekday = start.weekday()
    for _ in range(rest):
        weekday = (weekday + 1) % 7
        if weekday < _SATURDAY:
            count += 1
    for year in range(start.year, end.year + 1):
        count -= sum(1 for holiday in _weekday_holidays(year) if start < holiday <= end)
    return count


def ach_effective_date(due_on: date) -> date:
    """The effective entry date of a debit due on ``due_on``: that day if it is a banking day.

    The rule: a debit due on a banking day is sent with that day as its effective entry date;
    a debit due on a weekend or a Federal Reserve holiday settles on the next banking day after
    the due date (never before it, so the customer is never debited early).
    """
    return due_on if is_banking_day(due_on) else next_banking_day(due_on)


def ach_settles_on(effective: date, days: int = 2) -> date:
    """The day a debit with this effective entry date counts as settled when no return came."""
    # The sandbox and NACHA adapters wait ``days`` banking days after the effective entry date
    # before treating the debit as collected: the NACHA Operating Rules (Article Three, return
    # time limits) make most returns (R01, R02, R03, ...) reach the ODFI by the opening of the
    # second banking day after settlement. Unauthorized returns (R05, R07, R10, R11, R29) may
    # still come up to 60 calendar days later, so "settled" here is not "final".
    return add_banking_days(effective, days)
