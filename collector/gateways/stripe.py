"""Stripe card and ACH adapters, on the official ``stripe`` SDK's async interface.

Each charge is one PaymentIntent, created and confirmed off-session in a single request on the
customer's saved payment method. For Stripe, ``payment_methods.token`` holds
``"cus_XXX:pm_YYY"``: the Customer id and the PaymentMethod id saved to it (Stripe requires both
when the method is attached to a customer). A token of any other shape is declined hard as
``invalid_token`` without calling Stripe.

Exactly-once: the attempt's idempotency key is sent as Stripe's ``Idempotency-Key``, so a re-send
with the same key (the SDK's own network retries included) returns the first answer instead of
charging again. Stripe keeps keys for 24 hours only ("Idempotent requests", Stripe API
reference), so every PaymentIntent also carries the key in its metadata
(``collector_attempt_key``) and :meth:`lookup` finds it there through the Search API, never by
re-sending (DESIGN.md, "The exactly-once protocol").

Search is eventually consistent: Stripe documents that new data is searchable "in less than a
minute" under normal conditions and up to an hour behind during outages (SDK docstring of
``PaymentIntentService.search``). A lookup made right after a timeout can answer None for a
charge that was taken; see :attr:`StripeGateway.lookup_lag`.

Answers map to outcomes as follows; an unknown answer is never a decline:

- 200 with status ``succeeded`` → Succeeded, ``processing`` → Processing (ACH, and rarely cards);
  ``requires_action`` → Declined (the customer must act); ``canceled`` → Declined hard.
  Both adapters are settlement sources: a payment left Processing is followed by
  ``settlement()`` (a debit until it settles or is returned, a card until it succeeds or is
  declined).
- A lookup that finds a bank debit failed tells a return from a refusal by its latest Charge:
  a debit that was processing (its pending credit reversed) is answered Processing, so the
  settlement poll records the return with its R code; one refused at submission is Declined.
- 402 (the SDK's ``CardError``, also raised for bank debits) → Declined, kind from a table.
- 429 → retried here a bounded number of times, then InDoubt("rate_limited").
- timeouts, lost connections, 5xx, 409 (same key still in flight) → InDoubt.
- 400 ``resource_missing`` on the customer or payment method (detached, deleted) → Declined hard.
- 401, 403 and other malformed requests → GatewayError: our configuration or our bug, never the
  customer's, so the engine logs it and treats the attempt as in doubt.

Nothing here logs: not the API key, not the tokens, not Stripe's responses. Leave the SDK's own
logging (``STRIPE_LOG``) off in production: at debug level it prints request bodies, which
carry the customer and payment method ids.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any, ClassVar, Final, TypeVar

import anyio
import httpx
import stripe
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from stripe.params import PaymentIntentCreateParams

from collector.domain import MethodKind
from collector.exceptions import GatewayConfigError, GatewayError
from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    GatewayContext,
    InDoubt,
    Outcome,
    Processing,
    Returned,
    Settlement,
    Succeeded,
)

DEFAULT_BASE_URL: Final = "https://api.stripe.com"
# Under the engine's default gateway timeout (30 s), so the adapter answers "timeout" itself.
DEFAULT_TIMEOUT_S: Final = 20.0
# The SDK re-sends after a connection error, a 409 or a 5xx under the same idempotency key,
# which Stripe answers from its idempotency store: safe, and often turns "unknown" into an answer.
DEFAULT_MAX_NETWORK_RETRIES: Final = 1
DEFAULT_MAX_RATE_RETRIES: Final = 3
# The longest all 429 back-offs of one call may sleep together: well under the engine's gateway
# timeout, so a rate-limited charge ends as InDoubt("rate_limited") rather than a cancellation.
RATE_RETRY_BUDGET_S: Final = 5.0
RATE_BACKOFF_BASE_S: Final = 0.5

ATTEMPT_KEY: Final = "collector_attempt_key"
"""The metadata field every PaymentIntent carries the attempt's idempotency key in."""

API_KEY_SETTING: Final = "COLLECTOR_STRIPE_API_KEY"

INVALID_TOKEN: Final = "invalid_token"
INVALID_AMOUNT: Final = "invalid_amount"
AUTHENTICATION_REQUIRED: Final = "authentication_required"
CANCELED: Final = "canceled"

# A Customer id and a PaymentMethod id: Stripe ids are a prefix and an underscore, then letters
# and digits (test-mode method ids such as pm_card_visa add underscores).
_TOKEN: Final = re.compile(r"(cus_[A-Za-z0-9_]+):(pm_[A-Za-z0-9_]+)")

