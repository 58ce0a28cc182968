"""May this money be presented now? The one check every path goes through before a gateway
call: the batch claim, retries, reconciliation's re-sends and manual pay (DESIGN.md,
"Eligibility at presentment"). Pure functions: the history comes in, a verdict goes out.

The history is that of the money (an installment's presentments and returns, batch or
manual) and of the instrument (the card or bank account, by ``instrument_key``: the gateway's
fingerprint, else its token), never of a ``payment_methods`` row, which a customer can delete
and add again.

- NACHA (Operating Rules 2.12.4): a debit returned R01/R09 may be reinitiated at most twice,
  within 180 days of the original entry's settlement date, for the identical amount of the
  returned entry (2.12.4.3); an unauthorized return (R05, R07, R10, R11, R29, R51) ends
  debits of that account under its authorization; a dead-account return (R02, R03, R04, R16,
  R20) ends debits of that account. The window is checked on the day of presentment.
- Card networks: at most N declined attempts per card in 30 days (Visa 15, Mastercard 35,
  configurable), counting the card's other presentments still without an answer; never again
  after advice never to try again.
- Regulation E (12 CFR 1005.10(d)): an automatic debit whose amount differs from the previous
  one is made only when a notice of that amount went out at least 10 days before, unless the
  lease's customer chose notice only outside a range and the amount is within it. Held back,
  it is planned again for the day the notice becomes timely.
- NACHA account validation (Rules 2.5.17.4, WEB debits): the first live debit of a new bank
  account through a gateway that sends prenotes waits until the account's prenote was filed
  and ``prenote_wait_days`` banking days (at least 3) passed after its effective entry date;
  never when a prenote came back for a closed account or a revoked authorization; not at all
  when the adapter validated the account or the account was debited live before. Held back,
  it is planned again for the day the prenote is old enough.
- The two-strike stop (CFPB payment rule for covered loans, 12 CFR 1041.7-1041.8, which many
  lessors apply as good practice): after N (default 2) consecutive failed automatic
  presentments of a lease's money to one card or account, no automatic presentment to it
  until the customer authorizes it again through the portal. Manual payments are the
  customer's own request and are not stopped.
- Promises to pay: from the making of a promise (open, or kept before its date), automatic
  presentments of its lease's money pause until the promise's ``resume_on`` (its date; the
  day after when the engine collects the promised amount on that date). Held back, the
  money is planned again for that day.
  The promise's own collection is a payment the customer authorized for that amount and
  date (made through manual pay), not an automatic presentment, so it is not paused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from collector.calendar import ach_effective_date, add_banking_days, next_banking_day
from collector.domain import MethodKind
from collector.policy import (
    DEAD_ACCOUNT_RETURNS,
    DEFAULT_CARD_RULES,
    MAX_PRENOTES,
    MAX_REINITIATIONS,
    REINITIATION_WINDOW_DAYS,
    UNAUTHORIZED_RETURNS,
    CardRetryRules,
)

# Refusal reasons: a closed set, kept on the attempt (outcome_code) and counted by reason.
AUTHORIZATION_REVOKED = "authorization_revoked"
ACCOUNT_CLOSED = "account_closed"
REINITIATIONS_EXHAUSTED = "reinitiations_exhausted"
REINITIATION_WINDOW_PASSED = "reinitiation_window_passed"
REINITIATION_AMOUNT_DIFFERS = "reinitiation_amount_differs"
CARD_NEVER_RETRY = "card_never_retry"
CARD_RETRY_CAP = "card_retry_cap"
DEBIT_NOTICE_REQUIRED = "debit_notice_required"
# Regulation E 1005.10(d)(1): notice of a varying debit at least 10 days before it is made.
VARYING_DEBIT_NOTICE_DAYS = 10
TWO_STRIKE_STOP = "two_strike_stop"
PRENOTE_PENDING = "prenote_pending"
PRENOTE_RETURNED = "prenote_returned"
PROMISE_OPEN = "promise_open"

REFUSAL_REASONS = frozenset(
    {
        PRENOTE_PENDING,
        PRENOTE_RETURNED,
        AUTHORIZATION_REVOKED,
        ACCOUNT_CLOSED,
        REINITIATIONS_EXHAUSTED,
        REINITIATION_WINDOW_PASSED,
        REINITIATION_AMOUNT_DIFFERS,
        CARD_NEVER_RETRY,
        CARD_RETRY_CAP,
        DEBIT_NOTICE_REQUIRED,
        TWO_STRIKE_STOP,
        PROMISE_OPEN,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Presentation:
    """Money about to be presented for one installment under one attempt."""

    attempt_id: int
    installment_id: int
    method_kind: MethodKind
    brand: str | None
    amount_cents: int  # the whole entry's: a manual payment's one debit may cover several
    as_of: date  # the business date of the presentment
    automatic: bool = False  # a batch or retry presentment (not a customer's manual payment)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentHistory:
    """What the rules need to know of a card or bank account."""

    declines_30d: int = 0  # declined attempts with as_of in the 30 days before the presentment
    unresolved_before: int = 0  # earlier attempts on it still without an answer
    never_retry: bool = False  # a decline carried advice never to try again
    unauthorized_return: bool = False
    dead_account_return: bool = False
    # Consecutive failed automatic presentments of this lease's money to it since its latest
    # authorization (counted up to the stop's limit).
    strikes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MoneyLine:
    """One journal line of an installment's money on one bank account: a presentment, or a
    return (before or after settlement) of one."""

    id: int  # journal order
    attempt_id: int
    returned: bool  # False: presented
    nsf: bool  # for a return: R01/R09
    amount_cents: int  # the whole entry's (its attempt's), not this installment's share
    as_of: date
    sent: bool = True  # False: refused, declined or not taken: no entry reached the bank


@dataclass(frozen=True, slots=True, kw_only=True)
class NsfHistory:
    """An installment's money after its first NSF return on one account."""

    original_on: date  # business date of the original entry that came back NSF
    returned_cents: int  # the amount of the latest NSF-returned entry
    reinitiations: int  # presentments made since the first NSF return


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeFacts:
    """What Regulation E's notice rule needs to know of an automatic debit's amount."""

    scheduled_cents: int  # the installment's amount, as the agreement scheduled it
    previous_cents: int | None  # the lease's previous automatic debit, if any
    range_min_cents: int | None = None  # the customer's range: notice only outside it
    range_max_cents: int | None = None
    notified_on: date | None = None  # the earliest notice of this amount for this money


