from __future__ import annotations

from datetime import date, timedelta

import asyncpg
import httpx
import pytest

from tests.factories import LeaseRef, make_lease, put_state

# The business date of tests/api/conftest.py's pinned clock (noon in New York).
TODAY = date(2026, 11, 26)


async def set_installment(
    conn: asyncpg.pool.PoolConnectionProxy,
    installment_id: int,
    *,
    status: str,
    paid_cents: int = 0,
    next_attempt_on: date | None = None,
) -> None:
    await put_state(
        conn, installment_id, status=status, paid_cents=paid_cents, next_attempt_on=next_attempt_on
    )


async def add_lease(
    conn: asyncpg.pool.PoolConnectionProxy, customer_id: int, ref: str, status: str
) -> int:
    lease_id: int = await conn.fetchval(
        "INSERT INTO leases (customer_id, store, agreement_ref, status) VALUES ($1, 'Other', $2, $3)"
        " RETURNING id",
        customer_id,
        ref,
        status,
    )
    return lease_id


async def mixed_lease(pool: asyncpg.Pool) -> LeaseRef:
    """A lease with one installment in each situation the portal distinguishes:

    seq 1  2026-09-26  paid                              -> paid
    seq 2  2026-10-26  scheduled, never attempted (missed pass), 1,000 paid -> overdue, 4,000
    seq 3  2026-11-20  overdue after a decline           -> overdue, 5,000
    seq 4  2026-11-24  pending_settlement (ACH in flight) -> pending, not overdue
    seq 5  2026-11-25  processing (being charged now)    -> processing, not overdue
    seq 6  2026-11-26  scheduled, due today              -> next due
    seq 7  2026-12-26  scheduled
    seq 8  2026-12-27  cancelled
    """
    dues = [
        date(2026, 9, 26),
        date(2026, 10, 26),
        date(2026, 11, 20),
        date(2026, 11, 24),
        date(2026, 11, 25),
        TODAY,
        date(2026, 12, 26),
        date(2026, 12, 27),
    ]
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=dues, amount_cents=5_000)
        ids = lease.installment_ids
        await set_installment(conn, ids[0], status="paid", paid_cents=5_000)
        await set_installment(
            conn, ids[1], status="scheduled", paid_cents=1_000, next_attempt_on=dues[1]
        )
        await set_installment(conn, ids[2], status="overdue", next_attempt_on=TODAY)
        await set_installment(conn, ids[3], status="pending_settlement")
        await set_installment(conn, ids[4], status="processing")
        await set_installment(conn, ids[7], status="cancelled")
    return lease


