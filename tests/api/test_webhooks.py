"""POST /webhooks/stripe: signed deliveries apply once; anything else changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import date
from typing import Any

import asyncpg
import httpx
import pytest
from structlog.testing import capture_logs

from collector.api.app import create_app
from collector.config import Settings
from collector.gateways.base import Gateway
from collector.gateways.stripe import open_stripe_ach, open_stripe_card
from collector.jobs.collect import run_pass
from collector.metrics import REGISTRY
from tests.api.conftest import API_TOKEN, NOW
from tests.factories import LeaseRef, attempts_of, installment, make_lease
from tests.gateways.fake_stripe import FakeStripe, dispute, event_payload, serve_fake_stripe
from tests.gateways.test_stripe import context

# The Stripe SDK's HTTPXClient hands httpx the encoded form as `data=`, which httpx deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

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
        "amount": 6_000,
        "currency": "usd",
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


# -- through Stripe: the fake Stripe server behind the real adapters ---------------------------


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[FakeStripe]:
    async with serve_fake_stripe() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeStripe) -> FakeStripe:
    served.reset()
    return served


@pytest.fixture
async def with_stripe(
    gateways: Mapping[str, Gateway], fake: FakeStripe
) -> AsyncIterator[Mapping[str, Gateway]]:
    """The sandbox gateways plus both Stripe adapters, talking to the fake Stripe."""
    async with (
        open_stripe_card(context(fake)) as card,
        open_stripe_ach(context(fake, "stripe_ach")) as ach,
    ):
        yield {**gateways, "stripe_card": card, "stripe_ach": ach}


@pytest.fixture
async def stripe_client(
    database_url: str, pool: asyncpg.Pool, with_stripe: Mapping[str, Gateway]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, stripe_webhook_secret=SECRET)  # type: ignore[arg-type]
    app = create_app(settings, pool, with_stripe, clock=lambda: NOW)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://collector.test"
    ) as http:
        yield http


async def _through_stripe(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    database_url: str,
    *,
    kind: str,
    method: str,
) -> tuple[LeaseRef, asyncpg.Record]:
    """A lease whose primary method is saved at Stripe, collected once by a real pass."""
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token=f"sandbox_{kind}_ok", due_dates=[TODAY], amount_cents=6_000
        )
        await conn.execute(
            "UPDATE payment_methods SET gateway = $2, token = $3 WHERE id = $1",
            lease.method_id,
            f"stripe_{kind}",
            f"cus_fake42:{method}",
        )
    settings = Settings(database_url=database_url)  # type: ignore[arg-type]
    await run_pass(pool, gateways, settings, as_of=TODAY)
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
    return lease, attempt


async def _deliver(
    http: httpx.AsyncClient, event_type: str, obj: dict[str, Any], event_id: str
) -> httpx.Response:
    payload = event_payload(event_type, obj, event_id=event_id)
    return await http.post("/webhooks/stripe", content=payload, headers=_signed(payload))


async def _state(pool: asyncpg.Pool, lease: LeaseRef) -> dict[str, Any]:
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
        returns = await conn.fetch(
            "SELECT return_code, category, source FROM charge_returns ORDER BY received_at"
        )
        method = await conn.fetchval(
            "SELECT status FROM payment_methods WHERE id = $1", lease.method_id
        )
    return {
        "installment": (row["status"], row["paid_cents"]),
        "attempt": attempt["status"],
        "returns": [tuple(r) for r in returns],
        "method": method,
    }


async def test_a_signed_settlement_applies_once_and_a_replay_changes_nothing(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="ach", method="pm_ach_ok"
    )
    assert attempt["status"] == "processing"
    fake.settle(attempt["gateway_ref"])
    settled = fake.intents[attempt["gateway_ref"]]
    first = await _deliver(stripe_client, "payment_intent.succeeded", settled, "evt_1")
    assert first.status_code == 200 and first.json() == {"received": True, "replay": False}
    assert (await _state(pool, lease))["installment"] == ("paid", 6_000)
    again = await _deliver(stripe_client, "payment_intent.succeeded", settled, "evt_1")
    assert again.json() == {"received": True, "replay": True}
    assert (await _state(pool, lease))["installment"] == ("paid", 6_000)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM webhook_events") == 1


async def test_a_signed_return_reverses_once(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="ach", method="pm_ach_ok"
    )
    fake.fail(attempt["gateway_ref"], "debit_not_authorized")
    failed = fake.intents[attempt["gateway_ref"]]
    for event_id in ("evt_a", "evt_b"):  # Stripe may send the same fact twice, as two events
        response = await _deliver(stripe_client, "payment_intent.payment_failed", failed, event_id)
        assert response.status_code == 200, response.text
    assert await _state(pool, lease) == {
        "installment": ("overdue", 0),
        "attempt": "returned",
        "returns": [("R10", "unauthorized", "webhook")],
        "method": "disabled",
    }
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
    assert row["next_attempt_on"] is None


async def test_an_ach_dispute_after_settlement_reverses_the_payment_once(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="ach", method="pm_ach_ok"
    )
    assert attempt["status"] == "processing"
    intent_id = attempt["gateway_ref"]
    fake.settle(intent_id)
    settled = await _deliver(
        stripe_client, "payment_intent.succeeded", fake.intents[intent_id], "evt_ok"
    )
    assert settled.status_code == 200
    assert (await _state(pool, lease))["installment"] == ("paid", 6_000)

    # Weeks later the customer's bank disputes it: the event names the PaymentIntent only.
    disputed = dispute(fake.intents[intent_id], reason="debit_not_authorized")
    first = await _deliver(stripe_client, "charge.dispute.created", disputed, "evt_dp")
    again = await _deliver(stripe_client, "charge.dispute.created", disputed, "evt_dp")

    assert first.json() == {"received": True, "replay": False}
    assert again.json() == {"received": True, "replay": True}
    assert await _state(pool, lease) == {
        "installment": ("overdue", 0),
        "attempt": "returned",
        "returns": [("R10", "unauthorized", "webhook")],
        "method": "disabled",
    }
    # The replay was answered from webhook_events: Stripe was asked once.
    assert fake.retrieved == {intent_id: 1}


async def test_a_dispute_delivered_before_the_settlement_event_still_returns_the_debit(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="ach", method="pm_ach_ok"
    )
    intent_id = attempt["gateway_ref"]
    fake.settle(intent_id)
    succeeded = dict(fake.intents[intent_id])

    # Out of order: the dispute arrives while the engine still thinks the debit is in flight.
    disputed = dispute(fake.intents[intent_id], reason="unrecognized")
    assert (await _deliver(stripe_client, "charge.dispute.created", disputed, "evt_2")).is_success
    late = await _deliver(stripe_client, "payment_intent.succeeded", succeeded, "evt_1")

    assert late.json() == {"received": True, "replay": False}
    assert await _state(pool, lease) == {
        "installment": ("overdue", 0),
        "attempt": "returned",
        "returns": [("R10", "unauthorized", "webhook")],
        "method": "disabled",
    }


async def test_a_card_dispute_is_acknowledged_and_changes_nothing(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="card", method="pm_card_ok"
    )
    assert attempt["status"] == "succeeded"
    intent = fake.intents[attempt["gateway_ref"]]
    for event_id, method_type in (("evt_c1", "card"), ("evt_c2", None)):
        disputed = dispute(intent, reason="fraudulent", method_type=method_type)
        response = await _deliver(stripe_client, "charge.dispute.created", disputed, event_id)
        assert response.json() == {"received": True, "replay": False}

    assert await _state(pool, lease) == {
        "installment": ("paid", 6_000),
        "attempt": "succeeded",
        "returns": [],
        "method": "active",
    }


async def test_a_dispute_stripe_cannot_be_asked_about_is_503_and_applies_when_redelivered(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="ach", method="pm_ach_ok"
    )
    fake.settle(attempt["gateway_ref"])
    disputed = dispute(fake.intents[attempt["gateway_ref"]])
    fake.failing_reads = True
    refused = await _deliver(stripe_client, "charge.dispute.created", disputed, "evt_503")
    assert refused.status_code == 503
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM webhook_events") == 0

    fake.failing_reads = False
    retried = await _deliver(stripe_client, "charge.dispute.created", disputed, "evt_503")

    assert retried.json() == {"received": True, "replay": False}
    assert (await _state(pool, lease))["returns"] == [("R10", "unauthorized", "webhook")]


async def test_a_card_left_processing_then_declined_is_declined_once_by_its_webhook(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="card", method="pm_card_processing"
    )
    assert attempt["status"] == "processing"
    fake.decline(attempt["gateway_ref"], "insufficient_funds")
    failed = fake.intents[attempt["gateway_ref"]]
    for _ in range(2):
        response = await _deliver(stripe_client, "payment_intent.payment_failed", failed, "evt_f")
        assert response.status_code == 200

    state = await _state(pool, lease)
    assert (state["attempt"], state["installment"][1], state["method"]) == ("declined", 0, "active")
    assert state["installment"][0] == "overdue"
    async with pool.acquire() as conn:
        code = await conn.fetchval(
            "SELECT outcome_code FROM charge_attempts WHERE id = $1", attempt["id"]
        )
    assert code == "insufficient_funds"


async def test_a_card_added_again_through_the_portal_keeps_its_history(
    database_url: str, pool: asyncpg.Pool, with_stripe: Mapping[str, Gateway]
) -> None:
    # The networks count a card's declines per card, and NACHA an account's reinitiations per
    # account: Stripe's fingerprint names the card whatever PaymentMethod carries it.
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        api_tokens=[API_TOKEN],  # type: ignore[list-item]
        gateways=["sandbox_card", "sandbox_ach", "stripe_card", "stripe_ach"],
    )
    app = create_app(settings, pool, with_stripe, clock=lambda: NOW)
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://portal.test",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        for n in (1, 2):
            response = await http.post(
                f"/v1/customers/{lease.customer_id}/payment-methods",
                json={
                    "kind": "card",
                    "gateway": "stripe_card",
                    "token": f"cus_fake42:pm_card_visa_same_{n}",
                    "last4": "4242",
                },
            )
            assert response.status_code == 201, response.text
            assert "fingerprint" not in response.text
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT fingerprint, instrument_key FROM payment_methods"
            " WHERE gateway = 'stripe_card' ORDER BY id"
        )
    assert len(rows) == 2 and rows[0]["fingerprint"] == rows[1]["fingerprint"] is not None
    assert rows[0]["instrument_key"] == rows[1]["instrument_key"]


# -- events bound to the attempt they name -----------------------------------------------------


def _rejections(reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "collector_webhooks_rejected_total", {"gateway": "stripe", "reason": reason}
        )
        or 0.0
    )


async def _nothing_recorded(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM webhook_events") == 0
        assert await conn.fetchval("SELECT count(*) FROM charge_returns") == 0
        assert await conn.fetchval("SELECT count(*) FROM needs_attention") == 0


async def test_a_signed_event_naming_another_gateways_attempt_changes_nothing(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
) -> None:
    # A sandbox bank debit in flight; events signed by Stripe name its key: a success (for
    # 1 cent, another PaymentIntent) and an R10 return.
    lease, attempt = await _processing_debit(pool, with_stripe, database_url)
    key = attempt["idempotency_key"]
    before = _rejections("gateway_mismatch")
    success = json.loads(_event("evt_s", "payment_intent.succeeded", key, amount=1))
    failure = json.loads(
        _event(
            "evt_f",
            "payment_intent.payment_failed",
            key,
            status="requires_payment_method",
            last_payment_error={"type": "card_error", "code": "debit_not_authorized"},
        )
    )
    for event in (success, failure):
        obj = event["data"]["object"]
        response = await _deliver(stripe_client, event["type"], obj, event["id"])
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "gateway_mismatch"
    assert _rejections("gateway_mismatch") == before + 2
    assert await _state(pool, lease) == {
        "installment": ("pending_settlement", 0),
        "attempt": "processing",
        "returns": [],
        "method": "active",
    }
    await _nothing_recorded(pool)


MISMATCHED: list[tuple[dict[str, Any], str]] = [
    ({"id": "pi_someone_else"}, "reference_mismatch"),
    ({"amount": 1}, "amount_mismatch"),
    ({"amount": 6_001}, "amount_mismatch"),
    ({"currency": "eur"}, "currency_mismatch"),
    ({"payment_method_types": ["card"]}, "method_kind_mismatch"),
    ({"payment_method_types": ["sepa_debit"]}, "method_kind_mismatch"),
    ({"metadata": {"collector_attempt_key": "collector-inst-999-1"}}, "unknown_attempt"),
]


async def test_a_signed_event_that_does_not_match_its_attempt_is_422_and_changes_nothing(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="ach", method="pm_ach_ok"
    )
    fake.settle(attempt["gateway_ref"])
    for n, (change, reason) in enumerate(MISMATCHED):
        forged = {**fake.intents[attempt["gateway_ref"]], **change}
        before = _rejections(reason)
        with capture_logs() as logs:
            response = await _deliver(stripe_client, "payment_intent.succeeded", forged, f"evt_{n}")
        assert response.status_code == 422, (change, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == reason, change
        assert _rejections(reason) == before + 1
        [logged] = [entry for entry in logs if entry["event"] == "webhook_rejected"]
        assert (logged["reason"], logged["event_id"]) == (reason, f"evt_{n}")
        assert "cus_fake42" not in str(logs) and "pm_ach_ok" not in str(logs)
        assert await _state(pool, lease) == {
            "installment": ("pending_settlement", 0),
            "attempt": "processing",
            "returns": [],
            "method": "active",
        }, change
        await _nothing_recorded(pool)
    # The genuine event, delivered after, applies.
    genuine = await _deliver(
        stripe_client, "payment_intent.succeeded", fake.intents[attempt["gateway_ref"]], "evt_g"
    )
    assert genuine.json() == {"received": True, "replay": False}
    assert (await _state(pool, lease))["installment"] == ("paid", 6_000)


async def test_a_dispute_whose_payment_does_not_match_its_attempt_returns_nothing(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="ach", method="pm_ach_ok"
    )
    fake.settle(attempt["gateway_ref"])
    await _deliver(
        stripe_client, "payment_intent.succeeded", fake.intents[attempt["gateway_ref"]], "evt_1"
    )
    # The PaymentIntent Stripe gives for the dispute says another amount than the attempt's.
    fake.intents[attempt["gateway_ref"]]["amount"] = 1
    disputed = dispute(fake.intents[attempt["gateway_ref"]])
    response = await _deliver(stripe_client, "charge.dispute.created", disputed, "evt_d")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "amount_mismatch"
    assert await _state(pool, lease) == {
        "installment": ("paid", 6_000),
        "attempt": "succeeded",
        "returns": [],
        "method": "active",
    }


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _object(event: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = event["data"]["object"]
    return found


MALFORMED: dict[str, Any] = {
    "nul-in-event-id": lambda e: e.update(id="evt_\x00nul"),
    "300kb-event-id": lambda e: e.update(id="evt_" + "a" * 300_000),
    "nul-in-type": lambda e: e.update(type="payment_intent.succeeded\x00"),
    "created-as-text": lambda e: e.update(created="1770000000"),
    "created-as-bool": lambda e: e.update(created=True),
    "livemode-as-text": lambda e: e.update(livemode="no"),
    "data-not-an-object": lambda e: e.update(data=[]),
    "object-not-an-object": lambda e: e["data"].update(object="pi_1"),
    "amount-as-text": lambda e: _object(e).update(amount="6000"),
    "amount-as-float": lambda e: _object(e).update(amount=6000.0),
    "amount-as-bool": lambda e: _object(e).update(amount=True),
    "no-amount": lambda e: _object(e).pop("amount"),
    "nul-in-intent-id": lambda e: _object(e).update(id="pi_\x00"),
    "metadata-a-list": lambda e: _object(e).update(metadata=["k"]),
    "nul-in-attempt-key": lambda e: _object(e)["metadata"].update(collector_attempt_key="k\x00"),
    "long-attempt-key": lambda e: _object(e)["metadata"].update(collector_attempt_key="k" * 300),
    "nul-in-message": lambda e: _object(e).update(
        status="requires_payment_method",
        last_payment_error={"code": "insufficient_funds", "message": "no\x00money"},
    ),
    "deep-nesting": lambda e: _object(e).update(nested=None),
    "top-level-array": lambda e: None,
}


async def test_a_signed_but_malformed_event_is_a_clear_400(
    stripe_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    with_stripe: Mapping[str, Gateway],
    database_url: str,
    fake: FakeStripe,
) -> None:
    lease, attempt = await _through_stripe(
        pool, with_stripe, database_url, kind="ach", method="pm_ach_ok"
    )
    fake.settle(attempt["gateway_ref"])
    for case, spoil in MALFORMED.items():
        event = json.loads(
            event_payload("payment_intent.succeeded", fake.intents[attempt["gateway_ref"]])
        )
        spoil(event)
        payload = json.dumps(event).encode()
        if case == "deep-nesting":
            payload = payload.replace(b'"nested": null', b'"nested": ' + _deep(100_000).encode())
        elif case == "top-level-array":
            payload = b"[" + payload + b"]"
        response = await stripe_client.post(
            "/webhooks/stripe", content=payload, headers=_signed(payload)
        )
        assert response.status_code == 400, (case, response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "malformed_event", case
        assert "Traceback" not in response.text and len(response.text) < 1_000
        assert (await _state(pool, lease))["installment"] == ("pending_settlement", 0)
        await _nothing_recorded(pool)
