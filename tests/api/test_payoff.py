"""GET /v1/leases/{id}/payoff and the payoff payment's guards, through the real API."""

from __future__ import annotations

from datetime import date

import asyncpg
import httpx
import pytest

from tests.factories import make_lease, put_state, set_terms

TODAY = date(2026, 11, 26)  # the API tests' clock (tests/api/conftest.py)
DELIVERED = date(2026, 10, 1)


async def _written(pool: asyncpg.Pool) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM payments) AS p, (SELECT count(*) FROM charge_attempts) AS a,"
        " (SELECT count(*) FROM money_movements) AS m"
    )
    assert row is not None
    return (row["p"], row["a"], row["m"])


def _payoff(http: httpx.AsyncClient, lease_id: int, key: str, **body: object):  # type: ignore[no-untyped-def]
    return http.post(
        f"/v1/leases/{lease_id}/payments",
        json={"payoff": True, **body},
        headers={"Idempotency-Key": key},
    )


async def test_the_quote_needs_a_token_and_a_lease(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/leases/999/payoff")).status_code == 404
    anonymous = await client.get("/v1/leases/1/payoff", headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_a_lease_without_terms_is_paid_off_by_its_remaining_rent(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 11, 1), date(2026, 12, 1)])
    quote = (await client.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert quote["rule"] == "no_terms"
    assert quote["components"] == [
        {"kind": "past_due_rent", "cents": 5_000},
        {"kind": "rent_not_yet_due", "cents": 5_000},
    ]
    # It holds through the day before the next due date (12-01), within the 10 days.
    assert (quote["amount_cents"], quote["valid_until"]) == (10_000, "2026-11-30")
    assert quote["window_ends_on"] is None


async def test_the_share_of_the_rent_not_yet_due_is_rounded_half_up_to_the_cent(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 12, 1)], amount_cents=15)
        await set_terms(
            conn,
            lease.lease_id,
            cash_price_cents=10,
            delivered_on=date(2026, 1, 1),
            window_fee_cents=0,
        )
    quote = (await client.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    # 50 % of 15 cents is 7.5: 8 (integer math, (15 * 5000 + 5000) / 10000).
    assert (quote["rule"], quote["amount_cents"]) == ("after_window", 8)
    assert quote["components"][-1] == {"kind": "early_purchase_discount", "cents": -7}


async def test_a_window_payoff_never_costs_more_than_the_remaining_rent(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 12, 1)], amount_cents=5_000)
        await set_terms(conn, lease.lease_id, cash_price_cents=5_000, delivered_on=DELIVERED)
    quote = (await client.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert quote["amount_cents"] == 5_000
    assert quote["components"] == [
        {"kind": "cash_price", "cents": 5_000},
        {"kind": "rent_paid", "cents": 0},
        {"kind": "early_purchase_fee", "cents": 2_500},
        {"kind": "capped_at_remaining_rent", "cents": -2_500},
    ]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("epo_after_bps", 10_001),
        ("epo_after_bps", -1),
        ("cash_price_cents", 0),
        ("cash_price_cents", 20_000),  # above the total of payments
        ("epo_window_days", -1),
        ("epo_window_fee_cents", -5),
        ("delivered_on", None),  # terms are all or none
    ],
)
async def test_lease_terms_are_validated_by_the_schema(
    pool: asyncpg.Pool, column: str, value: object
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 12, 1)], amount_cents=10_000)
        await set_terms(conn, lease.lease_id, cash_price_cents=6_000, delivered_on=DELIVERED)
        statements = {
            "epo_after_bps": "UPDATE leases SET epo_after_bps = $2 WHERE id = $1",
            "cash_price_cents": "UPDATE leases SET cash_price_cents = $2 WHERE id = $1",
            "epo_window_days": "UPDATE leases SET epo_window_days = $2 WHERE id = $1",
            "epo_window_fee_cents": "UPDATE leases SET epo_window_fee_cents = $2 WHERE id = $1",
            "delivered_on": "UPDATE leases SET delivered_on = $2 WHERE id = $1",
        }
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(statements[column], lease.lease_id, value)


async def test_a_payoff_waits_for_money_in_flight_and_writes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token="sandbox_ach_ok", due_dates=[date(2026, 11, 1), date(2026, 12, 1)]
        )
        await set_terms(conn, lease.lease_id, cash_price_cents=6_000, delivered_on=DELIVERED)
        # The first installment's bank debit is awaiting settlement.
        await put_state(conn, lease.installment_ids[0], status="pending_settlement")
    quote = (await client.get(f"/v1/leases/{lease.lease_id}/payoff")).json()
    assert (quote["pending_cents"], quote["rent_paid_cents"], quote["payable"]) == (
        5_000,
        0,
        False,
    )
    before = await _written(pool)
    answer = await _payoff(client, lease.lease_id, "in-flight")
    assert answer.status_code == 409, answer.text
    assert "in flight" in answer.json()["detail"]
    assert await _written(pool) == before


async def test_a_declined_card_payoff_undoes_its_cancellations(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn,
            token="sandbox_card_insufficient_funds",
            due_dates=[date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)],
        )
        await set_terms(conn, lease.lease_id, cash_price_cents=9_000, delivered_on=DELIVERED)
    answer = await _payoff(client, lease.lease_id, "declined")
    assert answer.status_code == 402, answer.text
    rows = await pool.fetch(
        "SELECT status, paid_cents, in_flight_cents, cancelled_cents, next_attempt_on"
        " FROM installments WHERE lease_id = $1 ORDER BY seq",
        lease.lease_id,
    )
    assert [tuple(r) for r in rows] == [
        ("scheduled", 0, 0, 0, date(2026, 11, 1)),
        ("scheduled", 0, 0, 0, date(2026, 12, 1)),
        ("scheduled", 0, 0, 0, date(2027, 1, 1)),
    ]
    kinds = await pool.fetch(
        "SELECT kind, count(*) AS n FROM money_movements GROUP BY kind ORDER BY kind"
    )
    assert {r["kind"]: r["n"] for r in kinds} == {
        "presented": 3,  # 11,500 cents over three installments: 5,000 + 5,000 + 1,500
        "released": 3,
        "cancelled": 1,  # what was left of the third
        "reinstated": 1,
    }
    assert await pool.fetchval("SELECT status FROM leases WHERE id = $1", lease.lease_id) == (
        "active"
    )


async def test_a_payoff_key_replays_and_refuses_another_body(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 11, 1), date(2026, 12, 1)])
        await set_terms(conn, lease.lease_id, cash_price_cents=6_000, delivered_on=DELIVERED)
    first = await _payoff(client, lease.lease_id, "k-1")
    assert first.status_code == 201, first.text
    assert first.json()["amount_cents"] == 8_500  # 6,000 cash price + 2,500 fee
    before = await _written(pool)
    other = await client.post(
        f"/v1/leases/{lease.lease_id}/payments", json={}, headers={"Idempotency-Key": "k-1"}
    )
    assert other.status_code == 422, other.text
    again = await _payoff(client, lease.lease_id, "k-1")
    assert (again.status_code, again.json()) == (201, first.json())
    assert await _written(pool) == before


async def test_a_charged_off_lease_is_not_paid_off(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 6, 1)], lease_status="charged_off")
    answer = await _payoff(client, lease.lease_id, "co-1")
    assert answer.status_code == 422, answer.text
    assert "charged off" in answer.json()["detail"]
    assert await _written(pool) == (0, 0, 0)
