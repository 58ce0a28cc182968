"""No request string may carry a card or bank account number, whatever the field and however
the number is typed: refused with 422, nothing stored, the number neither echoed nor logged."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.factories import make_lease, put_state
from tests.json_logs import captured_json_logs

TODAY = date(2026, 11, 26)
NEW_CARD = {"kind": "card", "gateway": "sandbox_card", "token": "pm_1MqLiJLkdIwHu7ixUEgbFdYF"}

NUMBERS = [
    "4111.1111.1111.1111",
    "4111_1111_1111_1111",
    "4111/1111/1111/1111",
    "4111\u200b1111\u200b1111\u200b1111",
    "4111\u20601111\u20601111\u20601111",
    "\uff14\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11",
    "\u0664\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661",
    "4111a1111b1111c1111",
    "Visa 4111 1111 1111 1111",
    "091000019:12345678901",
    "Chase 091000019-12345678",
    "4242424242424241",  # fails Luhn: refused all the same
    "000123456789",
]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    with captured_json_logs() as out:
        yield out


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    async with pool.acquire() as conn:
        return {
            table: [dict(row) for row in await conn.fetch(f"SELECT * FROM {table} ORDER BY id")]
            for table in ("payment_methods", "payments", "charge_attempts", "installments")
        }


def digits_of(text: str) -> str:
    return "".join(c for c in text if c.isdecimal())


def assert_refused_unechoed(response: httpx.Response, field: str, value: str) -> None:
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "card_or_account_number"
    assert body["detail"].startswith(f"{field} looks like a card or bank account number")
    assert value not in response.text
    assert digits_of(value) not in digits_of(response.text)


@pytest.mark.parametrize("value", NUMBERS, ids=lambda v: v.encode("unicode_escape").decode())
@pytest.mark.parametrize("field", ["token", "brand", "bank_name"])
async def test_a_number_in_any_field_of_a_new_method_is_refused_and_nothing_stored(
    client: httpx.AsyncClient, pool: asyncpg.Pool, json_logs: io.StringIO, field: str, value: str
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    before = await snapshot(pool)

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={**NEW_CARD, field: value, "make_primary": True},
    )

    assert_refused_unechoed(response, field, value)
    assert await snapshot(pool) == before
    assert digits_of(value) not in digits_of(json_logs.getvalue())


async def test_a_number_as_a_field_name_is_refused_without_naming_it(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    before = await snapshot(pool)

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={**NEW_CARD, "4111 1111 1111 1111": "x"},
    )

    assert_refused_unechoed(response, "a field name", "4111 1111 1111 1111")
    assert await snapshot(pool) == before


async def test_a_number_is_refused_first_even_beside_other_mistakes(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    # Another error's answer would list the field, and pydantic's own would quote the input.
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={**NEW_CARD, "gateway": "nope", "last4": "12345", "bank_name": "4111.1111.1111.1111"},
    )

    assert_refused_unechoed(response, "bank_name", "4111.1111.1111.1111")


@pytest.mark.parametrize(
    "key", ["4111-1111-1111-1111", "091000019:12345678901", "pay-4111x1111x1111x1111"]
)
async def test_a_number_as_idempotency_key_is_refused_and_nothing_charged(
    client: httpx.AsyncClient, pool: asyncpg.Pool, json_logs: io.StringIO, key: str
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY - timedelta(days=10)])
        await put_state(conn, lease.installment_ids[0], status="overdue", next_attempt_on=None)
    before = await snapshot(pool)

    response = await client.post(
        f"/v1/leases/{lease.lease_id}/payments", json={}, headers={"Idempotency-Key": key}
    )

    assert_refused_unechoed(response, "Idempotency-Key", key)
    assert await snapshot(pool) == before
    assert digits_of(key) not in digits_of(json_logs.getvalue())


@pytest.mark.parametrize(
    "change",
    [
        {"brand": "Visa", "bank_name": None},
        {
            "kind": "ach",
            "gateway": "sandbox_ach",
            "bank_name": "Bank of America, N.A.",
            "brand": None,
        },
        {"token": "cus_NffrFeUfNV2Hib:pm_1MqLiJLkdIwHu7ixUEgbFdYF"},
        {"token": "9b2e7f3c-1d4a-4c8e-9f6b-2a7d5e3c1b0f"},
        {"token": "12345678-1234-1234-1234-123456789abc", "brand": "My card (ending 4242)"},
        {"token": "acct 12345678901", "bank_name": "First National Bank 1234"},
    ],
)
async def test_tokens_and_names_are_taken(
    client: httpx.AsyncClient, pool: asyncpg.Pool, change: dict[str, object]
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods", json={**NEW_CARD, **change}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["brand"], body["bank_name"]) == (change.get("brand"), change.get("bank_name"))
    token = change.get("token", NEW_CARD["token"])
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT token FROM payment_methods WHERE id = $1", body["id"])
    assert stored == token
