"""Gateway webhooks: ``POST /webhooks/stripe``.

Authenticated by Stripe's signature over the exact body (not by a portal token). Each event is
applied once however often Stripe delivers it: an event id already remembered is answered as a
replay before anything else (no lookup, no call to Stripe); applying is idempotent besides (a
settlement changes only a debit still processing, a return is recorded once per attempt), which
covers two deliveries racing. The event id is remembered after its fact is applied, so a
delivery that fails before that (Stripe unreachable while a dispute is resolved) answers 503
and is applied by Stripe's retry.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from collector.api.deps import GatewaysDep, PoolDep, SettingsDep, TodayDep
from collector.api.schemas import Problem
from collector.db.settlement import remember_webhook_event
from collector.db.webhooks import webhook_event_seen
from collector.exceptions import GatewayError
from collector.gateways.base import Declined, Gateway, Returned, Settlement, Succeeded
from collector.gateways.stripe_webhooks import (
    PaymentIntentSource,
    StripeEvent,
    WebhookPayloadError,
    WebhookSignatureError,
    dispute_of,
    dispute_return,
    parse_event,
    settlement_of,
)
from collector.jobs.settle import apply_by_key
from collector.logs import get_logger

router = APIRouter(tags=["webhooks"])
log = get_logger()

GATEWAY = "stripe"


@router.post(
    "/webhooks/stripe",
    summary="Stripe events: payments settling, failing, or coming back as ACH disputes",
    responses={
        400: {"model": Problem, "description": "Not signed by Stripe, stale, or not an event"},
        404: {"model": Problem, "description": "Stripe webhooks are not configured here"},
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
    """Verify a Stripe delivery and apply the settlement, decline or return it reports."""
    secret = settings.stripe_webhook_secret
    if secret is None or not secret.get_secret_value().strip():
        return JSONResponse({"detail": "Stripe webhooks are not configured"}, status_code=404)
    payload = await request.body()
    try:
        event = parse_event(
            payload,
            request.headers.get("Stripe-Signature", ""),
            secret.get_secret_value(),
        )
        fact = settlement_of(event)
    except (WebhookSignatureError, WebhookPayloadError) as exc:
        log.warning("webhook_rejected", gateway=GATEWAY, error=type(exc).__name__)
        return JSONResponse({"detail": str(exc)}, status_code=400)
    if await webhook_event_seen(pool, gateway=GATEWAY, event_id=event.id):
        log.info("webhook_received", gateway=GATEWAY, event_type=event.type, replay=True)
        return JSONResponse({"received": True, "replay": True})
    if fact is None:
        try:
            fact = await _dispute_fact(event, gateways)
        except WebhookPayloadError as exc:
            log.warning("webhook_rejected", gateway=GATEWAY, error=type(exc).__name__)
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except GatewayError as exc:
            # Not remembered: Stripe delivers it again (with back-off, for up to three days).
            log.warning("webhook_deferred", gateway=GATEWAY, event_type=event.type, error=str(exc))
            return JSONResponse(
                {"detail": "Stripe could not be asked about this event; deliver it again"},
                status_code=503,
            )
    if fact is not None and isinstance(fact[1], Succeeded | Returned | Declined):
        key, settlement = fact
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


async def _dispute_fact(
    event: StripeEvent, gateways: Mapping[str, Gateway]
) -> tuple[str, Settlement] | None:
    # An ACH dispute is a late return of a debit that succeeded; a card dispute is a
    # chargeback, which the engine does not follow yet: logged, acknowledged, not applied.
    dispute = dispute_of(event)
    if dispute is None:
        return None
    if dispute.is_card:
        log.info("dispute_ignored", gateway=GATEWAY, dispute_id=dispute.id, why="card")
        return None
    # Any Stripe adapter reads the PaymentIntent: the endpoint and its secret belong to one
    # Stripe account, which both adapters charge through.
    source = next((g for g in gateways.values() if isinstance(g, PaymentIntentSource)), None)
    if source is None:
        log.warning("dispute_ignored", gateway=GATEWAY, dispute_id=dispute.id, why="no_gateway")
        return None
    found = await dispute_return(dispute, source)
    if found is None:
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
    return key, returned
