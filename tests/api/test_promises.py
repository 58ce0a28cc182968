"""Promises to pay at the API: strict input, a clear 4xx and nothing written on bad input, one
open promise per lease, and the list with statuses."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.factories import make_lease

TODAY = date(2026, 11, 26)  # the portal's clock in these tests (tests/api/conftest.py)
SOON = (TODAY + timedelta(days=7)).isoformat()


async def _promises(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM promises")
    return count


async def _overdue_lease(pool: asyncpg.Pool, **kwargs: Any) -> int:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[date(2026, 11, 1)], amount_cents=5_000, **kwargs)
    return lease.lease_id


async def test_a_promise_is_made_once_and_listed_with_its_status(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease_id = await _overdue_lease(pool)
    assert (await client.get(f"/v1/leases/{lease_id}/promises")).json() == []
    made = await client.post(
        f"/v1/leases/{lease_id}/promises",
        json={"amount_cents": 5_000, "promised_on": SOON, "auto_collect": True},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert {k: body[k] for k in ("lease_id", "amount_cents", "promised_on", "status")} == {
        "lease_id": lease_id,
        "amount_cents": 5_000,
        "promised_on": SOON,
        "status": "open",
    }
    assert (body["made_on"], body["resume_on"], body["auto_collect"]) == (
        TODAY.isoformat(),
        (TODAY + timedelta(days=8)).isoformat(),
        True,
    )
    # One open promise per lease.
    again = await client.post(
        f"/v1/leases/{lease_id}/promises", json={"amount_cents": 100, "promised_on": SOON}
    )
    assert again.status_code == 409, again.text
    assert "already has an open promise" in again.json()["detail"]
    listed = (await client.get(f"/v1/leases/{lease_id}/promises")).json()
    assert [(p["id"], p["status"], p["paid_cents"], p["pending_cents"]) for p in listed] == [
        (body["id"], "open", 0, 0)
    ]
    assert await _promises(pool) == 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"amount_cents": 5_000, "promised_on": "2026-11-25"}, "after today"),
        ({"amount_cents": 5_000, "promised_on": TODAY.isoformat()}, "after today"),
        ({"amount_cents": 5_000, "promised_on": "2026-12-27"}, "at most 30 days ahead"),
        ({"amount_cents": 5_001, "promised_on": SOON}, "more than the overdue amount"),
    ],
)
async def test_a_promise_the_rules_refuse_is_a_422_and_writes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, body: dict[str, Any], detail: str
) -> None:
    lease_id = await _overdue_lease(pool)
    answer = await client.post(f"/v1/leases/{lease_id}/promises", json=body)
    assert answer.status_code == 422, answer.text
    assert detail in answer.json()["detail"]
    assert await _promises(pool) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"amount_cents": 0, "promised_on": SOON},
        {"amount_cents": -5, "promised_on": SOON},
        {"amount_cents": "5000", "promised_on": SOON},
        {"amount_cents": 5000.0, "promised_on": SOON},
        {"amount_cents": True, "promised_on": SOON},
        {"amount_cents": 5_000, "promised_on": 1_796_000_000},
        {"amount_cents": 5_000, "promised_on": "2026-12-3"},
        {"amount_cents": 5_000, "promised_on": "2026-12-03T00:00:00"},
        {"amount_cents": 5_000, "promised_on": "2026-02-30"},
        {"amount_cents": 5_000, "promised_on": SOON, "auto_collect": 1},
        {"amount_cents": 5_000, "promised_on": SOON, "auto_collect": "true"},
        {"amount_cents": 5_000, "promised_on": SOON, "note": "x"},
        {"promised_on": SOON},
        {"amount_cents": 5_000},
    ],
)
async def test_a_malformed_promise_is_a_422_and_writes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, body: dict[str, Any]
) -> None:
    lease_id = await _overdue_lease(pool)
    answer = await client.post(f"/v1/leases/{lease_id}/promises", json=body)
    assert answer.status_code == 422, answer.text
    assert await _promises(pool) == 0


async def test_no_promise_on_a_lease_that_is_gone_charged_off_or_owes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    body = {"amount_cents": 100, "promised_on": SOON}
    missing = await client.post("/v1/leases/999/promises", json=body)
    assert missing.status_code == 404
    assert (await client.get("/v1/leases/999/promises")).status_code == 404
    charged_off = await _overdue_lease(pool, lease_status="charged_off")
    answer = await client.post(f"/v1/leases/{charged_off}/promises", json=body)
    assert answer.status_code == 422
    assert "charged_off" in answer.json()["detail"]
    async with pool.acquire() as conn:
        current = await make_lease(conn, due_dates=[TODAY + timedelta(days=3)])
    answer = await client.post(f"/v1/leases/{current.lease_id}/promises", json=body)
    assert answer.status_code == 422
    assert "nothing is overdue" in answer.json()["detail"]
    assert await _promises(pool) == 0
