"""Manual pay refuses what it must not charge, before anything is recorded or sent: a lease
that is not active, a method whose kind its gateway does not charge, a customer who started
too many payments just now; and the card networks' decline caps hold across requests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from collector.api.app import create_app
from collector.config import Settings
from collector.gateways.base import Gateway
from collector.jobs.manual_pay import HELD_KEY_TRIES
from tests.api.conftest import API_TOKEN, NOW
from tests.factories import carried_over_attempt, make_lease, next_payment_id

TODAY = date(2026, 11, 26)
LAST_MONTH = TODAY - timedelta(days=31)


async def _written(pool: asyncpg.Pool) -> dict[str, int]:
    counts = {}
    for table in ("payments", "charge_attempts", "money_movements", "sandbox.charges"):
        counts[table] = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return counts


def _pay(http: httpx.AsyncClient, lease_id: int, key: str, body: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    return http.post(
        f"/v1/leases/{lease_id}/payments", json=body or {}, headers={"Idempotency-Key": key}
    )


@pytest.fixture
def portal(
    database_url: str, pool: asyncpg.Pool, gateways: Mapping[str, Gateway]
) -> Callable[..., Any]:
    """``async with portal(**settings) as http``: the portal API with these settings."""

    @asynccontextmanager
    async def open_portal(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(
            database_url=database_url,  # type: ignore[arg-type]
            api_tokens=[API_TOKEN],  # type: ignore[list-item]
            sandbox_latency_ms=0,
            **overrides,
        )
        app = create_app(settings, pool, gateways, clock=lambda: NOW)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://portal.test",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as http:
            yield http

    return open_portal


# A charged-off lease takes payments: recoveries (tests/jobs/test_delinquency.py).
@pytest.mark.parametrize("status", ["closed", "paid_off"])
async def test_a_lease_that_is_not_active_cannot_be_paid(
    client: httpx.AsyncClient, pool: asyncpg.Pool, status: str
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[LAST_MONTH], lease_status=status)
    before = await _written(pool)
    response = await _pay(client, lease.lease_id, "closed-1")
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        f"lease {lease.lease_id} is {status.replace('_', ' ')}: only an active or charged-off lease"
        " can be paid"
    )
    assert await _written(pool) == before


async def test_a_method_whose_kind_its_gateway_does_not_charge_is_never_charged(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[LAST_MONTH])
        # Stored before the API checked it: a card on file under the bank gateway.
        await conn.execute(
            "UPDATE payment_methods SET gateway = 'sandbox_ach' WHERE id = $1", lease.method_id
        )
    before = await _written(pool)
    response = await _pay(client, lease.lease_id, "mismatch-1")
    assert response.status_code == 422, response.text
    assert "does not charge" in response.json()["detail"]
    assert await _written(pool) == before  # sandbox.charges included: nothing was sent


@pytest.mark.parametrize(("kind", "gateway"), [("card", "sandbox_ach"), ("ach", "sandbox_card")])
async def test_a_method_whose_kind_its_gateway_does_not_charge_cannot_be_added(
    client: httpx.AsyncClient, pool: asyncpg.Pool, kind: str, gateway: str
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={"kind": kind, "gateway": gateway, "token": f"{gateway}_ok", "make_primary": True},
    )
    assert response.status_code == 422, response.text
    assert f"not {kind}" in response.json()["detail"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM payment_methods") == 1
        assert await conn.fetchval(
            "SELECT is_primary FROM payment_methods WHERE id = $1", lease.method_id
        )


async def test_a_customer_starting_too_many_payments_is_answered_429_with_retry_after(
    portal: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[LAST_MONTH], amount_cents=100_000)
        # A second lease of the same customer: the limit is the customer's, not the lease's.
        other = await conn.fetchval(
            "INSERT INTO leases (customer_id, store, agreement_ref, status, order_details)"
            " VALUES ($1, 'Test Store', 'AGR-OTHER', 'active', '{}') RETURNING id",
            lease.customer_id,
        )
        await conn.execute(
            "INSERT INTO installments"
            " (lease_id, customer_id, seq, due_on, next_attempt_on, amount_cents)"
            " SELECT id, customer_id, 1, $2::date, $2::date, 100000 FROM leases WHERE id = $1",
            other,
            LAST_MONTH,
        )
    async with portal() as http:  # the defaults: 5 in 60 s
        for n in range(5):
            lease_id = lease.lease_id if n % 2 == 0 else other
            taken = await _pay(http, lease_id, f"pay-{n}", {"amount_cents": 100})
            assert taken.status_code == 201, taken.text
        before = await _written(pool)
        for lease_id in (lease.lease_id, other):
            refused = await _pay(http, lease_id, f"pay-more-{lease_id}", {"amount_cents": 100})
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "rate_limited"
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert await _written(pool) == before
        # A replay charges nothing, so it is answered as ever.
        replay = await _pay(http, lease.lease_id, "pay-0", {"amount_cents": 100})
        assert replay.status_code == 201


async def test_a_payment_committed_while_a_request_waits_for_the_customer_counts(
    portal: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    # The customer's lock is taken, and only then the window counted, in a statement of its
    # own: counted in the locking statement, a request that waited for the lock would read a
    # snapshot from before the payment committed meanwhile, and pass the limit.
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[LAST_MONTH], amount_cents=100_000)
    async with pool.acquire() as other, portal(manual_pay_max_attempts=1) as http:
        holding = other.transaction()
        await holding.start()
        # Another request of the customer's, mid-claim: the customer locked, its payment
        # written, not yet committed.
        await other.execute(
            "SELECT id FROM customers WHERE id = $1 FOR NO KEY UPDATE", lease.customer_id
        )
        await other.execute(
            "INSERT INTO payments (lease_id, customer_id, payment_method_id, amount_cents,"
            " request_key, request_hash, as_of) VALUES ($1, $2, $3, 100, 'first', 'h', $4)",
            lease.lease_id,
            lease.customer_id,
            lease.method_id,
            LAST_MONTH,
        )
        answers: list[httpx.Response] = []

        async def pay() -> None:
            answers.append(await _pay(http, lease.lease_id, "second", {"amount_cents": 100}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(pay)
            # Until the request waits for the customer's lock: the server's own view (polled,
            # nothing here could set an Event).
            with anyio.fail_after(10):
                while not await pool.fetchval(  # noqa: ASYNC110
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
                ):
                    await anyio.sleep(0.01)
            await holding.commit()
    [answer] = answers
    assert answer.status_code == 429, answer.text
    assert await pool.fetchval("SELECT count(*) FROM payments") == 1
    assert await pool.fetchval("SELECT count(*) FROM sandbox.charges") == 0


@pytest.mark.parametrize(
    ("limit", "reach_gateway", "refused_as"),
    [
        # The default rate limit stops the storm first: 5 a minute.
        ({}, 5, 429),
        # Without it, the card networks' cap (15 declines in 30 days for this card's brand).
        ({"manual_pay_max_attempts": 1000}, 15, 422),
    ],
)
async def test_twenty_declined_manual_payments_do_not_reach_the_gateway_twenty_times(
    portal: Callable[..., Any],
    pool: asyncpg.Pool,
    limit: dict[str, Any],
    reach_gateway: int,
    refused_as: int,
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token="sandbox_card_insufficient_funds", due_dates=[LAST_MONTH]
        )
    async with portal(**limit) as http:
        answers = [await _pay(http, lease.lease_id, f"storm-{n}") for n in range(20)]
    codes = [answer.status_code for answer in answers]
    assert codes == [402] * reach_gateway + [refused_as] * (20 - reach_gateway), codes
    if refused_as == 422:
        assert {answer.json()["code"] for answer in answers[reach_gateway:]} == {"card_retry_cap"}
    async with pool.acquire() as conn:
        # The gateway's own record of what it was asked.
        sent = await conn.fetchval("SELECT count(*) FROM sandbox.charges")
    assert sent == reach_gateway


async def test_a_payment_whose_keys_are_all_held_is_answered_503_and_charges_nothing(
    pool: asyncpg.Pool, portal: Callable[..., Any]
) -> None:
    # Every key the next tries would derive (collector-pay-<id>) is held by an attempt of
    # another customer: the portal gets a JSON 503 with Retry-After, not a 500, and nothing
    # is recorded or sent; once past them, the same request is collected.
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[LAST_MONTH], amount_cents=10_000)
        next_id = await next_payment_id(conn)
        for n in range(HELD_KEY_TRIES):
            await carried_over_attempt(conn, f"collector-pay-{next_id + n}", as_of=LAST_MONTH)
    async with portal() as http:
        before = await _written(pool)
        refused = await _pay(http, lease.lease_id, "held-1")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "try_again"
        assert int(refused.headers["Retry-After"]) >= 1
        assert await _written(pool) == before
        taken = await _pay(http, lease.lease_id, "held-1")
        assert taken.status_code == 201, taken.text
    held = await pool.fetchval(
        "SELECT count(*) FROM needs_attention WHERE reason = 'manual_pay_key_held'"
    )
    assert held == HELD_KEY_TRIES
    # An operator looks at the held keys (the audit lists them) and resolves them.
    await pool.execute("UPDATE needs_attention SET resolved_at = now() WHERE resolved_at IS NULL")
