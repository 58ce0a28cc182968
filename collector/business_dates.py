"""Which business dates the engine works for: one rule for every entry point that takes one.

A pass collects everything due on or before its date, so a pass dated ahead of today takes
money early: ``collector run --date 2027-12-31`` would have collected a year of installments at
once. And every date the engine works for has days added to it (retry dates, ACH effective and
settlement dates, the holiday calendar), which must stay inside what the calendar covers:
``--date 9999-12-31`` sent charges and then crashed on a date overflow.

So a business date is accepted when

* it lies in ``[EARLIEST, LATEST]``: the Federal Reserve calendar's years (1999 to 2100) less a
  year at the end, room for every date the engine derives from it (a retry is at most
  ``MAX_RETRY_DAYS`` ahead, a settlement a few banking days); and
* it is not after today in the lessor's zone, unless the caller allows days ahead (the
  command line's ``--allow-future-date``: at most ``MAX_DAYS_AHEAD``).

Pure: ``today`` comes in from the entry point, which reads the clock.
"""

from __future__ import annotations

from datetime import date

from collector.calendar import FIRST_YEAR, LAST_YEAR
from collector.exceptions import DateOutOfRange

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_DAYS_AHEAD",
    "MAX_RETRY_DAYS",
    "SEED_MAX_DAYS_AHEAD",
    "check_business_date",
    "check_in_range",
]

EARLIEST = date(FIRST_YEAR, 1, 1)
"""The first business date: the first day the banking calendar covers."""
LATEST = date(LAST_YEAR - 1, 12, 31)
"""The last business date: a year before the calendar ends, so that every date derived from it
(retries, effective and settlement dates, reinitiation windows) is one the calendar covers."""
MAX_DAYS_AHEAD = 31
"""The furthest ahead of today ``--allow-future-date`` lets a pass run."""
SEED_MAX_DAYS_AHEAD = 366
"""The furthest ahead of today demo data may fall due (seeding collects nothing)."""
MAX_RETRY_DAYS = 60
"""The longest wait before an automatic retry (``COLLECTOR_SOFT_RETRY_DAYS``), which keeps
every retry date of an accepted business date inside the calendar."""


def check_in_range(day: date, *, what: str = "business date") -> date:
    """Return ``day`` when it lies within the dates the engine works for; else raise
    DateOutOfRange saying which end it is past."""
    if day < EARLIEST:
        raise DateOutOfRange(
            f"{what} {day.isoformat()} is before {EARLIEST.isoformat()}, the first day the"
            " banking calendar covers"
        )
    if day > LATEST:
        raise DateOutOfRange(
            f"{what} {day.isoformat()} is after {LATEST.isoformat()}, the last business date"
            f" the engine accepts (its banking calendar ends in {LAST_YEAR})"
        )
    return day


def check_business_date(
    day: date,
    *,
    today: date,
    days_ahead: int = 0,
    what: str = "business date",
    zone: str = "",
    hint: str = "",
) -> date:
    """Return ``day`` when the engine may work for it, ``today`` being the lessor's today (in
    ``zone``, named in the message) and ``days_ahead`` how far past today the caller allows;
    else raise DateOutOfRange saying why. ``hint`` ends the message of a date too far ahead
    (e.g. which flag allows more)."""
    check_in_range(today, what="today's date")  # a clock decades off is no business date
    check_in_range(day, what=what)
    ahead = (day - today).days
    if ahead <= days_ahead:
        return day
    where = f"{today.isoformat()} in {zone}" if zone else today.isoformat()
    message = f"{what} {day.isoformat()} is {ahead} day(s) after today ({where})"
    if days_ahead:
        message += f", more than the {days_ahead} allowed"
    raise DateOutOfRange(message + (f"; {hint}" if hint else ""))