@dataclass(frozen=True, slots=True, kw_only=True)
class PrenoteFacts:
    """What NACHA's account validation needs to know of a bank debit's account, for a gateway
    that sends prenotes."""

    validated: bool = False  # the adapter said so when the method was added
    debited_before: bool = False  # a live entry of another attempt reached the bank
    closed_code: str | None = None  # a prenote came back for a closed account or no authority
    returned: int = 0  # prenotes returned for any reason
    requested_on: date | None = None  # the open prenote's business date (None: none open)
    effective_on: date | None = None  # its file's effective entry date, once filed
    written: bool = False  # its file is in the outbox


def prenote_refusal(as_of: date, facts: PrenoteFacts, *, wait_days: int) -> Refused | None:
    """Why a live debit of this account may not be presented on ``as_of`` yet (with the day
    it may), or None when its account is validated."""
    if facts.closed_code is not None:
        if facts.closed_code in UNAUTHORIZED_RETURNS:
            return Refused(AUTHORIZATION_REVOKED)
        return Refused(ACCOUNT_CLOSED)
    if facts.validated or facts.debited_before:
        return None
    if facts.requested_on is None:
        if facts.returned >= MAX_PRENOTES:
            return Refused(PRENOTE_RETURNED)
        # The pass sends one today: its file takes effect on the next banking day at best.
        return Refused(
            PRENOTE_PENDING, retry_on=add_banking_days(next_banking_day(as_of), wait_days)
        )
    if facts.written and facts.effective_on is not None:
        effective = facts.effective_on
    else:
        # Not in a written file yet: the earliest date its file can carry.
        effective = max(ach_effective_date(facts.requested_on), next_banking_day(as_of))
    ready_on = add_banking_days(effective, wait_days)
    if not facts.written or as_of < ready_on:
        return Refused(PRENOTE_PENDING, retry_on=ready_on)
    return None


def debit_varies(amount_cents: int, facts: NoticeFacts) -> bool:
    """Does this debit's amount differ from the previous one (or, for the first, from the
    scheduled amount)?"""
    previous = facts.previous_cents if facts.previous_cents is not None else facts.scheduled_cents
    return amount_cents != previous


def notice_required(amount_cents: int, facts: NoticeFacts) -> bool:
    """Must a notice of this amount go out 10 days ahead: it varies, and is not within the
    range the customer chose to hear of only when outside it."""
    if not debit_varies(amount_cents, facts):
        return False
    if facts.range_min_cents is not None and facts.range_max_cents is not None:
        return not facts.range_min_cents <= amount_cents <= facts.range_max_cents
    return True


@dataclass(frozen=True, slots=True)
class Eligible:
    """Present it; ``reinitiation``: it is a NACHA reinitiation ("RETRY PYMT")."""

    reinitiation: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """Do not present it, for ``reason`` (one of REFUSAL_REASONS); ``retry_on``: the date it
    may be presented after all (a notice held it back), else no automatic attempt."""

    reason: str
    retry_on: date | None = None


