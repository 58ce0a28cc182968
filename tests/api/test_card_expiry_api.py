"""A card's expiry month and year are taken and shown for display (and expiry notices) only."""

from __future__ import annotations

import asyncpg
import httpx

from tests.factories import make_lease


async def test_a_card_is_registered_with_its_expiry_and_shows_it(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    url = f"/v1/customers/{lease.customer_id}/payment-methods"
    card = {"kind": "card", "gateway": "sandbox_card", "token": "sandbox_card_ok", "last4": "4444"}
    response = await client.post(url, json={**card, "exp_month": 2, "exp_year": 2027})
    assert response.status_code == 201, response.text
    assert (response.json()["exp_month"], response.json()["exp_year"]) == (2, 2027)
    listed = {m["id"]: m for m in (await client.get(url)).json()}
    assert (listed[response.json()["id"]]["exp_month"], listed[lease.method_id]["exp_month"]) == (
        2,
        None,
    )


async def test_an_expiry_must_be_whole_valid_and_on_a_card(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    url = f"/v1/customers/{lease.customer_id}/payment-methods"
    card = {"kind": "card", "gateway": "sandbox_card", "token": "sandbox_card_ok"}
    ach = {"kind": "ach", "gateway": "sandbox_ach", "token": "sandbox_ach_ok"}
    for body in (
        {**card, "exp_month": 2},
        {**card, "exp_year": 2027},
        {**card, "exp_month": 13, "exp_year": 2027},
        {**card, "exp_month": 2, "exp_year": 1999},
        {**card, "exp_month": "02", "exp_year": 2027},
        {**ach, "exp_month": 2, "exp_year": 2027},
    ):
        response = await client.post(url, json=body)
        assert response.status_code == 422, body
    count = await pool.fetchval(
        "SELECT count(*) FROM payment_methods WHERE customer_id = $1", lease.customer_id
    )
    assert count == 1
