"""Stripe webhooks: verify a delivery and read what it says about a debit; no HTTP framework.

Stripe signs each delivery with the endpoint's secret: the ``Stripe-Signature`` header holds
``t=<unix time>`` and one or more ``v1=<hex HMAC-SHA256 of "<t>.<raw body>">`` (several while a
secret is being rolled). The check is the SDK's own ``WebhookSignature.verify_header``, which
compares in constant time and rejects a timestamp older than the tolerance (Stripe's default
is 5 minutes, against replays). The body must be the raw bytes as received: re-serialized JSON
does not verify.

Stripe delivers at least once and in no guaranteed order ("Best practices for using
webhooks"): the same event may come twice, and ``payment_intent.processing`` may arrive after
``payment_intent.succeeded``. The caller applies each event id once and never moves a debit
back from a final state.

An ACH debit can also come back after it succeeded: the customer's bank may dispute it up to
60 days later (NACHA's extended return window for a consumer's unauthorized debit), and Stripe
reports a bank failure received after success the same way. Stripe
sends ``charge.dispute.created``; an ACH dispute cannot be contested, Stripe withdraws the funds
at once, and the mandate is void from then on (Stripe support, "Respond to or contest an ACH
Direct Debit dispute as a merchant"). The Dispute names the PaymentIntent by id and carries
none of its metadata, so :func:`dispute_return` reads the PaymentIntent from Stripe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Protocol, runtime_checkable

import stripe
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collector.domain import MethodKind, NamedAttempt
from collector.exceptions import CollectorError, GatewayConfigError
from collector.gateways.base import ChargeRequest, Processing, Returned, Settlement, Succeeded
from collector.gateways.stripe import (
    ATTEMPT_KEY,
    StripePaymentError,
    StripePaymentIntent,
    card_settlement_of_intent,
    settlement_of_intent,
)

DEFAULT_TOLERANCE_S: Final = 300

PAYMENT_INTENT_SUCCEEDED: Final = "payment_intent.succeeded"
PAYMENT_INTENT_PROCESSING: Final = "payment_intent.processing"
PAYMENT_INTENT_FAILED: Final = "payment_intent.payment_failed"
CHARGE_DISPUTE_CREATED: Final = "charge.dispute.created"
PAYMENT_INTENT_EVENTS: Final = frozenset(
    {PAYMENT_INTENT_SUCCEEDED, PAYMENT_INTENT_PROCESSING, PAYMENT_INTENT_FAILED}
)

CURRENCY: Final = ChargeRequest.__dataclass_fields__["currency"].default
"""The currency of every charge the engine makes; an event in another is not one of ours."""

DISPUTE_RETURN_CODE: Final = "R10"
"""The return code an ACH dispute is recorded with. Whatever its reason (debit_not_authorized,
unrecognized, a late insufficient_funds), a disputed debit voids its mandate: no debit may be
presented again under that authorization, which is the unauthorized class of returns (R05, R07,
R10, R11, R29). R10, the consumer's "not authorized", stands for them all; ``gateway_code``
keeps Stripe's dispute reason."""


class WebhookSignatureError(CollectorError):
    """The delivery is not proven to come from Stripe: no, bad or stale signature (API: 400)."""


class WebhookPayloadError(CollectorError):
    """The delivery is signed but is not a Stripe event this code can read (API: 400)."""


# -- the shape of an event, strictly ----------------------------------------------------------
#
# A signature proves who sent the bytes, not that they are sane: the strings below end up in
# the database (PostgreSQL's text cannot hold NUL) and in logs, so each is bounded and free of
# control characters, every number is a JSON integer (no coercion: strict), and the parser's
# nesting limit refuses a deeply nested body. One place checks it all: parse_event.

_NO_CONTROL = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

