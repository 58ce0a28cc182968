"""Gateway webhooks: ``POST /webhooks/stripe``.

Authenticated by Stripe's signature over the exact body (not by a portal token). Each fact is
applied once however often Stripe delivers it: applying is idempotent (a settlement changes
only a debit still processing, a return is recorded once per attempt), and the event id is
remembered afterwards, so a replay skips even the lookup. A delivery that fails before it is
remembered is applied by Stripe's retry.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from collector.api.deps import PoolDep, SettingsDep, TodayDep
from collector.api.schemas import Problem
from collector.db.settlement import remember_webhook_event
from collector.gateways.base import Returned, Succeeded
from collector.gateways.stripe_webhooks import (
    WebhookPayloadError,
    WebhookSignatureError,
    parse_event,
    settlement_of,
)
from collector.jobs.settle import apply_by_key
from collector.logs import get_logger

router = APIRouter(tags=["webhooks"])
log = get_logger()


@router.post(
    "/webhooks/stripe",
    summary="Stripe events: ACH debits settling or coming back",
    responses={
        400: {"model": Problem, "description": "Not signed by Stripe, stale, or not an event"},
        404: {"model": Problem, "description": "Stripe webhooks are not configured here"},
    },
)
async def stripe_webhook(
    request: Request, pool: PoolDep, settings: SettingsDep, today: TodayDep
) -> JSONResponse:
    """Verify a Stripe delivery and apply the settlement or return it reports."""
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
        log.warning("webhook_rejected", gateway="stripe", error=type(exc).__name__)
        return JSONResponse({"detail": str(exc)}, status_code=400)
    if fact is not None and isinstance(fact[1], Succeeded | Returned):
        key, settlement = fact
        await apply_by_key(
            pool,
            key,
            settlement,
            as_of=today,
            retry_days=settings.soft_retry_days,
            source="webhook",
        )
    first = await remember_webhook_event(pool, gateway="stripe", event_id=event.id, kind=event.type)
    log.info("webhook_received", gateway="stripe", event_type=event.type, replay=not first)
    return JSONResponse({"received": True, "replay": not first})
