"""Strict types at the API: no coercion in bodies, one canonical spelling of every path id."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

import asyncpg
import httpx
import pytest

from collector.api import schemas
from collector.api.app import create_app
from collector.api.schemas import StrictBody
from collector.config import Settings
from collector.gateways.base import Gateway
from tests.api.test_auth_and_health import V1_OPERATIONS
from tests.factories import make_lease

TODAY = date(2026, 11, 26)


async def _tables(pool: asyncpg.Pool) -> list[int]:
    return [
        await pool.fetchval(f"SELECT count(*) FROM {table}")
        for table in ("payment_methods", "payments", "charge_attempts", "money_movements")
    ]


async def test_every_request_body_is_a_strict_body(
    api_settings: Settings, pool: asyncpg.Pool, gateways: Mapping[str, Gateway]
) -> None:
    document = create_app(api_settings, pool, gateways).openapi()
    refs = {
        ref.rsplit("/", 1)[-1]
        for operations in document["paths"].values()
        for operation in operations.values()
        if "requestBody" in operation
        for ref in re.findall(r"'\$ref': '([^']+)'", str(operation["requestBody"]))
    }
    assert refs == {
        "NewPaymentMethod",
        "PrimaryChange",
        "ManualPayment",
        "NewPromise",
        "FeeWaiver",
        "LeaseState",
    }
    for name in refs:
        assert issubclass(getattr(schemas, name), StrictBody), name


COERCIBLE_PAYMENTS: list[dict[str, Any]] = [
    {"amount_cents": True},  # was taken as 1 cent
    {"amount_cents": "2500"},
    {"amount_cents": 2500.0},
    {"amount_cents": 25e2},
    {"amount_cents": [2500]},
    {"payment_method_id": "1"},
    {"payment_method_id": True},
    {"payment_method_id": 1.0},
    {"amount_cents": None, "payment_method_id": {"id": 1}},
]


async def test_manual_pay_takes_integers_only_where_integers_are_asked(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 11, 1)], amount_cents=5_000)
    before = await _tables(pool)
    for n, body in enumerate(COERCIBLE_PAYMENTS):
        response = await client.post(
            f"/v1/leases/{lease.lease_id}/payments", json=body, headers={"Idempotency-Key": f"k{n}"}
        )
        assert response.status_code == 422, (body, response.text)
        assert isinstance(response.json()["detail"], list)
    assert await _tables(pool) == before


COERCIBLE_METHODS: list[dict[str, Any]] = [
    {"kind": 1},
    {"gateway": ["sandbox_card"]},
    {"token": 12345},
    {"brand": 7},
    {"last4": 4242},
    {"make_primary": 1},
    {"make_primary": "true"},
]


async def test_a_new_method_takes_strings_and_booleans_only_as_such(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
    before = await _tables(pool)
    for change in COERCIBLE_METHODS:
        body = {"kind": "card", "gateway": "sandbox_card", "token": "sandbox_card_ok", **change}
        response = await client.post(
            f"/v1/customers/{lease.customer_id}/payment-methods", json=body
        )
        assert response.status_code == 422, (change, response.text)
    assert await _tables(pool) == before


async def test_a_primary_change_takes_an_integer_id_only(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
    for value in (str(lease.method_id), float(lease.method_id), True):
        response = await client.put(
            f"/v1/customers/{lease.customer_id}/primary-payment-method",
            json={"payment_method_id": value},
        )
        assert response.status_code == 422, (value, response.text)
    # The same request, typed right, is accepted: the refusals above were about the type.
    response = await client.put(
        f"/v1/customers/{lease.customer_id}/primary-payment-method",
        json={"payment_method_id": lease.method_id},
    )
    assert response.status_code == 200, response.text


NOT_CANONICAL = [
    "007",
    "+7",
    " 7",
    "7 ",
    "7.0",
    "7e0",
    "0x7",
    "7_0",
    "\u0667",  # ARABIC-INDIC DIGIT SEVEN: int() takes it
    "0",
    "-7",
    "9223372036854775808",  # bigint's max + 1
    "99999999999999999999999999",
]


@pytest.mark.parametrize(("method", "path", "body"), V1_OPERATIONS)
async def test_every_path_id_has_one_spelling(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    async with pool.acquire() as conn:
        # Customer 7 and lease 7 exist and something is overdue, so a request taken for
        # either one would read or write something.
        for _ in range(7):
            lease = await make_lease(conn, due_dates=[date(2026, 11, 1)])
    assert (lease.customer_id, lease.lease_id) == (7, 7)
    before = await _tables(pool)
    for spelling in NOT_CANONICAL:
        url = path.format(customer_id=spelling, lease_id=spelling, fee_id=spelling)
        response = await client.request(method, url, json=body, headers={"Idempotency-Key": "k"})
        assert response.status_code == 422, (spelling, response.text)
        assert response.json()["detail"][0]["loc"][0] == "path"
    assert await _tables(pool) == before


async def test_the_canonical_spelling_is_served(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        for _ in range(7):
            await make_lease(conn, due_dates=[date(2026, 11, 1)])
    assert (await client.get("/v1/leases/7")).json()["id"] == 7
    assert [line["id"] for line in (await client.get("/v1/customers/7/leases")).json()] == [7]
    max_id = await client.get("/v1/leases/9223372036854775807")
    assert max_id.status_code == 404  # a valid id, looked up: no such lease
