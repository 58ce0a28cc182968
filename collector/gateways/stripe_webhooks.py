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
"""

from __future__ import annotations

import json
from typing import Any, Final

import stripe
from pydantic import BaseModel, ConfigDict, ValidationError

from collector.exceptions import CollectorError, GatewayConfigError
from collector.gateways.base import Processing, Settlement, Succeeded
from collector.gateways.stripe import ATTEMPT_KEY, StripePaymentIntent, settlement_of_intent

DEFAULT_TOLERANCE_S: Final = 300

PAYMENT_INTENT_SUCCEEDED: Final = "payment_intent.succeeded"
PAYMENT_INTENT_PROCESSING: Final = "payment_intent.processing"
PAYMENT_INTENT_FAILED: Final = "payment_intent.payment_failed"


class WebhookSignatureError(CollectorError):
    """The delivery is not proven to come from Stripe: no, bad or stale signature (API: 400)."""


class WebhookPayloadError(CollectorError):
    """The delivery is signed but is not a Stripe event this code can read (API: 400)."""


class _EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    object: dict[str, Any]


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
    # payment_failed: for a bank debit after processing, a return. Stripe sends the same event
    # for a debit refused at submission, which the charge already answered as a decline, so
    # the caller applies it only to an attempt that is processing. A card decline is answered
    # at once by the charge itself (and by lookup): its event adds nothing here.
    if not intent.is_bank_debit:
        return None
    settlement = settlement_of_intent(intent)
    if settlement is None:
        return None
    return key, settlement
