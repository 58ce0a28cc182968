"""Any positive rate limit paces its gateway, fractions of one a second included: the limiter
behind a rate below one a second used to refuse the first charge of every pass and every
manual payment."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import date, timedelta

import anyio
import asyncpg
import httpx

from collector.config import Settings
from collector.gateways.base import ChargeRequest, Gateway, Succeeded
from collector.jobs.charging import Charger, limiter_for
from collector.jobs.collect import run_pass
from tests.factories import make_lease, put_state

TODAY = date(2026, 11, 26)


class _Clocked:
    """A card gateway at its boundary that takes every charge and notes when each arrived."""

    def __init__(self) -> None:
        self.name = "sandbox_card"
        self.arrived: list[float] = []

    async def charge(self, request: ChargeRequest) -> Succeeded:
        self.arrived.append(anyio.current_time())
        return Succeeded(gateway_ref=f"ch_{len(self.arrived)}")

    async def lookup(self, idempotency_key: str) -> None:
        return None


async def test_a_rate_below_one_a_second_spaces_the_charges_by_its_period(
    pool: asyncpg.Pool, database_url: str
) -> None:
    rate = 0.9  # one charge every 1.11 s: rounded to one a second, the gaps would be 1.0 s
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        gateways=["sandbox_card"],
        rate_limits={"sandbox_card": rate},
        batch_size=10,
        concurrency=4,
        gateway_timeout_s=5,
    )
    async with pool.acquire() as conn:
        for _ in range(3):
            await make_lease(conn, due_dates=[TODAY])
    gateway = _Clocked()
    with anyio.fail_after(30):
        result = await run_pass(pool, {"sandbox_card": gateway}, settings, as_of=TODAY)  # type: ignore[dict-item]
    assert result.counts.succeeded == 3
    arrived = gateway.arrived
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrived)]
    assert len(gaps) == 2
    # A timer fires late, never early: each gap is at least the period.
    assert all(gap >= 1 / rate - 0.005 for gap in gaps), gaps


async def test_the_limiter_keeps_its_burst_from_one_a_second_up() -> None:
    fast = limiter_for(20)
    assert (fast.max_rate, fast.time_period) == (20, 1.0)
    slow = limiter_for(0.25)
    assert (slow.max_rate, slow.time_period) == (1.0, 4.0)
    # The first charge of a fractional rate goes at once, instead of raising.
    with anyio.fail_after(1):
        await slow.acquire()
    assert not slow.has_capacity()


async def test_a_manual_payment_under_a_fractional_rate_is_charged(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], database_url: str
) -> None:
    from collector.api.app import create_app
    from tests.api.conftest import API_TOKEN, NOW

    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        api_tokens=[API_TOKEN],  # type: ignore[list-item]
        rate_limits={"sandbox_card": 0.5},
        batch_size=10,
        concurrency=4,
    )
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY - timedelta(days=31)])
        await put_state(
            conn,
            lease.installment_ids[0],
            status="overdue",
            attempts=1,
            next_attempt_on=TODAY + timedelta(days=3),
        )
    charger = Charger.for_settings(gateways, settings)
    app = create_app(settings, pool, gateways, clock=lambda: NOW, charger=charger)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://portal.test",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        response = await http.post(
            f"/v1/leases/{lease.lease_id}/payments", json={}, headers={"Idempotency-Key": "k-1"}
        )
    assert response.status_code == 201, response.text
    async with pool.acquire() as conn:
        status = await conn.fetchval(
            "SELECT status FROM installments WHERE id = $1", lease.installment_ids[0]
        )
    assert status == "paid"