StripeId = Annotated[str, Field(pattern=r"^[a-z]{1,10}_[A-Za-z0-9_]{1,250}$")]
"""A Stripe object id: a lower-case prefix, an underscore, then letters, digits and underscores."""
_Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,100}$")]
"""A status, type or code: Stripe's are snake_case words or digits."""
_Text = Annotated[str, Field(max_length=2_000, pattern=_NO_CONTROL)]
_MetadataKey = Annotated[str, Field(max_length=40, pattern=_NO_CONTROL)]
_MetadataValue = Annotated[str, Field(max_length=500, pattern=_NO_CONTROL)]
# Stripe's own limits on metadata: 50 keys of 40 characters, values of 500.
_Metadata = Annotated[dict[_MetadataKey, _MetadataValue], Field(max_length=50)]

_ATTEMPT_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")
"""The engine's idempotency keys: printable ASCII without spaces, at most 255 characters."""

_STRICT = ConfigDict(frozen=True, extra="ignore", strict=True)


class EventPaymentError(StripePaymentError):
    """A PaymentIntent's ``last_payment_error`` as an event carries it."""

    model_config = _STRICT

    type: _Code | None = None
    code: _Code | None = None
    decline_code: _Code | None = None
    advice_code: _Code | None = None
    network_advice_code: _Code | None = None
    network_decline_code: _Code | None = None
    message: _Text | None = None


class EventPaymentIntent(StripePaymentIntent):
    """A PaymentIntent as an event carries it: what the adapters read, strictly typed, with its
    amount and currency (required: the event is checked against the attempt it names)."""

    model_config = _STRICT

    id: StripeId
    status: _Code
    created: Annotated[int, Field(ge=0)] = 0
    amount: Annotated[int, Field(ge=0, le=10**15)]
    currency: Annotated[str, Field(pattern=r"^[a-z]{3}$")]
    metadata: _Metadata = Field(default_factory=dict)
    payment_method_types: Annotated[list[_Code], Field(max_length=20)] = Field(default_factory=list)
    last_payment_error: EventPaymentError | None = None
    cancellation_reason: _Code | None = None
    latest_charge: StripeId | dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _attempt_key_shape(cls, metadata: dict[str, str]) -> dict[str, str]:
        key = metadata.get(ATTEMPT_KEY)
        if key is not None and not _ATTEMPT_KEY.fullmatch(key):
            raise ValueError(f"{ATTEMPT_KEY} is not an attempt key")
        return metadata


class _EventData(BaseModel):
    model_config = _STRICT

    object: dict[str, Any]


class _DisputeMethod(BaseModel):
    model_config = _STRICT

    type: _Code | None = None


class StripeDispute(BaseModel):
    """The few Dispute fields the engine reads: which payment, and why."""

    model_config = _STRICT

    id: StripeId
    # Ids in an event; an object only where a caller expanded them.
    charge: StripeId | dict[str, Any] | None = None
    payment_intent: StripeId | dict[str, Any] | None = None
    reason: _Code = "general"
    status: _Code | None = None
    # Stripe gives details for card, klarna, paypal and amazon_pay disputes only; an ACH
    # dispute has none, so the PaymentIntent's own method type decides.
    payment_method_details: _DisputeMethod | None = None

    @property
    def payment_intent_id(self) -> str | None:
        """The id of the disputed PaymentIntent; None for a charge made without one."""
        found = self.payment_intent
        if isinstance(found, dict):
            found = found.get("id")
        return found if isinstance(found, str) else None

    @property
    def is_card(self) -> bool:
        """Whether Stripe says this is a card dispute (a chargeback, not a bank return)."""
        details = self.payment_method_details
        return details is not None and details.type == "card"


@runtime_checkable
class PaymentIntentSource(Protocol):
    """What can read a PaymentIntent by id (the Stripe adapters do)."""

    async def payment_intent(self, intent_id: str) -> StripePaymentIntent | None:
        """The PaymentIntent with this id; None when Stripe has none."""
        ...


class _Envelope(BaseModel):
    model_config = _STRICT

    id: Annotated[str, Field(pattern=r"^evt_[A-Za-z0-9_]{1,250}$")]
    type: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,50}(\.[a-z0-9_]{1,50}){1,4}$")]
    created: Annotated[int, Field(ge=0)]
    livemode: bool = False
    data: _EventData


class StripeEvent(_Envelope):
    """A verified Stripe event: its id (the key to apply it once), type and object snapshot,
    and the object read as what its type says (for the types the engine acts on)."""

    payment_intent: EventPaymentIntent | None = None
    dispute: StripeDispute | None = None


