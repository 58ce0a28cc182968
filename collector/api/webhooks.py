"""Gateway webhooks: ``POST /webhooks/stripe``.

Authenticated by Stripe's signature over the exact body (not by a portal token). Each event is
applied once however often Stripe delivers it: an event id already remembered is answered as a
replay before anything else (no lookup, no call to Stripe); applying is idempotent besides (a
settlement changes only a debit still processing, a return is recorded once per attempt), which
covers two deliveries racing. The event id is remembered after its fact is applied, so a
delivery that fails before that (Stripe unreachable while a dispute is resolved) answers 503
and is applied by Stripe's retry.

A signature proves who sent an event, not which charge it is about: the attempt key in a
PaymentIntent's metadata is whatever its creator wrote. So before anything changes, the event
is checked against the attempt it names (``stripe_webhooks.mismatch``: a Stripe gateway of this
engine, the PaymentIntent that gateway answered, the amount, the currency, the method's kind);
one that does not match is answered 422 with the reason as ``code``, logged, counted in
``collector_webhooks_rejected_total{gateway,reason}``, and not remembered. A body that is
signed but not an event of the expected shape (``stripe_webhooks.parse_event``) is 400.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from collector.api.deps import GatewaysDep, PoolDep, SettingsDep, TodayDep
from collector.api.schemas import Problem
from collector.db.settlement import remember_webhook_event
from collector.db.webhooks import attempt_named, webhook_event_seen
from collector.domain import MethodKind
from collector.exceptions import GatewayError
from collector.gateways.base import (
    Declined,
    Gateway,
    Returned,
    Settlement,
    Succeeded,
    method_kinds,
)
from collector.gateways.stripe import StripeGateway, StripePaymentIntent
from collector.gateways.stripe_webhooks import (
    MISMATCHES,
    PaymentIntentSource,
    StripeDispute,
    StripeEvent,
    WebhookPayloadError,
    WebhookSignatureError,
    disputed_intent,
    mismatch,
    parse_event,
    return_of_dispute,
    settlement_of,
)
from collector.jobs.settle import apply_by_key
from collector.logs import get_logger
from collector.metrics import WEBHOOKS_REJECTED

router = APIRouter(tags=["webhooks"])
log = get_logger()

GATEWAY = "stripe"


@router.post(
    "/webhooks/stripe",
    summary="Stripe events: payments settling, failing, or coming back as ACH disputes",
    responses={
        400: {"model": Problem, "description": "Not signed by Stripe, stale, or not an event"},
        404: {"model": Problem, "description": "Stripe webhooks are not configured here"},
        413: {"model": Problem, "description": "The delivery is larger than the limit"},
        422: {
            "model": Problem,
            "description": "Signed, but not about the attempt it names (`code` says how)",
        },
        503: {"model": Problem, "description": "Stripe could not be asked; deliver again"},
    },
)
async def stripe_webhook(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    today: TodayDep,
    gateways: GatewaysDep,
) -> JSONResponse:
    """Verify a Stripe delivery and apply the settlement, decline or return it reports, once
    it is shown to be about the attempt it names."""
    secret = settings.stripe_webhook_secret
    if secret is None or not secret.get_secret_value().strip():
        return JSONResponse({"detail": "Stripe webhooks are not configured"}, status_code=404)
    # At most COLLECTOR_HTTP_MAX_WEBHOOK_BODY_BYTES: collector.api.limits refused a larger one
    # before this handler ran.
    payload = await request.body()
    try:
        event = parse_event(
            payload,
            request.headers.get("Stripe-Signature", ""),
            secret.get_secret_value(),
        )
        fact = settlement_of(event)
    except WebhookSignatureError as exc:
        return _rejected(400, "bad_signature", str(exc))
    except WebhookPayloadError as exc:
        return _rejected(400, "malformed_event", str(exc))
    if await webhook_event_seen(pool, gateway=GATEWAY, event_id=event.id):
        log.info("webhook_received", gateway=GATEWAY, event_type=event.type, replay=True)
        return JSONResponse({"received": True, "replay": True})
    intent: StripePaymentIntent | None = event.payment_intent
    if fact is None and event.dispute is not None:
        try:
            found = await _dispute_fact(event.dispute, gateways)
        except GatewayError as exc:
            # Not remembered: Stripe delivers it again (with back-off, for up to three days).
            log.warning("webhook_deferred", gateway=GATEWAY, event_type=event.type, error=str(exc))
            return JSONResponse(
                {"detail": "Stripe could not be asked about this event; deliver it again"},
                status_code=503,
            )
        if found is not None:
            fact, intent = found
    if fact is not None and intent is not None:
        key, settlement = fact
        attempt = await attempt_named(pool, key)
        reason = mismatch(intent, attempt, stripe_gateways=_stripe_gateways(gateways))
        if reason is not None:
            # Not remembered either: if the ledger catches up (an attempt in doubt gets its
            # reference from reconciliation), Stripe's next delivery applies.
            return _rejected(
                422,
                reason,
                f"the event does not match the attempt it names: {MISMATCHES[reason]}",
                event=event,
                attempt_id=attempt.attempt_id if attempt is not None else None,
            )
        if isinstance(settlement, Succeeded | Returned | Declined):
            await apply_by_key(
                pool,
                key,
                settlement,
                as_of=today,
                retry_days=settings.soft_retry_days,
                source="webhook",
            )
    first = await remember_webhook_event(pool, gateway=GATEWAY, event_id=event.id, kind=event.type)
    log.info("webhook_received", gateway=GATEWAY, event_type=event.type, replay=not first)
    return JSONResponse({"received": True, "replay": not first})


def _rejected(
    status: int,
    reason: str,
    detail: str,
    *,
    event: StripeEvent | None = None,
    attempt_id: int | None = None,
) -> JSONResponse:
    """A refused delivery: counted, logged (the event's id and type, never its body), and
    answered with nothing applied."""
    WEBHOOKS_REJECTED.labels(gateway=GATEWAY, reason=reason).inc()
    log.warning(
        "webhook_rejected",
        gateway=GATEWAY,
        reason=reason,
        event_id=event.id if event is not None else None,
        event_type=event.type if event is not None else None,
        attempt_id=attempt_id,
    )
    return JSONResponse({"detail": detail, "code": reason}, status_code=status)


def _stripe_gateways(gateways: Mapping[str, Gateway]) -> dict[str, frozenset[MethodKind] | None]:
    """This engine's Stripe gateways by name, with the kinds of method each charges: the
    endpoint speaks for their attempts and no other gateway's."""
    return {
        name: method_kinds(gateway)
        for name, gateway in gateways.items()
        if isinstance(gateway, StripeGateway)
    }


async def _dispute_fact(
    dispute: StripeDispute, gateways: Mapping[str, Gateway]
) -> tuple[tuple[str, Settlement], StripePaymentIntent] | None:
    # An ACH dispute is a late return of a debit that succeeded; a card dispute is a
    # chargeback, which the engine does not follow yet: logged, acknowledged, not applied.
    if dispute.is_card:
        log.info("dispute_ignored", gateway=GATEWAY, dispute_id=dispute.id, why="card")
        return None
    # Any Stripe adapter reads the PaymentIntent: the endpoint and its secret belong to one
    # Stripe account, which both adapters charge through.
    source = next((g for g in gateways.values() if isinstance(g, PaymentIntentSource)), None)
    if source is None:
        log.warning("dispute_ignored", gateway=GATEWAY, dispute_id=dispute.id, why="no_gateway")
        return None
    intent = await disputed_intent(dispute, source)
    found = None if intent is None else return_of_dispute(dispute, intent)
    if found is None or intent is None:
        # A card payment (older API versions give no payment method details), or a payment
        # this engine did not make.
        log.info("dispute_ignored", gateway=GATEWAY, dispute_id=dispute.id, why="not_an_ach_debit")
        return None
    key, returned = found
    log.warning(
        "ach_dispute_received",
        gateway=GATEWAY,
        dispute_id=dispute.id,
        dispute_reason=returned.gateway_code,
        return_code=returned.code,
    )
    return (key, returned), intent