# Card decline codes (Stripe's "Decline codes" reference) by what a later retry can achieve.
# SOFT: the issuer may approve later (funds, limits, a temporary fault). HARD: the card itself
# is unusable until the customer acts (lost, stolen, closed, revoked, wrong details), and
# retrying draws network penalties (Visa decline category 1, Mastercard advice code 03).
CARD_DECLINES: Final[Mapping[str, DeclineKind]] = {
    "insufficient_funds": DeclineKind.SOFT,
    "try_again_later": DeclineKind.SOFT,
    "processing_error": DeclineKind.SOFT,
    "issuer_not_available": DeclineKind.SOFT,
    "reenter_transaction": DeclineKind.SOFT,
    "approve_with_id": DeclineKind.SOFT,
    "call_issuer": DeclineKind.SOFT,
    "card_velocity_exceeded": DeclineKind.SOFT,
    "withdrawal_count_limit_exceeded": DeclineKind.SOFT,
    "invalid_amount": DeclineKind.SOFT,
    "duplicate_transaction": DeclineKind.SOFT,
    "no_action_taken": DeclineKind.SOFT,
    "do_not_honor": DeclineKind.SOFT,
    "generic_decline": DeclineKind.SOFT,
    "card_declined": DeclineKind.SOFT,
    "stolen_card": DeclineKind.HARD,
    "lost_card": DeclineKind.HARD,
    "pickup_card": DeclineKind.HARD,
    "expired_card": DeclineKind.HARD,
    "incorrect_number": DeclineKind.HARD,
    "invalid_number": DeclineKind.HARD,
    "incorrect_cvc": DeclineKind.HARD,
    "invalid_cvc": DeclineKind.HARD,
    "invalid_expiry_month": DeclineKind.HARD,
    "invalid_expiry_year": DeclineKind.HARD,
    "invalid_account": DeclineKind.HARD,
    "card_not_supported": DeclineKind.HARD,
    "currency_not_supported": DeclineKind.HARD,
    "restricted_card": DeclineKind.HARD,
    "security_violation": DeclineKind.HARD,
    "fraudulent": DeclineKind.HARD,
    "merchant_blacklist": DeclineKind.HARD,
    "revocation_of_authorization": DeclineKind.HARD,
    "revocation_of_all_authorizations": DeclineKind.HARD,
    "stop_payment_order": DeclineKind.HARD,
    "new_account_information_available": DeclineKind.HARD,
    "do_not_try_again": DeclineKind.HARD,
    "transaction_not_allowed": DeclineKind.HARD,
    "not_permitted": DeclineKind.HARD,
    "service_not_allowed": DeclineKind.HARD,
    "testmode_decline": DeclineKind.HARD,
    # Needs the customer (a 3-D Secure challenge); the policy treats this code on its own.
    AUTHENTICATION_REQUIRED: DeclineKind.HARD,
}
# A decline code Stripe adds later is retried within limits: Visa's reattempt rules put generic
# and unknown declines in the categories that may be retried (at most 15 times in 30 days), and
# the policy enforces the networks' caps and any "do not try again" advice on every soft decline.
CARD_DECLINE_DEFAULT: Final = DeclineKind.SOFT

# A bank debit refused when it is submitted (HTTP 402: a blocked or unusable account) is hard
# unless it is for funds: NACHA requires the originator to correct the account or obtain a new
# authorization before debiting again after any other failure, and Stripe blocks such accounts
# until then (Stripe, "Blocked bank accounts"). It never blocks for insufficient funds.
ACH_DECLINES: Final[Mapping[str, DeclineKind]] = {
    "insufficient_funds": DeclineKind.SOFT,
}
ACH_DECLINE_DEFAULT: Final = DeclineKind.HARD

# Stripe's failure code of a returned ACH debit (last_payment_error.code) → the NACHA return
# reason code it stands for (NACHA Operating Rules, Appendix Four, "Return Entries"). Stripe
# does not expose the raw R code on a PaymentIntent; these are the codes whose meaning matches
# one return reason. debit_not_authorized covers R05/R07/R10/R29 alike; R10 is chosen as the
# consumer case, and every one of them forbids a new debit without a new authorization.
# bank_account_restricted is Stripe's "savings or other non-transaction account", R20.
ACH_RETURN_CODES: Final[Mapping[str, str]] = {
    "insufficient_funds": "R01",
    "account_closed": "R02",
    "bank_account_closed": "R02",
    "no_account": "R03",
    "invalid_account_number": "R04",
    "debit_not_authorized": "R10",
    "bank_ownership_changed": "R12",
    "account_frozen": "R16",
    "bank_account_frozen": "R16",
    "bank_account_restricted": "R20",
}
UNMAPPED_RETURN_CODE: Final = "R??"
"""The return code of a failure Stripe names with a code not in ACH_RETURN_CODES.

Deliberately not a NACHA code: no rule that keys on a real one (representment of R01/R09 at most
twice) can match it, so an unknown return is never re-presented, and ``gateway_code`` keeps
Stripe's own code for the operator."""

