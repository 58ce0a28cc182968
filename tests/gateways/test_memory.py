"""The in-memory benchmark gateways: approve everything, once per key, and say so."""

from __future__ import annotations

from datetime import date

import anyio
import asyncpg
import pytest

from collector.config import Settings
from collector.domain import MethodKind
from collector.gateways.base import (
    ChargeRequest,
    Gateway,
    GatewayContext,
    Processing,
    SettlementSource,
    Succeeded,
)
from collector.gateways.memory import MemoryGateway
from collector.gateways.registry import available_gateways, open_gateways
from collector.jobs.collect import run_pass
from tests.factories import attempts_of, make_lease

pytestmark = pytest.mark.anyio

TODAY = date(2026, 11, 26)


def _request(key: str, amount_cents: int = 1_000, installment_id: int = 1) -> ChargeRequest:
    return ChargeRequest(
        customer_id=1,
        idempotency_key=key,
        amount_cents=amount_cents,
        token="anything",
        method_kind=MethodKind.CARD,
        metadata={"installment_id": str(installment_id)},
    )


def _context(name: str) -> GatewayContext:
    return GatewayContext(name=name, database_url="postgresql://unused/")


async def test_a_repeated_key_gets_the_first_answer_and_is_not_charged_again() -> None:
    async with open_gateways(["memory_card", "memory_ach"], _context) as gateways:
        card, ach = gateways["memory_card"], gateways["memory_ach"]
        assert isinstance(card, MemoryGateway) and isinstance(ach, MemoryGateway)
        assert all(isinstance(g, Gateway) for g in (card, ach))

        first = await card.charge(_request("k1", 1_000))
        again = await card.charge(_request("k1", 9_999))
        other = await card.charge(_request("k2", 2_500, installment_id=2))

        assert isinstance(first, Succeeded) and again == first
        assert isinstance(other, Succeeded) and other.gateway_ref != first.gateway_ref
        assert (card.count, card.total_cents, card.repeats) == (2, 3_500, 1)
        assert card.charges == {"k1": 1_000, "k2": 2_500}
        assert 0 < card.record_bytes() < 1_000
        assert await card.lookup("k1") == first
        assert await card.lookup("never-sent") is None

        debit = await ach.charge(_request("d1"))
        assert isinstance(debit, Processing)
        assert isinstance(ach, SettlementSource)
        settled = await ach.settlement("d1", as_of=TODAY)
        assert isinstance(settled, Succeeded) and settled.gateway_ref == debit.gateway_ref
        assert await ach.settlement("d2", as_of=TODAY) is None
        assert not isinstance(card, SettlementSource)


def test_memory_gateways_are_registered() -> None:
    assert {"memory_card", "memory_ach"} <= set(available_gateways())


async def test_latency_is_waited() -> None:
    gateway = MemoryGateway("memory_card", latency_ms=50)
    started = anyio.current_time()
    await gateway.charge(_request("slow"))
    assert anyio.current_time() - started >= 0.045


async def test_a_pass_through_memory_charges_each_due_installment_once(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    async with pool.acquire() as conn:
        leases = [await make_lease(conn, due_dates=[TODAY], amount_cents=1_234) for _ in range(7)]
        await conn.execute("UPDATE payment_methods SET gateway = 'memory_card'")
    memory = settings.model_copy(update={"gateways": ["memory_card", "memory_ach"]})

    async with open_gateways(memory.gateways, _context) as gateways:
        result = await run_pass(pool, gateways, memory, as_of=TODAY)
        again = await run_pass(pool, gateways, memory, as_of=TODAY)
        card = gateways["memory_card"]
        assert isinstance(card, MemoryGateway)

    assert (result.counts.due, result.counts.succeeded) == (7, 7)
    assert again.counts.due == 0
    assert (card.count, card.total_cents, card.repeats) == (7, 7 * 1_234, 0)
    async with pool.acquire() as conn:
        for lease in leases:
            [attempt] = await attempts_of(conn, lease.installment_ids[0])
            assert attempt["status"] == "succeeded"
            assert card.charges[attempt["idempotency_key"]] == 1_234
            assert attempt["gateway_ref"] == f"mem_memory_card_{attempt['idempotency_key']}"
