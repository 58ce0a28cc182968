"""The allocation order through a pass and the portal: with COLLECTOR_ALLOCATION_ORDER=
rent_first a manual payment pays every installment's rent before any late fee."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg
import pytest

from collector.config import Settings
from collector.db.audit import run_audit
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from tests.factories import make_lease
from tests.jobs.portal import Portal

TODAY = date(2026, 11, 26)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"late_fees": True, "allocation_order": "rent_first"})


async def test_rent_first_pays_every_rent_before_any_fee(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings, portal: Portal
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn,
            token="sandbox_card_insufficient_funds",
            due_dates=[TODAY - timedelta(days=40), TODAY - timedelta(days=10)],
        )
        await conn.execute("UPDATE leases SET state = 'CA' WHERE id = $1", lease.lease_id)
    await run_pass(pool, gateways, settings, as_of=TODAY)
    card = await portal.http.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={"kind": "card", "gateway": "sandbox_card", "token": "sandbox_card_ok"},
    )
    assert card.status_code == 201, card.text

    paid = await portal.http.post(
        f"/v1/leases/{lease.lease_id}/payments",
        headers={"Idempotency-Key": "rent-first"},
        json={"amount_cents": 10_100, "payment_method_id": card.json()["id"]},
    )

    assert paid.status_code == 201, paid.text
    lines = (await portal.http.get(f"/v1/leases/{lease.lease_id}/schedule")).json()["installments"]
    assert [
        (line["rent_paid_cents"], line["fee_cents"], line["fee_paid_cents"]) for line in lines
    ] == [(5_000, 250, 100), (5_000, 250, 0)]
    assert (await run_audit(pool, fee_table=settings.fee_table)).clean