_T = TypeVar("_T")


class StripePaymentError(BaseModel):
    """A failed payment as Stripe reports it: a PaymentIntent's ``last_payment_error``, or the
    ``error`` body of a failed request."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str | None = None
    code: str | None = None
    decline_code: str | None = None
    advice_code: str | None = None
    network_advice_code: str | None = None
    network_decline_code: str | None = None
    message: str | None = None


class StripePaymentIntent(BaseModel):
    """The few PaymentIntent fields the adapters read; everything else is ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    status: str
    created: int = 0
    # What the payment is for: integer cents in the currency's smallest unit, and the currency
    # (ISO 4217, lower case). Stripe always sends both; a webhook event is checked against them.
    amount: int | None = None
    currency: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    payment_method_types: list[str] = Field(default_factory=list)
    last_payment_error: StripePaymentError | None = None
    cancellation_reason: str | None = None
    # The id of the Charge its latest confirmation made (an object only when expanded); None
    # until a confirmation was attempted.
    latest_charge: str | dict[str, Any] | None = None

    @property
    def is_bank_debit(self) -> bool:
        """Whether this is an ACH Direct Debit."""
        return "us_bank_account" in self.payment_method_types

    @property
    def method_kind(self) -> MethodKind | None:
        """Which kind of payment method this is: a bank debit, a card, or None (another)."""
        if self.is_bank_debit:
            return MethodKind.ACH
        if "card" in self.payment_method_types:
            return MethodKind.CARD
        return None

    @property
    def latest_charge_id(self) -> str | None:
        """The id of the latest Charge, expanded or not."""
        charge = self.latest_charge
        if isinstance(charge, dict):
            found = charge.get("id")
            return found if isinstance(found, str) else None
        return charge


class StripeCharge(BaseModel):
    """The few Charge fields that tell whether a failed bank debit was ever submitted."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    status: str
    balance_transaction: str | dict[str, Any] | None = None
    failure_balance_transaction: str | dict[str, Any] | None = None
    failure_code: str | None = None

    @property
    def was_processing(self) -> bool:
        """Whether the money was counted pending before the charge failed.

        A bank debit Stripe accepts is credited to the balance as pending at once (its
        ``balance_transaction``); when the bank returns it, Stripe reverses that credit with a
        ``payment_failure_refund`` balance transaction, the charge's
        ``failure_balance_transaction``. A debit refused at submission (a blocked or unusable
        account) never touches the balance, so it has neither.
        """
        return self.balance_transaction is not None or self.failure_balance_transaction is not None


class _ErrorBody(StripePaymentError):
    payment_intent: StripePaymentIntent | None = None


def parse_token(token: str) -> tuple[str, str] | None:
    """The (customer id, payment method id) of a ``"cus_XXX:pm_YYY"`` token; None otherwise."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    return match.group(1), match.group(2)


def search_query(idempotency_key: str) -> str:
    """The Search API query for the PaymentIntents made under this attempt key."""
    # Stripe's search query language: string values in quotes, a quote escaped by a backslash.
    escaped = idempotency_key.replace("\\", "\\\\").replace("'", "\\'")
    return f"metadata['{ATTEMPT_KEY}']:'{escaped}'"


def ach_return_code(stripe_code: str | None) -> str:
    """The NACHA return reason code for Stripe's failure code of a returned debit."""
    return ACH_RETURN_CODES.get(stripe_code or "", UNMAPPED_RETURN_CODE)


def _describe(error: StripePaymentError) -> str:
    # Declined has one free-text field: the network's own codes go there verbatim, so an
    # operator (and a later policy) can read them without a schema change.
    parts = [
        f"{name}={value}"
        for name, value in (
            ("advice_code", error.advice_code),
            ("network_advice_code", error.network_advice_code),
            ("network_decline_code", error.network_decline_code),
        )
        if value
    ]
    if error.message:
        parts.append(error.message)
    return "; ".join(parts)


