from __future__ import annotations

import anyio
import asyncpg
import pytest

from collector.domain import MethodKind
from collector.exceptions import GatewayNotFound
from collector.gateways import registry
from collector.gateways.base import ChargeRequest, Gateway, GatewayContext, Processing, Succeeded
from collector.gateways.registry import available_gateways, open_gateways
from collector.gateways.sandbox import sandbox_charge_counts

pytestmark = pytest.mark.anyio


async def test_registry_opens_both_sandboxes_by_name(database_url: str) -> None:
    made: list[str] = []

    def make_context(name: str) -> GatewayContext:
        made.append(name)
        return GatewayContext(name=name, database_url=database_url)

    with anyio.fail_after(5):
        async with open_gateways(["sandbox_card", "sandbox_ach"], make_context) as gateways:
            assert list(gateways) == ["sandbox_card", "sandbox_ach"]
            assert all(isinstance(gateway, Gateway) for gateway in gateways.values())
            assert [gateway.name for gateway in gateways.values()] == made
            card = await gateways["sandbox_card"].charge(
                ChargeRequest(
                    customer_id=1,
                    idempotency_key="k-card",
                    amount_cents=100,
                    token="sandbox_card_ok",
                    method_kind=MethodKind.CARD,
                    metadata={"installment_id": "1"},
                )
            )
            ach = await gateways["sandbox_ach"].charge(
                ChargeRequest(
                    customer_id=1,
                    idempotency_key="k-ach",
                    amount_cents=100,
                    token="sandbox_ach_ok",
                    method_kind=MethodKind.ACH,
                    metadata={"installment_id": "2"},
                )
            )

    assert isinstance(card, Succeeded)
    assert isinstance(ach, Processing)
    conn = await asyncpg.connect(database_url)
    try:
        assert await sandbox_charge_counts(conn) == {1: 1, 2: 1}
    finally:
        await conn.close()


async def test_unknown_gateway_name_is_not_found_and_names_the_known_ones(
    database_url: str,
) -> None:
    def make_context(name: str) -> GatewayContext:
        return GatewayContext(name=name, database_url=database_url)

    with pytest.raises(GatewayNotFound) as raised:
        async with open_gateways(["sandbox_card", "acme_card"], make_context):
            pytest.fail("an unknown name must not open anything")

    message = str(raised.value)
    assert "'acme_card'" in message
    assert "sandbox_card" in message
    assert "sandbox_ach" in message


def test_available_gateways_lists_the_sandboxes() -> None:
    names = available_gateways()

    assert {"sandbox_card", "sandbox_ach"} <= set(names)
    assert names == sorted(names)


async def test_builtin_sandboxes_are_found_without_package_metadata(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A source tree run without `pip install` has no entry points at all.
    monkeypatch.setattr(registry, "entry_points", lambda **_: ())

    def make_context(name: str) -> GatewayContext:
        return GatewayContext(name=name, database_url=database_url)

    assert available_gateways() == [
        "memory_ach",
        "memory_card",
        "nacha",
        "sandbox_ach",
        "sandbox_card",
        "stripe_ach",
        "stripe_card",
    ]
    with anyio.fail_after(5):
        async with open_gateways(["sandbox_ach"], make_context) as gateways:
            assert list(gateways) == ["sandbox_ach"]
