"""POST /webhooks/stripe: signed deliveries apply once; anything else changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import date

import asyncpg
import httpx
import pytest

from collector.api.app import create_app
from collector.config import Settings
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from tests.api.conftest import NOW
from tests.factories import attempts_of, installment, make_lease

SECRET = "whsec_test_0123456789abcdef"
TODAY = date(2026, 11, 26)


@pytest.fixture
async def webhook_client(
    database_url: str, pool: asyncpg.Pool, gateways: Mapping[str, Gateway]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, stripe_webhook_secret=SECRET)  # type: ignore[arg-type]
    app = create_app(settings, pool, gateways, clock=lambda: NOW)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://collector.test"
    ) as http:
        yield http


def _event(event_id: str, kind: str, key: str, **intent: object) -> bytes:
    obj = {
        "id": "pi_123",
        "object": "payment_intent",
        "status": "succeeded",
        "metadata": {"collector_attempt_key": key},
        "payment_method_types": ["us_bank_account"],
        **intent,
    }
    event = {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }
    return json.dumps(event).encode()


def _signed(payload: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    t = at if at is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}


async def _processing_debit(pool: asyncpg.Pool, gateways: Mapping[str, Gateway], database_url: str):  # type: ignore[no-untyped-def]
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token="sandbox_ach_ok", due_dates=[TODAY], amount_cents=6_000
        )
    settings = Settings(database_url=database_url)  # type: ignore[arg-type]
    await run_pass(pool, gateways, settings, as_of=TODAY)
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
    assert attempt["status"] == "processing"
    return lease, attempt


async def test_a_signed_settlement_applies_once_and_a_replay_changes_nothing(
    webhook_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    database_url: str,
) -> None:
    lease, attempt = await _processing_debit(pool, gateways, database_url)
    payload = _event("evt_1", "payment_intent.succeeded", attempt["idempotency_key"])
    first = await webhook_client.post("/webhooks/stripe", content=payload, headers=_signed(payload))
    assert first.status_code == 200 and first.json() == {"received": True, "replay": False}
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
        assert (row["status"], row["paid_cents"]) == ("paid", 6_000)
    again = await webhook_client.post("/webhooks/stripe", content=payload, headers=_signed(payload))
    assert again.json() == {"received": True, "replay": True}
    async with pool.acquire() as conn:
        assert (await installment(conn, lease.installment_ids[0]))["paid_cents"] == 6_000
        assert await conn.fetchval("SELECT count(*) FROM webhook_events") == 1


async def test_a_signed_return_reverses_once(
    webhook_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    database_url: str,
) -> None:
    lease, attempt = await _processing_debit(pool, gateways, database_url)
    failure = {
        "status": "requires_payment_method",
        "last_payment_error": {
            "type": "invalid_request_error",
            "code": "debit_not_authorized",
            "message": "The customer says they did not authorize it.",
        },
    }
    for event_id in ("evt_a", "evt_b"):  # Stripe may send the same fact twice, as two events
        payload = _event(
            event_id, "payment_intent.payment_failed", attempt["idempotency_key"], **failure
        )
        response = await webhook_client.post(
            "/webhooks/stripe", content=payload, headers=_signed(payload)
        )
        assert response.status_code == 200
    async with pool.acquire() as conn:
        returns = await conn.fetch("SELECT return_code, category, source FROM charge_returns")
        method = await conn.fetchval(
            "SELECT status FROM payment_methods WHERE id = $1", lease.method_id
        )
        row = await installment(conn, lease.installment_ids[0])
    assert [tuple(r) for r in returns] == [("R10", "unauthorized", "webhook")]
    assert method == "disabled"
    assert (row["status"], row["paid_cents"], row["next_attempt_on"]) == ("overdue", 0, None)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Stripe-Signature": "t=1,v1=deadbeef"},
        "wrong-secret",
        "stale",
    ],
)
async def test_an_unsigned_or_badly_signed_delivery_is_400_with_no_effect(
    webhook_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    database_url: str,
    headers: object,
) -> None:
    lease, attempt = await _processing_debit(pool, gateways, database_url)
    payload = _event("evt_bad", "payment_intent.succeeded", attempt["idempotency_key"])
    if headers == "wrong-secret":
        headers = _signed(payload, secret="whsec_someone_else")
    elif headers == "stale":
        headers = _signed(payload, at=int(time.time()) - 3_600)
    response = await webhook_client.post("/webhooks/stripe", content=payload, headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 400
    async with pool.acquire() as conn:
        assert (await installment(conn, lease.installment_ids[0]))["status"] == "pending_settlement"
        assert await conn.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_unknown_events_are_acknowledged_and_ignored(
    webhook_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    payload = _event("evt_x", "customer.created", "whatever")
    response = await webhook_client.post(
        "/webhooks/stripe", content=payload, headers=_signed(payload)
    )
    assert response.status_code == 200
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM charge_returns") == 0


@pytest.mark.parametrize("secret", [None, "   "])
async def test_webhooks_without_a_signing_secret_are_404_not_500(
    database_url: str, pool: asyncpg.Pool, gateways: Mapping[str, Gateway], secret: str | None
) -> None:
    settings = Settings(database_url=database_url, stripe_webhook_secret=secret)  # type: ignore[arg-type]
    app = create_app(settings, pool, gateways, clock=lambda: NOW)
    payload = _event("evt_1", "payment_intent.succeeded", "k")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://collector.test"
    ) as http:
        response = await http.post("/webhooks/stripe", content=payload, headers=_signed(payload))
    assert response.status_code == 404
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM webhook_events") == 0