def settlement_of_intent(intent: StripePaymentIntent) -> Settlement | None:
    """Where the bank debit behind this PaymentIntent stands; None when it is in a state that
    is not a submitted debit (never confirmed, or waiting for the customer)."""
    match intent.status:
        case "succeeded":
            # Stripe moves a debit to succeeded after its settlement timing (about 4 business
            # days); a failure the bank reports after that comes as a dispute, not as a change
            # of status (Stripe, "ACH Direct Debit": ACH transaction failures).
            return Succeeded(gateway_ref=intent.id)
        case "processing":
            return Processing(gateway_ref=intent.id)
        case "requires_payment_method" if intent.last_payment_error is not None:
            # A debit that fails after processing goes back to requires_payment_method with
            # the failure in last_payment_error (Stripe, "ACH Direct Debit": failed payments).
            error = intent.last_payment_error
            return Returned(
                code=ach_return_code(error.code),
                message=error.message or "",
                gateway_ref=intent.id,
                gateway_code=error.code,
            )
        case "canceled":
            return Returned(
                code=UNMAPPED_RETURN_CODE,
                message=intent.cancellation_reason or "",
                gateway_ref=intent.id,
                gateway_code=CANCELED,
            )
    return None


def declined_of(
    error: StripePaymentError,
    gateway_ref: str | None,
    *,
    declines: Mapping[str, DeclineKind],
    decline_default: DeclineKind,
) -> Declined:
    """The decline Stripe's payment error stands for, its kind from ``declines``."""
    code = error.decline_code or error.code or "card_declined"
    if AUTHENTICATION_REQUIRED in (error.code, error.decline_code):
        code = AUTHENTICATION_REQUIRED
    return Declined(
        kind=declines.get(code, decline_default),
        code=code,
        message=_describe(error),
        gateway_ref=gateway_ref,
        # Stripe's advice_code is its reading of the networks' advice across brands
        # (do_not_try_again, try_again_later, confirm_card_data); the raw network code
        # (Mastercard's merchant advice code) stands in where Stripe gives none.
        network_advice=error.advice_code or error.network_advice_code,
    )


def outcome_of_intent(
    intent: StripePaymentIntent,
    *,
    declines: Mapping[str, DeclineKind],
    decline_default: DeclineKind,
    action_code: str,
) -> Outcome:
    """The outcome a PaymentIntent's status stands for; never a decline for a status that
    a confirmed, automatically captured payment does not end in."""
    match intent.status:
        case "succeeded":
            return Succeeded(gateway_ref=intent.id)
        case "processing":
            return Processing(gateway_ref=intent.id)
        case "requires_action":
            # Off-session confirmation should fail instead, but Stripe may still ask for
            # the customer (3-D Secure, or microdeposits on an unverified bank account).
            return Declined(
                kind=DeclineKind.HARD,
                code=action_code,
                message="Stripe needs the customer to act on this payment.",
                gateway_ref=intent.id,
            )
        case "requires_payment_method" if intent.last_payment_error is not None:
            return declined_of(
                intent.last_payment_error,
                intent.id,
                declines=declines,
                decline_default=decline_default,
            )
        case "canceled":
            return Declined(
                kind=DeclineKind.HARD,
                code=CANCELED,
                message=intent.cancellation_reason or "",
                gateway_ref=intent.id,
            )
    # requires_capture, requires_confirmation, or no error: not what a confirmed automatic
    # capture leaves behind. Unknown, so never a decline.
    return InDoubt(reason="unexpected_status")


def card_settlement_of_intent(intent: StripePaymentIntent) -> Settlement | None:
    """Where a card payment Stripe left processing stands: succeeded, still processing, or
    declined exactly as the charge would have answered; None for a status that a confirmed
    card payment does not reach (the outcome is unknown, never a decline)."""
    outcome = outcome_of_intent(
        intent,
        declines=CARD_DECLINES,
        decline_default=CARD_DECLINE_DEFAULT,
        action_code=AUTHENTICATION_REQUIRED,
    )
    return None if isinstance(outcome, InDoubt) else outcome


def _pick(intents: list[StripePaymentIntent]) -> StripePaymentIntent | None:
    # One key should have one PaymentIntent. Should there be several, money taken is what the
    # ledger must not miss: a succeeded one wins, then one in flight, then the newest.
    def rank(intent: StripePaymentIntent) -> tuple[int, int]:
        taken = {"succeeded": 2, "processing": 1}.get(intent.status, 0)
        return taken, intent.created

    return max(intents, key=rank, default=None)


def _intent_of(obj: stripe.StripeObject) -> StripePaymentIntent:
    try:
        return StripePaymentIntent.model_validate(obj.to_dict())
    except ValidationError as exc:
        raise GatewayError("Stripe answered with a PaymentIntent the adapter cannot read") from exc


def _header(exc: stripe.StripeError, name: str) -> str | None:
    # The SDK keeps the HTTP library's headers; look the name up case-insensitively either way.
    for key, value in (exc.headers or {}).items():
        if key.lower() == name:
            return value
    return None