Verdict = Eligible | Refused


def nsf_history(lines: Sequence[MoneyLine]) -> NsfHistory | None:
    """Read an installment's lines on one account: None when none came back NSF."""
    ordered = sorted(lines, key=lambda line: line.id)
    first_return = next((line for line in ordered if line.returned and line.nsf), None)
    if first_return is None:
        return None
    presented = {line.attempt_id: line for line in ordered if not line.returned}
    original = presented.get(first_return.attempt_id)
    latest_return = [line for line in ordered if line.returned and line.nsf][-1]
    return NsfHistory(
        original_on=original.as_of if original is not None else first_return.as_of,
        returned_cents=latest_return.amount_cents,
        reinitiations=sum(
            1 for line in presented.values() if line.id > first_return.id and line.sent
        ),
    )


def check(
    presentation: Presentation,
    *,
    instrument: InstrumentHistory,
    nsf: NsfHistory | None = None,
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
    notice: NoticeFacts | None = None,
    prenote: PrenoteFacts | None = None,
    paused_until: date | None = None,
) -> Verdict:
    """May this money be presented to this instrument on its business date? ``notice``: the
    facts of an automatic debit's notice (None: a payment the customer makes now);
    ``prenote``: the account's validation facts (None: its gateway sends no prenotes);
    ``paused_until``: the lease's promise to pay pauses automatic presentments before then."""
    if presentation.automatic and paused_until is not None and presentation.as_of < paused_until:
        return Refused(PROMISE_OPEN, retry_on=paused_until)
    if notice is not None and notice_required(presentation.amount_cents, notice):
        timely_from = (notice.notified_on or presentation.as_of) + timedelta(
            days=VARYING_DEBIT_NOTICE_DAYS
        )
        if presentation.as_of < timely_from:
            return Refused(DEBIT_NOTICE_REQUIRED, retry_on=timely_from)
    if presentation.method_kind is MethodKind.ACH:
        if prenote is not None:
            held = prenote_refusal(
                presentation.as_of, prenote, wait_days=card_rules.prenote_wait_days
            )
            if held is not None:
                return held
        return _check_debit(
            presentation,
            instrument=instrument,
            nsf=nsf,
            strike_limit=card_rules.two_strike_limit,
        )
    if instrument.never_retry:
        return Refused(CARD_NEVER_RETRY)
    if _struck_out(presentation, instrument, card_rules.two_strike_limit):
        return Refused(TWO_STRIKE_STOP)
    recent = instrument.declines_30d + instrument.unresolved_before
    if recent >= card_rules.cap(presentation.brand):
        return Refused(CARD_RETRY_CAP)
    return Eligible()


def _struck_out(presentation: Presentation, instrument: InstrumentHistory, limit: int) -> bool:
    return presentation.automatic and limit > 0 and instrument.strikes >= limit


def _check_debit(
    presentation: Presentation,
    *,
    instrument: InstrumentHistory,
    nsf: NsfHistory | None,
    strike_limit: int = 0,
) -> Verdict:
    if instrument.unauthorized_return:
        return Refused(AUTHORIZATION_REVOKED)
    if instrument.dead_account_return:
        return Refused(ACCOUNT_CLOSED)
    if _struck_out(presentation, instrument, strike_limit):
        return Refused(TWO_STRIKE_STOP)
    if nsf is None:
        return Eligible()
    if nsf.reinitiations >= MAX_REINITIATIONS:
        return Refused(REINITIATIONS_EXHAUSTED)
    if presentation.as_of > nsf.original_on + timedelta(days=REINITIATION_WINDOW_DAYS):
        return Refused(REINITIATION_WINDOW_PASSED)
    if presentation.amount_cents != nsf.returned_cents:
        return Refused(REINITIATION_AMOUNT_DIFFERS)
    return Eligible(reinitiation=True)


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """One attempt's verdict from those of the installments it covers: refused if any is (the
    first reason), a reinitiation if any is."""
    for verdict in verdicts:
        if isinstance(verdict, Refused):
            return verdict
    return Eligible(reinitiation=any(isinstance(v, Eligible) and v.reinitiation for v in verdicts))


__all__ = [
    "DEAD_ACCOUNT_RETURNS",
    "REFUSAL_REASONS",
    "Eligible",
    "InstrumentHistory",
    "MoneyLine",
    "NoticeFacts",
    "NsfHistory",
    "PrenoteFacts",
    "Presentation",
    "Refused",
    "Verdict",
    "check",
    "combine",
    "debit_varies",
    "notice_required",
    "nsf_history",
    "prenote_refusal",
]