async def test_customer_leases_show_overdue_and_next_due_per_lease(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await mixed_lease(pool)
    async with pool.acquire() as conn:
        paid_off = await add_lease(conn, lease.customer_id, "AGR-PAID", "paid_off")
        agreement_ref = await conn.fetchval(
            "SELECT agreement_ref FROM leases WHERE id = $1", lease.lease_id
        )

    response = await client.get(f"/v1/customers/{lease.customer_id}/leases")

    assert response.status_code == 200
    assert response.json() == [
        {
            "id": lease.lease_id,
            "agreement_ref": agreement_ref,
            "store": "Test Store",
            "status": "active",
            # seq 2 (4,000 unpaid, never attempted) + seq 3 (5,000): not the pending debit, not
            # the one being charged, not the one due today.
            "overdue_cents": 9_000,
            "next_due_on": "2026-11-26",
            "next_due_cents": 5_000,
        },
        {
            "id": paid_off,
            "agreement_ref": "AGR-PAID",
            "store": "Other",
            "status": "paid_off",
            "overdue_cents": 0,
            "next_due_on": None,
            "next_due_cents": None,
        },
    ]


async def test_next_due_is_the_unpaid_part_of_the_earliest_scheduled_installment(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, due_dates=[TODAY + timedelta(days=3), TODAY + timedelta(days=33)]
        )
        await set_installment(conn, lease.installment_ids[0], status="scheduled", paid_cents=1_234)

    [line] = (await client.get(f"/v1/customers/{lease.customer_id}/leases")).json()

    assert (line["next_due_on"], line["next_due_cents"]) == ("2026-11-29", 5_000 - 1_234)
    assert line["overdue_cents"] == 0


async def test_customer_without_leases_has_an_empty_list(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        customer_id = await conn.fetchval(
            "INSERT INTO customers (email, name) VALUES ('none@example.com', 'N') RETURNING id"
        )

    response = await client.get(f"/v1/customers/{customer_id}/leases")

    assert (response.status_code, response.json()) == (200, [])


async def test_unknown_customer_has_no_leases_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/customers/999999/leases")

    assert response.status_code == 404
    assert response.json() == {"detail": "no such customer"}


async def test_lease_detail_has_amounts_order_and_primary_method_without_token(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await mixed_lease(pool)
    async with pool.acquire() as conn:
        agreement_ref = await conn.fetchval(
            "SELECT agreement_ref FROM leases WHERE id = $1", lease.lease_id
        )
        await conn.execute(
            "UPDATE payment_methods SET brand = 'visa' WHERE id = $1", lease.method_id
        )

    response = await client.get(f"/v1/leases/{lease.lease_id}")

    assert response.status_code == 200
    assert response.json() == {
        "id": lease.lease_id,
        "customer_id": lease.customer_id,
        "agreement_ref": agreement_ref,
        "store": "Test Store",
        "status": "active",
        "order_details": {"item": "sofa"},
        "overdue_cents": 9_000,
        "pending_cents": 5_000,
        "next_due_on": "2026-11-26",
        "next_due_cents": 5_000,
        "primary_payment_method": {
            "id": lease.method_id,
            "kind": "card",
            "gateway": "sandbox_card",
            "brand": "visa",
            "bank_name": None,
            "last4": "4242",
            "status": "active",
            "is_primary": True,
            "exp_month": None,
            "exp_year": None,
        },
        # The oldest money neither paid nor in flight is seq 2's (2026-10-26); seq 4 and 5
        # are in flight, not past due.
        "days_past_due": 31,
        "delinquency_bucket": "31-60",
        "state": None,
        "fees_owed_cents": 0,
    }
    assert "sandbox_card_ok" not in response.text
    assert "token" not in response.text


async def test_lease_detail_of_a_customer_without_primary_method(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY - timedelta(days=1)], primary=False)

    body = (await client.get(f"/v1/leases/{lease.lease_id}")).json()

    assert body["primary_payment_method"] is None
    assert (body["overdue_cents"], body["next_due_on"], body["next_due_cents"]) == (
        5_000,
        None,
        None,
    )


async def test_schedule_shows_an_unsettled_debit_as_pending_never_paid(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await mixed_lease(pool)

    response = await client.get(f"/v1/leases/{lease.lease_id}/schedule")

    assert response.status_code == 200
    body = response.json()
    assert body["lease_id"] == lease.lease_id
    lines = body["installments"]
    assert [line["installment_id"] for line in lines] == lease.installment_ids
    assert [line["seq"] for line in lines] == list(range(1, 9))
    assert [(line["status"], line["paid_cents"]) for line in lines] == [
        ("paid", 5_000),
        ("overdue", 1_000),  # stored 'scheduled': the pass that should have tried never ran
        ("overdue", 0),
        ("pending", 0),  # stored 'pending_settlement'
        ("processing", 0),
        ("scheduled", 0),  # due today: not overdue yet
        ("scheduled", 0),
        ("cancelled", 0),
    ]
    assert lines[3] == {
        "installment_id": lease.installment_ids[3],
        "seq": 4,
        "due_on": "2026-11-24",
        "amount_cents": 5_000,
        "paid_cents": 0,
        "status": "pending",
        "collection_stopped": None,
        "collection_held": None,
        "held_until": None,
        "collection_paused": None,
        "collection_resumes_on": None,
        "rent_paid_cents": 0,
        "fee_cents": 0,
        "fee_paid_cents": 0,
        "fee_waived_cents": 0,
        "fee_id": None,
        "owed_cents": 5_000,
    }


async def test_schedule_lists_installments_in_seq_order_whatever_their_dates(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY + timedelta(days=60), TODAY])

    lines = (await client.get(f"/v1/leases/{lease.lease_id}/schedule")).json()["installments"]

    assert [(line["seq"], line["due_on"]) for line in lines] == [
        (1, "2027-01-25"),
        (2, "2026-11-26"),
    ]


async def test_schedule_of_a_lease_without_installments_is_empty(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])

    response = await client.get(f"/v1/leases/{lease.lease_id}/schedule")

    assert response.json() == {"lease_id": lease.lease_id, "installments": []}


@pytest.mark.parametrize("path", ["/v1/leases/424242", "/v1/leases/424242/schedule"])
async def test_unknown_lease_is_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "no such lease"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/leases/0",
        "/v1/leases/-1/schedule",
        "/v1/leases/abc",
        f"/v1/leases/{2**63}",  # past bigint: refused, never sent to the database
        "/v1/customers/0/leases",
        f"/v1/customers/{2**63}/leases",
    ],
)
async def test_ids_out_of_range_are_422(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)
