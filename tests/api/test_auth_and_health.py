from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.api.app import create_app
from collector.api.auth import token_matches
from collector.config import Settings
from collector.gateways.base import Gateway
from tests.api.conftest import API_TOKEN, OLD_TOKEN
from tests.factories import make_lease

# Every /v1 operation (with a body where one is needed). Authentication comes before anything
# else, so ids that do not exist are fine.
V1_OPERATIONS = [
    ("GET", "/v1/customers/{customer_id}/leases", None),
    ("GET", "/v1/leases/{lease_id}", None),
    ("GET", "/v1/leases/{lease_id}/schedule", None),
    ("GET", "/v1/leases/{lease_id}/payoff", None),
    ("GET", "/v1/customers/{customer_id}/payment-methods", None),
    (
        "POST",
        "/v1/customers/{customer_id}/payment-methods",
        {"kind": "card", "gateway": "sandbox_card", "token": "sandbox_card_ok"},
    ),
    ("PUT", "/v1/customers/{customer_id}/primary-payment-method", {"payment_method_id": 1}),
    ("POST", "/v1/leases/{lease_id}/payments", {}),
    ("GET", "/v1/leases/{lease_id}/promises", None),
    ("POST", "/v1/leases/{lease_id}/promises", {"amount_cents": 100, "promised_on": "2026-12-01"}),
    ("GET", "/v1/leases/{lease_id}/fees", None),
    ("POST", "/v1/leases/{lease_id}/fees/{fee_id}/waive", {"reason": "goodwill"}),
    ("PUT", "/v1/leases/{lease_id}/state", {"state": "CA"}),
]


async def test_the_list_of_v1_operations_is_complete(
    api_settings: Settings, pool: asyncpg.Pool, gateways: Mapping[str, Gateway]
) -> None:
    documented = create_app(api_settings, pool, gateways).openapi()["paths"]

    assert {
        (method.upper(), path)
        for path, operations in documented.items()
        if path.startswith("/v1/")
        for method in operations
    } == {(method, path) for method, path, _ in V1_OPERATIONS}
    for path, operations in documented.items():
        for operation in operations.values():
            assert ("security" in operation) == path.startswith("/v1/")


async def written(pool: asyncpg.Pool) -> list[int]:
    async with pool.acquire() as conn:
        return [
            await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("payment_methods", "payments", "charge_attempts")
        ]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-the-token-0123456789",
        f"Bearer {API_TOKEN}x",
        f"Bearer {API_TOKEN[:-1]}",
        f"Basic {API_TOKEN}",  # the right secret under the wrong scheme
        API_TOKEN,
        "Bearer",
        "Bearer ",
    ],
)
async def test_v1_refuses_a_missing_or_wrong_token_with_401(
    client: httpx.AsyncClient, pool: asyncpg.Pool, authorization: str | None
) -> None:
    # Customer 1, lease 1 and method 1 exist and something is overdue, so each request would
    # read or write something if it were let through.
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 11, 1)])
        assert (lease.customer_id, lease.lease_id, lease.method_id) == (1, 1, 1)
    before = await written(pool)
    headers = {} if authorization is None else {"Authorization": authorization}
    client.headers.pop("Authorization")

    for method, path, body in V1_OPERATIONS:
        response = await client.request(
            method,
            path.format(customer_id=1, lease_id=1, fee_id=1),
            json=body,
            headers={**headers, "Idempotency-Key": "key-1"},
        )

        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"detail": "missing or invalid bearer token"}
    assert await written(pool) == before


@pytest.mark.parametrize("token", [API_TOKEN, OLD_TOKEN])
async def test_both_configured_tokens_are_accepted_while_rotating(
    client: httpx.AsyncClient, pool: asyncpg.Pool, token: str
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])

    response = await client.get(
        f"/v1/leases/{lease.lease_id}", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 200


def test_token_matches_only_a_whole_accepted_token() -> None:
    accepted = [b"first-token-0123456789", b"second-token-0123456789"]

    assert token_matches("first-token-0123456789", accepted)
    assert token_matches("second-token-0123456789", accepted)
    assert not token_matches("first-token-012345678", accepted)  # a prefix
    assert not token_matches("first-token-01234567890", accepted)  # one character more
    assert not token_matches("FIRST-TOKEN-0123456789", accepted)
    assert not token_matches("", accepted)
    assert not token_matches("first-token-0123456789", [])
    assert token_matches("jeton-accentué-0123456789", ["jeton-accentué-0123456789".encode()])


async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    client.headers.pop("Authorization")

    response = await client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_ready_when_the_database_answers_and_the_schema_is_current(
    client: httpx.AsyncClient,
) -> None:
    client.headers.pop("Authorization")

    response = await client.get("/readyz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_not_ready_while_a_migration_is_pending(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)"
        )

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "detail": "1 migration(s) pending"}


@pytest.mark.ledger_left_dirty("the database is gone: there is nothing to audit")
async def test_not_ready_when_the_database_is_gone(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await pool.close()

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["detail"].startswith("database: ")


async def test_metrics_are_prometheus_text_without_a_token(client: httpx.AsyncClient) -> None:
    client.headers.pop("Authorization")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert families, "no metric at all"
    assert all(name.startswith("collector_") for name in families)
    # Counters are exposed without the _total suffix in the family name.
    assert "collector_charges" in families
    assert families["collector_charges"].type == "counter"


async def test_an_unauthenticated_call_is_401_before_its_body_is_read(
    client: httpx.AsyncClient,
) -> None:
    # Malformed JSON and an invalid id: without a token the answer is still 401, so a caller
    # without one learns nothing of what the API would refuse.
    response = await client.post(
        "/v1/leases/not-a-number/payments",
        content=b"{not json",
        headers={"Authorization": "", "Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_once_the_daemon_is_stopping_nothing_new_is_taken(
    api_settings: Settings, pool: asyncpg.Pool, gateways: Mapping[str, Gateway]
) -> None:
    # The listener closes at the server's next tick: a request that arrives in that tick, or
    # on a connection kept alive, is answered 503 without reaching a handler.
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 11, 1)])
    app = create_app(api_settings, pool, gateways)
    app.state.drain.start()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://portal.test",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        paid = await http.post(
            f"/v1/leases/{lease.lease_id}/payments", json={}, headers={"Idempotency-Key": "k-1"}
        )
        assert paid.status_code == 503
        assert paid.json()["code"] == "shutting_down"
        assert paid.headers["Retry-After"] == "5"
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0
    assert await pool.fetchval("SELECT count(*) FROM charge_attempts") == 0
