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

import json
from typing import Any, Final, Protocol, runtime_checkable

import stripe
from pydantic import BaseModel, ConfigDict, ValidationError

from collector.exceptions import CollectorError, GatewayConfigError
from collector.gateways.base import Processing, Returned, Settlement, Succeeded
from collector.gateways.stripe import (
    ATTEMPT_KEY,
    StripePaymentIntent,
    card_settlement_of_intent,
    settlement_of_intent,
)

DEFAULT_TOLERANCE_S: Final = 300

PAYMENT_INTENT_SUCCEEDED: Final = "payment_intent.succeeded"
PAYMENT_INTENT_PROCESSING: Final = "payment_intent.processing"
PAYMENT_INTENT_FAILED: Final = "payment_intent.payment_failed"
CHARGE_DISPUTE_CREATED: Final = "charge.dispute.created"

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


class _EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    object: dict[str, Any]


class _DisputeMethod(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str | None = None


class StripeDispute(BaseModel):
    """The few Dispute fields the engine reads: which payment, and why."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    # Ids in an event; an object only where a caller expanded them.
    charge: str | dict[str, Any] | None = None
    payment_intent: str | dict[str, Any] | None = None
    reason: str = "general"
    status: str | None = None
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


class StripeEvent(BaseModel):
    """A verified Stripe event: its id (the key to apply it once), type and object snapshot."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    type: str
    created: int
    livemode: bool = False
    data: _EventData


def parse_event(
    payload: bytes, signature_header: str, secret: str, *, tolerance_s: int = DEFAULT_TOLERANCE_S
) -> StripeEvent:
    """The event in a webhook delivery; raise WebhookSignatureError unless Stripe signed this
    exact body with ``secret`` within the last ``tolerance_s`` seconds, WebhookPayloadError when
    the signed body is not an event, and GatewayConfigError when there is no secret."""
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
        return StripeEvent.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise WebhookPayloadError("the signed webhook body is not a Stripe event") from exc


def settlement_of(event: StripeEvent) -> tuple[str, Settlement] | None:
    """The attempt key and new state of the payment an event reports; None for events the
    engine does not act on, and for PaymentIntents it did not create."""
    if event.type not in (
        PAYMENT_INTENT_SUCCEEDED,
        PAYMENT_INTENT_PROCESSING,
        PAYMENT_INTENT_FAILED,
    ):
        # charge.failed and charge.succeeded report the same facts as the PaymentIntent events,
        # which Stripe sends alongside them: acting on one kind keeps each fact single.
        return None
    try:
        intent = StripePaymentIntent.model_validate(event.data.object)
    except ValidationError as exc:
        raise WebhookPayloadError(f"event {event.id} does not carry a PaymentIntent") from exc
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
    """The Dispute a ``charge.dispute.created`` event opens; None for any other event; raise
    WebhookPayloadError when the event does not carry a Dispute."""
    if event.type != CHARGE_DISPUTE_CREATED:
        # funds_withdrawn, updated and closed follow the same dispute: the return is recorded
        # once, when it opens (an ACH dispute is final from the start).
        return None
    try:
        return StripeDispute.model_validate(event.data.object)
    except ValidationError as exc:
        raise WebhookPayloadError(f"event {event.id} does not carry a Dispute") from exc


async def dispute_return(
    dispute: StripeDispute, intents: PaymentIntentSource
) -> tuple[str, Returned] | None:
    """The attempt key and the return an ACH dispute stands for; None for a card dispute, a
    dispute of a payment the engine did not make, or one without a PaymentIntent. Raise
    GatewayError when Stripe cannot be asked (the delivery is then retried)."""
    intent_id = dispute.payment_intent_id
    if dispute.is_card or intent_id is None:
        return None
    intent = await intents.payment_intent(intent_id)
    if intent is None or not intent.is_bank_debit:
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