def parse_event(
    payload: bytes, signature_header: str, secret: str, *, tolerance_s: int = DEFAULT_TOLERANCE_S
) -> StripeEvent:
    """The event in a webhook delivery; raise WebhookSignatureError unless Stripe signed this
    exact body with ``secret`` within the last ``tolerance_s`` seconds, WebhookPayloadError when
    the signed body is not an event of the shape this code reads (the one check of that shape),
    and GatewayConfigError when there is no secret."""
    if not secret.strip():
        raise GatewayConfigError("the Stripe webhook signing secret is empty")
    if tolerance_s <= 0:
        # The SDK skips the age check for a tolerance of 0, which would let replays through.
        raise ValueError("tolerance_s must be positive")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Stripe signs a UTF-8 body; these bytes cannot be one it sent.
        raise WebhookSignatureError("the webhook body is not UTF-8") from exc
    try:
        stripe.WebhookSignature.verify_header(text, signature_header, secret, tolerance_s)
    except stripe.SignatureVerificationError as exc:
        # The SDK's messages name the failure (missing header, no match, stale) and not the
        # secret; the header itself is kept out of ours.
        raise WebhookSignatureError(
            f"the Stripe signature does not verify: {exc.user_message}"
        ) from exc
    try:
        # pydantic's own JSON parser: it limits nesting depth (a deeply nested body is an
        # error here, where json.loads would raise RecursionError).
        envelope = _Envelope.model_validate_json(text)
        payment_intent = dispute = None
        if envelope.type in PAYMENT_INTENT_EVENTS:
            payment_intent = EventPaymentIntent.model_validate(envelope.data.object)
        elif envelope.type == CHARGE_DISPUTE_CREATED:
            dispute = StripeDispute.model_validate(envelope.data.object)
    except ValidationError as exc:
        raise WebhookPayloadError(
            f"the signed webhook body is not a Stripe event this endpoint reads: {_first(exc)}"
        ) from exc
    return StripeEvent(
        **envelope.model_dump(exclude={"data"}),
        data=envelope.data,
        payment_intent=payment_intent,
        dispute=dispute,
    )