def _retry_after_s(exc: stripe.StripeError) -> float | None:
    value = _header(exc, "retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own back-off
    return seconds if seconds >= 0 else None


def _in_doubt_of(exc: stripe.StripeError) -> InDoubt | None:
    """The InDoubt for an error that leaves the charge unknown; None for any other error."""
    if isinstance(exc, stripe.RateLimitError):
        return InDoubt(reason="rate_limited")
    if isinstance(exc, stripe.APIConnectionError):
        if isinstance(exc.__cause__, httpx.TimeoutException):
            return InDoubt(reason="timeout")
        return InDoubt(reason="connection_error")
    if isinstance(exc, stripe.IdempotencyError):
        # The key was used before with other parameters: something exists under it.
        return InDoubt(reason="idempotency_conflict")
    if isinstance(exc, stripe.APIError):
        status = exc.http_status or 0
        if status == 409:
            # "another in-progress request using this Idempotent Key": the first may yet succeed.
            return InDoubt(reason="idempotency_in_progress")
        if status >= 500:
            return InDoubt(reason="server_error")
        return InDoubt(reason="unexpected_response")
    return None


def _gateway_error(exc: stripe.StripeError, doing: str) -> GatewayError:
    # The code and request id identify the failure; the message may quote request data.
    return GatewayError(
        f"Stripe refused to {doing}: {type(exc).__name__} "
        f"(http {exc.http_status}, code {exc.code}, request {exc.request_id})"
    )


DEFAULT_SETTLEMENT_POLL_AFTER = timedelta(days=1)
# A card payment left processing ends within minutes, not days: polled sooner than a debit.
DEFAULT_CARD_SETTLEMENT_POLL_AFTER = timedelta(minutes=10)


class StripeGateway:
    """What the card and ACH adapters share: the PaymentIntent call, its error mapping, and the
    lookup by attempt key. Build one with :func:`open_stripe_card` or :func:`open_stripe_ach`."""

    payment_method_type: ClassVar[str]
    method_kinds: ClassVar[frozenset[MethodKind]]
    declines: ClassVar[Mapping[str, DeclineKind]]
    decline_default: ClassVar[DeclineKind]
    action_code: ClassVar[str]
    # The option that sets settlement_poll_after, and its default: ACH's setting
    # (COLLECTOR_STRIPE_SETTLEMENT_POLL_AFTER_S) is about debits, so cards have their own.
    poll_after_option: ClassVar[str] = "settlement_poll_after_s"
    default_settlement_poll_after: ClassVar[timedelta] = DEFAULT_SETTLEMENT_POLL_AFTER

    key_retention: ClassVar[timedelta] = timedelta(hours=24)
    """How long Stripe remembers an idempotency key; after it, a re-send charges anew."""

    lookup_lag: ClassVar[timedelta] = timedelta(hours=1)
    """How far Stripe's search index may lag behind a charge (outages included): a lookup that
    answers None for a younger attempt does not prove the charge was not taken."""

    def __init__(
        self,
        name: str,
        client: stripe.StripeClient,
        *,
        max_rate_retries: int = DEFAULT_MAX_RATE_RETRIES,
        rate_budget_s: float = RATE_RETRY_BUDGET_S,
        rate_backoff_base_s: float = RATE_BACKOFF_BASE_S,
        settlement_poll_after: timedelta | None = None,
    ) -> None:
        self.name = name
        # Webhooks report most settlements; the settlement job asks about a debit only once
        # it is this old, so each pass does not send Stripe a request per debit in flight.
        self.settlement_poll_after = (
            self.default_settlement_poll_after
            if settlement_poll_after is None
            else settlement_poll_after
        )
        self._client = client
        self._max_rate_retries = max_rate_retries
        self._rate_budget_s = rate_budget_s
        self._rate_backoff_base_s = rate_backoff_base_s

    async def charge(self, request: ChargeRequest) -> Outcome:
        """Create and confirm one off-session PaymentIntent under the attempt's idempotency key;
        raise GatewayError when Stripe rejects the request itself (key, permissions, bug)."""
        ids = parse_token(request.token)
        if ids is None:
            return Declined(
                kind=DeclineKind.HARD,
                code=INVALID_TOKEN,
                message="A Stripe payment method token must read 'cus_...:pm_...'.",
            )
        if request.amount_cents <= 0:
            return Declined(
                kind=DeclineKind.HARD,
                code=INVALID_AMOUNT,
                message="The amount must be a positive number of cents.",
            )
        customer, payment_method = ids
        params: PaymentIntentCreateParams = {
            "amount": request.amount_cents,
            "currency": request.currency,
            "customer": customer,
            "payment_method": payment_method,
            # This API version (the SDK's pinned one) names the request field
            # allowed_payment_method_types; the PaymentIntent still answers
            # payment_method_types. One explicit type leaves out the redirect-based methods,
            # for which a confirm would need a return_url.
            "allowed_payment_method_types": [self.payment_method_type],
            # Merchant-initiated: Stripe answers with an error instead of asking for a
            # challenge the absent customer cannot complete ("Charge saved payment methods").
            "off_session": True,
            "confirm": True,
            "metadata": {**request.metadata, ATTEMPT_KEY: request.idempotency_key},
        }
        if request.description:
            params["description"] = request.description
        key = request.idempotency_key
        try:
            intent = await self._rate_limited(
                lambda: self._client.v1.payment_intents.create_async(
                    params=params, options={"idempotency_key": key}
                )
            )
        except stripe.CardError as exc:
            return self._declined_by(exc)
        except stripe.InvalidRequestError as exc:
            declined = self._method_unusable(exc)
            if declined is None:
                raise _gateway_error(exc, "create the PaymentIntent") from exc
            return declined
        except stripe.StripeError as exc:
            in_doubt = _in_doubt_of(exc)
            if in_doubt is None:
                raise _gateway_error(exc, "create the PaymentIntent") from exc
            return in_doubt
        return self._outcome_of(_intent_of(intent))

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        """The outcome of the PaymentIntent made under this key, found by its metadata, never
        by a re-send; None when Stripe's search has none (see ``lookup_lag``)."""
        try:
            intent = await self._find(idempotency_key)
        except stripe.StripeError as exc:
            in_doubt = _in_doubt_of(exc)
            if in_doubt is None:
                raise _gateway_error(exc, "search PaymentIntents") from exc
            return in_doubt
        if intent is None:
            return None
        try:
            return await self._found(intent)
        except stripe.StripeError as exc:
            in_doubt = _in_doubt_of(exc)
            if in_doubt is None:
                raise _gateway_error(exc, "retrieve the Charge") from exc
            return in_doubt

    async def _payment_method(self, token: str) -> dict[str, Any] | None:
        """The token's PaymentMethod as Stripe holds it, or None when the token is not ours
        or Stripe has no such method."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        try:
            method = await self._rate_limited(
                lambda: self._client.v1.payment_methods.retrieve_async(parsed[1])
            )
        except stripe.InvalidRequestError as exc:
            if exc.code == "resource_missing":
                return None
            raise _gateway_error(exc, "retrieve the PaymentMethod") from exc
        except stripe.StripeError as exc:
            raise _gateway_error(exc, "retrieve the PaymentMethod") from exc
        data: dict[str, Any] = method.to_dict()
        return data

    async def fingerprint(self, token: str) -> str | None:
        """Stripe's fingerprint of the card or bank account of the token's PaymentMethod
        (``card.fingerprint``, ``us_bank_account.fingerprint``): the same number gets the same
        fingerprint in one Stripe account, however often it is attached again."""
        data = await self._payment_method(token)
        if data is None:
            return None
        for kind in ("card", "us_bank_account"):
            details = data.get(kind)
            found = details.get("fingerprint") if isinstance(details, dict) else None
            if isinstance(found, str) and found.strip():
                return f"stripe:{kind}:{found}"
        return None

    async def payment_intent(self, intent_id: str) -> StripePaymentIntent | None:
        """The PaymentIntent with this id, None when Stripe has none; raise GatewayError when
        Stripe cannot be asked (the caller tries again later)."""
        try:
            intent = await self._rate_limited(
                lambda: self._client.v1.payment_intents.retrieve_async(intent_id)
            )
        except stripe.InvalidRequestError as exc:
            if exc.code == "resource_missing":
                return None
            raise _gateway_error(exc, "retrieve the PaymentIntent") from exc
        except stripe.StripeError as exc:
            raise _gateway_error(exc, "retrieve the PaymentIntent") from exc
        return _intent_of(intent)

    async def _found(self, intent: StripePaymentIntent) -> Outcome:
        # What a lookup answers for the PaymentIntent it found; StripeAchGateway refines it.
        return self._outcome_of(intent)

    async def _charge(self, charge_id: str) -> StripeCharge:
        found = await self._rate_limited(lambda: self._client.v1.charges.retrieve_async(charge_id))
        try:
            return StripeCharge.model_validate(found.to_dict())
        except ValidationError as exc:
            raise GatewayError("Stripe answered with a Charge the adapter cannot read") from exc

    async def _settling(self, idempotency_key: str) -> StripePaymentIntent | None:
        try:
            return await self._find(idempotency_key)
        except stripe.StripeError as exc:
            raise _gateway_error(exc, "search PaymentIntents") from exc

    async def _find(self, idempotency_key: str) -> StripePaymentIntent | None:
        query = search_query(idempotency_key)
        found = await self._rate_limited(
            lambda: self._client.v1.payment_intents.search_async(
                params={"query": query, "limit": 10}
            )
        )
        intents = [_intent_of(intent) for intent in found.data]
        # Search matches on the field; the exact-match check guards against any looser match.
        return _pick([i for i in intents if i.metadata.get(ATTEMPT_KEY) == idempotency_key])

    async def _rate_limited(self, call: Callable[[], Awaitable[_T]]) -> _T:
        # Stripe answers 429 before doing anything (no idempotent result is saved), so the
        # same request may be sent again. Its docs advise exponential back-off with jitter; a
        # Retry-After header, where present, is honoured. Past the retry count or the time
        # budget the last RateLimitError propagates, and the caller answers InDoubt.
        waited_s = 0.0
        for retry in range(self._max_rate_retries + 1):
            try:
                return await call()
            except stripe.RateLimitError as exc:
                if retry == self._max_rate_retries:
                    raise
                delay_s = _retry_after_s(exc)
                if delay_s is None:
                    ceiling = self._rate_backoff_base_s * 2**retry
                    delay_s = random.uniform(ceiling / 2, ceiling)
                if waited_s + delay_s > self._rate_budget_s:
                    raise
                await anyio.sleep(delay_s)
                waited_s += delay_s
        raise AssertionError("unreachable")  # pragma: no cover

    def _declined(self, error: StripePaymentError, gateway_ref: str | None) -> Declined:
        return declined_of(
            error, gateway_ref, declines=self.declines, decline_default=self.decline_default
        )

    def _declined_by(self, exc: stripe.CardError) -> Declined:
        body = exc.json_body.get("error") if isinstance(exc.json_body, dict) else None
        try:
            error = _ErrorBody.model_validate(body if isinstance(body, dict) else {})
        except ValidationError:
            error = _ErrorBody(code=exc.code)
        ref = error.payment_intent.id if error.payment_intent is not None else None
        return self._declined(error, ref)

    def _method_unusable(self, exc: stripe.InvalidRequestError) -> Declined | None:
        # A customer or payment method that no longer exists (detached, deleted) is a dead
        # token: hard, like a closed card. Any other invalid request is our bug, not a decline.
        if exc.code == "resource_missing" and getattr(exc, "param", None) in (
            "customer",
            "payment_method",
        ):
            return Declined(
                kind=DeclineKind.HARD,
                code="resource_missing",
                message=f"Stripe has no such {exc.param}.",
            )
        return None

    def _outcome_of(self, intent: StripePaymentIntent) -> Outcome:
        return outcome_of_intent(
            intent,
            declines=self.declines,
            decline_default=self.decline_default,
            action_code=self.action_code,
        )


class StripeCardGateway(StripeGateway):
    """Charges a customer's saved card off-session through Stripe. Stripe may leave a card
    payment ``processing`` for a while (the charge answers Processing); :meth:`settlement`
    follows it until it succeeds or fails."""

    payment_method_type = "card"
    method_kinds = frozenset({MethodKind.CARD})
    declines = CARD_DECLINES
    decline_default = CARD_DECLINE_DEFAULT
    action_code = AUTHENTICATION_REQUIRED
    poll_after_option = "card_settlement_poll_after_s"
    default_settlement_poll_after = DEFAULT_CARD_SETTLEMENT_POLL_AFTER

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Settlement | None:
        """Where the card payment made under this key stands now: Succeeded, Processing, or
        Declined as the charge would have mapped it (``as_of`` is not used); None when
        Stripe's search has no such payment; raise GatewayError when Stripe cannot be asked
        or the PaymentIntent is in a state that is neither."""
        intent = await self._settling(idempotency_key)
        if intent is None:
            return None
        settlement = card_settlement_of_intent(intent)
        if settlement is None:
            raise GatewayError(
                f"the PaymentIntent {intent.id} is {intent.status}: not a confirmed payment"
            )
        return settlement


class StripeAchGateway(StripeGateway):
    """Debits a customer's saved US bank account (ACH Direct Debit) through Stripe; a debit is
    Processing until it settles or comes back days later."""

    payment_method_type = "us_bank_account"
    method_kinds = frozenset({MethodKind.ACH})
    declines = ACH_DECLINES
    decline_default = ACH_DECLINE_DEFAULT
    # requires_action on a bank debit means the account still awaits microdeposit verification.
    action_code = "bank_account_unverified"

    async def account_validated(self, token: str) -> bool:
        """Whether Stripe verified the bank account of the token's PaymentMethod with the
        customer: a us_bank_account method saved for off-session debits exists only once its
        SetupIntent verified the account (Financial Connections or microdeposits), so any
        such method not blocked by Stripe is validated and needs no NACHA prenote."""
        data = await self._payment_method(token)
        if data is None:
            return False
        details = data.get("us_bank_account")
        if not isinstance(details, dict):
            return False
        blocked = (details.get("status_details") or {}).get("blocked")
        return not blocked

    # An off-session debit of a saved us_bank_account method reuses the mandate Stripe recorded
    # when the method was saved through a SetupIntent; mandate_data records a new acceptance
    # (the customer's IP address and user agent), which an unattended debit does not have.

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Settlement | None:
        """Where the debit made under this key stands now (Stripe knows no business dates, so
        ``as_of`` is not used); None when Stripe's search has no such debit; raise GatewayError
        when Stripe cannot be asked or the PaymentIntent was never submitted."""
        intent = await self._settling(idempotency_key)
        if intent is None:
            return None
        settlement = settlement_of_intent(intent)
        if settlement is None:
            raise GatewayError(
                f"the PaymentIntent {intent.id} is {intent.status}: not a submitted debit"
            )
        return settlement

    async def _found(self, intent: StripePaymentIntent) -> Outcome:
        # A debit that failed after it was processing is a bank return, not a refusal: both
        # leave the PaymentIntent in requires_payment_method with last_payment_error, so the
        # latest Charge tells them apart (StripeCharge.was_processing). A returned debit is
        # answered Processing, so the attempt becomes processing and the settlement poll
        # records the return with its R code (NACHA: a return is handled as a return, with
        # its own reinitiation and authorization rules, never as a soft decline).
        outcome = self._outcome_of(intent)
        charge_id = intent.latest_charge_id
        if not isinstance(outcome, Declined) or intent.status != "requires_payment_method":
            return outcome
        if charge_id is None:
            return outcome  # never confirmed far enough to make a charge: refused
        charge = await self._charge(charge_id)
        return Processing(gateway_ref=intent.id) if charge.was_processing else outcome


_G = TypeVar("_G", bound=StripeGateway)


def _int_option(ctx: GatewayContext, option: str, default: int) -> int:
    raw = ctx.options.get(option)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise GatewayConfigError(
            f"gateway {ctx.name!r}: option {option!r} must be a whole number >= 0"
        )
    return value


def _timeout_option(ctx: GatewayContext) -> float:
    raw = ctx.options.get("timeout_s")
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 300:
        raise GatewayConfigError(
            f"gateway {ctx.name!r}: option 'timeout_s' must be seconds in (0, 300]"
        )
    return value


@asynccontextmanager
async def _open(ctx: GatewayContext, cls: type[_G]) -> AsyncIterator[_G]:
    api_key = ctx.options.get("api_key", "").strip()
    if not api_key:
        raise GatewayConfigError(
            f"gateway {ctx.name!r} needs a Stripe API key: set {API_KEY_SETTING}"
        )
    base_url = ctx.options.get("base_url") or DEFAULT_BASE_URL
    if not base_url.startswith(("https://", "http://")):
        raise GatewayConfigError(f"gateway {ctx.name!r}: option 'base_url' must be an http(s) URL")
    max_rate_retries = _int_option(ctx, "max_rate_retries", DEFAULT_MAX_RATE_RETRIES)
    max_network_retries = _int_option(ctx, "max_network_retries", DEFAULT_MAX_NETWORK_RETRIES)
    poll_after_s = _int_option(
        ctx, cls.poll_after_option, int(cls.default_settlement_poll_after.total_seconds())
    )
    http_client = stripe.HTTPXClient(timeout=_timeout_option(ctx))
    try:
        client = stripe.StripeClient(
            api_key,
            http_client=http_client,
            base_addresses={"api": base_url.rstrip("/")},
            max_network_retries=max_network_retries,
        )
        yield cls(
            ctx.name,
            client,
            max_rate_retries=max_rate_retries,
            settlement_poll_after=timedelta(seconds=poll_after_s),
        )
    finally:
        # Shielded and bounded, so a cancelled exit still closes the connection pool.
        with anyio.move_on_after(5, shield=True):
            await http_client.close_async()  # type: ignore[no-untyped-call]  # SDK: untyped


@asynccontextmanager
async def open_stripe_card(ctx: GatewayContext) -> AsyncIterator[StripeCardGateway]:
    """A ready Stripe card gateway from ``ctx.options`` (api_key, base_url, max_rate_retries,
    max_network_retries, timeout_s, card_settlement_poll_after_s); raise GatewayConfigError
    naming what is missing."""
    async with _open(ctx, StripeCardGateway) as gateway:
        yield gateway


@asynccontextmanager
async def open_stripe_ach(ctx: GatewayContext) -> AsyncIterator[StripeAchGateway]:
    """A ready Stripe ACH Direct Debit gateway from ``ctx.options`` (as for the card one);
    raise GatewayConfigError naming what is missing."""
    async with _open(ctx, StripeAchGateway) as gateway:
        yield gateway
