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

from collector.calendar import ach_effective_date
from collector.domain import AttemptStatus
from collector.gateways.base import Declined, DeclineKind, InDoubt, Outcome, Processing, Succeeded

NOT_TAKEN_CODE = "not_taken"
"""Outcome code of an in-doubt attempt that the gateway, asked, has no record of."""

# Advice that forbids any further attempt on the card: Mastercard merchant advice codes 03
# ("do not try again") and 21 ("payment cancellation"), Visa's category 1 ("issuer will never
# approve", passed on by gateways as do_not_try_again). Retrying after these draws network
# fines (Mastercard Excessive Retry; Visa Core Rules, reattempt rules of April 2021).
NEVER_RETRY_ADVICE = frozenset({"03", "21", "do_not_try_again"})

# Declines that need the customer (a 3-D Secure challenge): not retried automatically, and the
# method stays usable: the customer completes it through the portal's manual pay.
NEEDS_CUSTOMER_CODES = frozenset({"authentication_required"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CardRetryRules:
    """The card networks' caps on declined attempts per card within 30 days."""

    # Visa: at most 15 reattempts of a declined transaction per card in 30 days (Visa Core
    # Rules, "Excessive Reattempts", in force since 2021-04-17, decline categories 2 to 4).
    visa_max_declines_30d: int = 15
    # Mastercard: at most 35 attempts per card in 30 days under the Excessive Retry program
    # (Transaction Processing Excellence, 2022); 10 in 24 hours, which our day-spaced
    # schedule never approaches.
    mastercard_max_declines_30d: int = 35
    # Other brands: hold them to Visa's, the stricter cap.
    other_max_declines_30d: int = 15
    # The two-strike stop (CFPB payment rule, 12 CFR 1041.8): consecutive failed automatic
    # presentments of a lease's money to one card or account before the engine waits for a
    # new authorization; 0 turns it off. It holds for bank accounts too: this is the rule set
    # every presentment path is handed, so it travels with the networks' caps.
    two_strike_limit: int = 2
    # NACHA account validation (Rules 2.5.17.4 for WEB debits): the gateways whose new bank
    # accounts get a prenote, and the banking days from its effective entry date to the first
    # live debit (at least 3). Here for the same reason as the two-strike stop: every
    # presentment path is handed this rule set.
    prenote_gateways: frozenset[str] = frozenset()
    prenote_wait_days: int = 3

    def cap(self, brand: str | None) -> int:
        """The 30-day cap of declined attempts for a card of this brand."""
        name = (brand or "").strip().lower()
        if name == "visa":
            return self.visa_max_declines_30d
        if name in ("mastercard", "master card", "mc"):
            return self.mastercard_max_declines_30d
        return self.other_max_declines_30d


DEFAULT_CARD_RULES = CardRetryRules()


@dataclass(frozen=True, slots=True, kw_only=True)
class CardHistory:
    """What the card networks' caps need to know of a card: its brand, and its declined
    attempts in the last 30 days, this one included."""

    brand: str | None
    declines_30d: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The new state of an attempt and its payment method, and the installment's next
    collection date; what the answer does to the money follows from ``attempt_status``
    (:func:`collector.domain.ending_of`), applied by the journal."""

    attempt_status: AttemptStatus
    next_attempt_on: date | None
    disable_method: bool = False
    code: str | None = None
    message: str | None = None
    gateway_ref: str | None = None
    network_advice: str | None = None


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
    card: CardHistory | None = None,
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
) -> Decision:
    """Map one gateway answer to the attempt's, the installment's and the method's new state.

    ``card`` is given for card charges: a soft decline is retried only while the card's
    declines in 30 days stay under its network's cap.
    """
    match outcome:
        case Succeeded(gateway_ref=ref, code=code):
            return Decision(
                attempt_status=AttemptStatus.SUCCEEDED,
                next_attempt_on=None,
                code=code,
                gateway_ref=ref,
            )
        case Processing(gateway_ref=ref, code=code):
            return Decision(
                attempt_status=AttemptStatus.PROCESSING,
                next_attempt_on=None,
                code=code,
                gateway_ref=ref,
            )
        case Declined(code=code, message=message, gateway_ref=ref):
            needs_customer = code in NEEDS_CUSTOMER_CODES
            # Never retry this method after a hard decline or advice never to try again: it
            # waits for the customer to set a new primary one.
            never_again = not needs_customer and (
                outcome.kind is DeclineKind.HARD or outcome.network_advice in NEVER_RETRY_ADVICE
            )
            retry_on = None
            if not (needs_customer or never_again):
                retry_on = next_retry_on(as_of=as_of, attempt_no=attempt_no, retry_days=retry_days)
                if card is not None and card.declines_30d >= card_rules.cap(card.brand):
                    retry_on = None
            return Decision(
                attempt_status=AttemptStatus.DECLINED,
                next_attempt_on=retry_on,
                disable_method=never_again,
                code=code,
                message=message,
                gateway_ref=ref,
                network_advice=outcome.network_advice,
            )
        case InDoubt(reason=reason):
            # Unknown is never a decline: the installment stays claimed until a lookup answers.
            return Decision(
                attempt_status=AttemptStatus.IN_DOUBT,
                next_attempt_on=None,
                code=reason,
            )
    raise AssertionError(f"unhandled outcome {outcome!r}")  # pragma: no cover


def decide_not_taken(*, attempt_no: int, as_of: date, retry_days: Sequence[int]) -> Decision:
    """An in-doubt attempt the gateway has no record of: nothing was charged, retry later."""
    return Decision(
        attempt_status=AttemptStatus.FAILED,
        next_attempt_on=next_retry_on(as_of=as_of, attempt_no=attempt_no, retry_days=retry_days),
        code=NOT_TAKEN_CODE,
        message="the gateway has no charge under this idempotency key",
    )


def decide_refused(reason: str, retry_on: date | None = None) -> Decision:
    """The eligibility check refused the presentment: nothing was sent, and no automatic
    attempt is planned (the customer's new method or a manual payment is the way out), unless
    the refusal names the day it may be presented after all (``retry_on``: a notice that
    becomes timely, a promise's pause that ends)."""
    return Decision(
        attempt_status=AttemptStatus.REFUSED,
        next_attempt_on=retry_on,
        code=reason,
        message=f"refused before presentment: {reason}",
    )


# NACHA return reason codes, grouped as the rules treat them.
# R01 insufficient funds, R09 uncollected funds: may be reinitiated, at most twice, within 180
# days of the original entry's settlement (NACHA Operating Rules, Subsection 2.12.4).
NSF_RETURNS = frozenset({"R01", "R09"})
# Administrative returns (account closed, no account, invalid account number) count toward
# NACHA's 3% administrative return rate threshold; R16 (account frozen) and R20 (non-transaction
# account) also mean this account cannot be debited.
ADMINISTRATIVE_RETURNS = frozenset({"R02", "R03", "R04"})
# Returns after which the account is never debited again, under any method row: read by the
# eligibility check's history (collector.db.history), which refuses it as account_closed.
DEAD_ACCOUNT_RETURNS = ADMINISTRATIVE_RETURNS | {"R16", "R20"}
# Unauthorized returns count toward the 0.5% unauthorized rate threshold; the authorization
# behind the debit is void: never debit the account again under it (Subsection 2.12.4 forbids
# reinitiating them).
UNAUTHORIZED_RETURNS = frozenset({"R05", "R07", "R10", "R11", "R29", "R51"})
# A prenote returned with one of these ends debits of the account before any live one: a
# closed, missing or invalid account (R02, R03, R04; also frozen R16, non-transaction R20), or
# the customer's word that the debits are not authorized. Any other code (an RDFI or routing
# problem, R13, R28 ...) leaves the account unvalidated: the next pass sends a new prenote, up
# to MAX_PRENOTES in all, and an operator sees each such return (needs_attention).
PRENOTE_CLOSING_RETURNS = DEAD_ACCOUNT_RETURNS | UNAUTHORIZED_RETURNS
MAX_PRENOTES = 2
MAX_REINITIATIONS = 2
REINITIATION_WINDOW_DAYS = 180


@dataclass(frozen=True, slots=True, kw_only=True)
class ReturnDecision:
    """What a returned debit does to its installment and its payment method."""

    category: str  # nsf | administrative | unauthorized | other
    next_attempt_on: date | None
    disable_method: bool


def return_category(code: str) -> str:
    """The category a return reason code counts under for NACHA's return-rate thresholds."""
    if code in NSF_RETURNS:
        return "nsf"
    if code in ADMINISTRATIVE_RETURNS:
        return "administrative"
    if code in UNAUTHORIZED_RETURNS:
        return "unauthorized"
    return "other"


def decide_return(
    code: str,
    *,
    nsf_returns_before: int,
    original_on: date,
    as_of: date,
    retry_days: Sequence[int],
) -> ReturnDecision:
    """Decide a return: reinitiate an NSF return at most twice within 180 days of the original
    entry, on a banking day; disable the account for a dead account or a revoked
    authorization; anything else waits for the customer."""
    category = return_category(code)
    if code in NSF_RETURNS:
        reinitiation = nsf_returns_before + 1  # this return asks for reinitiation number n
        retry_on: date | None = None
        if reinitiation <= MAX_REINITIATIONS:
            days = retry_days[min(reinitiation, len(retry_days)) - 1] if retry_days else 1
            candidate = ach_effective_date(as_of + timedelta(days=days))
            if candidate <= original_on + timedelta(days=REINITIATION_WINDOW_DAYS):
                retry_on = candidate
        return ReturnDecision(category=category, next_attempt_on=retry_on, disable_method=False)
    # Any other return: no automatic debit, and the method is disabled so nothing re-debits it
    # unnoticed. A dead account (DEAD_ACCOUNT_RETURNS) or a revoked authorization
    # (UNAUTHORIZED_RETURNS) also ends debits of the account itself, whatever method row names
    # it later: the eligibility check refuses them by instrument. Stop payment and the rest
    # wait for the customer, who may authorize the account again.
    return ReturnDecision(category=category, next_attempt_on=None, disable_method=True)


def primary_change_warning(
    next_due_on: date | None, *, today: date, notice_days: int
) -> str | None:
    """The warning for a primary change made less than ``notice_days`` days before a due date."""
    if next_due_on is None or (next_due_on - today).days >= notice_days:
        return None
    return (
        f"The collection due on {next_due_on.isoformat()} is less than {notice_days} days away"
        " and may still be taken from the previous payment method."
    )