def _first(exc: ValidationError) -> str:
    """Where and why validation failed first, without the offending value (it may be huge,
    binary, or a secret the sender should not have put there)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"[:200]


def settlement_of(event: StripeEvent) -> tuple[str, Settlement] | None:
    """The attempt key and new state of the payment an event reports; None for events the
    engine does not act on, and for PaymentIntents it did not create."""
    intent = event.payment_intent
    if intent is None:
        # charge.failed and charge.succeeded report the same facts as the PaymentIntent events,
        # which Stripe sends alongside them: acting on one kind keeps each fact single.
        return None
    key = intent.metadata.get(ATTEMPT_KEY)
    if not key:
        return None
    if event.type == PAYMENT_INTENT_SUCCEEDED:
        return key, Succeeded(gateway_ref=intent.id)
    if event.type == PAYMENT_INTENT_PROCESSING:
        return key, Processing(gateway_ref=intent.id)
    # payment_failed: for a bank debit after processing, a return; for a card payment Stripe
    # left processing, a decline. Stripe sends the same event for a payment refused at once,
    # which the charge already answered as a decline, so the caller applies it only to an
    # attempt that is processing.
    if intent.is_bank_debit:
        settlement = settlement_of_intent(intent)
    else:
        settlement = card_settlement_of_intent(intent)
    if settlement is None:
        return None
    return key, settlement


def dispute_of(event: StripeEvent) -> StripeDispute | None:
    """The Dispute a ``charge.dispute.created`` event opens; None for any other event.

    funds_withdrawn, updated and closed follow the same dispute: the return is recorded once,
    when it opens (an ACH dispute is final from the start)."""
    return event.dispute


async def disputed_intent(
    dispute: StripeDispute, intents: PaymentIntentSource
) -> StripePaymentIntent | None:
    """The PaymentIntent an ACH dispute is about, as Stripe has it now; None for a card
    dispute, a dispute without a PaymentIntent, or one Stripe does not know. Raise
    GatewayError when Stripe cannot be asked (the delivery is then retried)."""
    intent_id = dispute.payment_intent_id
    if dispute.is_card or intent_id is None:
        return None
    return await intents.payment_intent(intent_id)


def return_of_dispute(
    dispute: StripeDispute, intent: StripePaymentIntent
) -> tuple[str, Returned] | None:
    """The attempt key and the return an ACH dispute of ``intent`` stands for; None for a
    card payment or a payment the engine did not make."""
    if not intent.is_bank_debit:
        return None
    key = intent.metadata.get(ATTEMPT_KEY)
    if not key:
        return None
    return key, Returned(
        code=DISPUTE_RETURN_CODE,
        message=f"Stripe dispute {dispute.id} ({dispute.reason})",
        gateway_ref=intent.id,
        gateway_code=dispute.reason,
    )


async def dispute_return(
    dispute: StripeDispute, intents: PaymentIntentSource
) -> tuple[str, Returned] | None:
    """The attempt key and the return an ACH dispute stands for; None for a card dispute, a
    dispute of a payment the engine did not make, or one without a PaymentIntent. Raise
    GatewayError when Stripe cannot be asked (the delivery is then retried)."""
    intent = await disputed_intent(dispute, intents)
    return None if intent is None else return_of_dispute(dispute, intent)


# -- is the event about the attempt it names? -------------------------------------------------
#
# The signature proves Stripe sent the event; the attempt key in its metadata is only what
# whoever created the PaymentIntent wrote there (anyone with a key to the Stripe account, or
# another integration on it). So an event changes an attempt only when it is about that very
# charge: made through a Stripe gateway of this engine, with the PaymentIntent the gateway
# answered, for the attempt's amount, in the engine's currency, on the attempt's kind of method.

UNKNOWN_ATTEMPT: Final = "unknown_attempt"
GATEWAY_MISMATCH: Final = "gateway_mismatch"
REFERENCE_MISMATCH: Final = "reference_mismatch"
AMOUNT_MISMATCH: Final = "amount_mismatch"
CURRENCY_MISMATCH: Final = "currency_mismatch"
METHOD_KIND_MISMATCH: Final = "method_kind_mismatch"

MISMATCHES: Final[Mapping[str, str]] = {
    UNKNOWN_ATTEMPT: "it names no attempt of this ledger",
    GATEWAY_MISMATCH: "the attempt it names was not made through a Stripe gateway here",
    REFERENCE_MISMATCH: "it is about another PaymentIntent than the attempt it names",
    AMOUNT_MISMATCH: "its amount is not the amount of the attempt it names",
    CURRENCY_MISMATCH: "its currency is not the engine's",
    METHOD_KIND_MISMATCH: "its payment method is not the kind of the attempt it names",
}
"""Why an event does not bind to its attempt, and the words the answer says it in."""


def mismatch(
    intent: StripePaymentIntent,
    attempt: NamedAttempt | None,
    *,
    stripe_gateways: Mapping[str, frozenset[MethodKind] | None],
) -> str | None:
    """Why ``intent`` is not the charge of ``attempt`` (a key of :data:`MISMATCHES`), or None
    when it is. ``stripe_gateways`` are this engine's Stripe gateways by name, with the kinds
    of method each charges. An attempt without a reference yet (its answer is unknown) cannot
    be bound: reconciliation looks it up, and Stripe's next delivery then binds."""
    if attempt is None:
        return UNKNOWN_ATTEMPT
    if attempt.gateway not in stripe_gateways:
        return GATEWAY_MISMATCH
    if attempt.gateway_ref is None or intent.id != attempt.gateway_ref:
        return REFERENCE_MISMATCH
    if intent.amount != attempt.amount_cents:
        return AMOUNT_MISMATCH
    if intent.currency != CURRENCY:
        return CURRENCY_MISMATCH
    kinds = stripe_gateways[attempt.gateway]
    if intent.method_kind != attempt.method_kind or (
        kinds is not None and attempt.method_kind not in kinds
    ):
        return METHOD_KIND_MISMATCH
    return None
