"""Zero-latency card and ACH gateways that keep their charges in the process's memory.

For benchmarks (``bench/compare.py``, ``bench/collect.py --gateway memory``) and in-process
tests: they approve every charge and write nothing anywhere, so a pass through them measures
the engine's own work and nothing of a gateway's. ``memory_card`` answers ``Succeeded``;
``memory_ach`` answers ``Processing`` (a debit taken, to settle later) and, asked where a
debit stands, says it settled.

They are honest about idempotency, like the sandbox: a repeated key gets the first answer
and is not charged again, and ``lookup`` finds what a key charged. The record (keys, amounts,
installments: :attr:`MemoryGateway.charges`) lives as long as the process: a pass in another
process, or after a crash, finds none of it, so these gateways are for measuring, never for
crash tests (use the sandbox) and never for real money. When the gateway closes it logs one
line, ``memory_gateway_closed``, with how many charges it took and their total, so a benchmark
can compare the gateway's count with the ledger's. Tokens are never kept or logged.

``GatewayContext.latency_ms`` (``COLLECTOR_SANDBOX_LATENCY_MS`` for ``collector run``) adds a
sleep to every call, to measure the engine at a gateway's latency.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date

import anyio

from collector.gateways.base import (
    ChargeRequest,
    GatewayContext,
    Outcome,
    Processing,
    Settlement,
    Succeeded,
)
from collector.logs import get_logger

log = get_logger()


@dataclass(frozen=True, slots=True)
class MemoryCharge:
    """What the gateway took under one key (the first request with it)."""

    amount_cents: int
    installment_id: str | None
    gateway_ref: str
    outcome: Outcome


class MemoryGateway:
    """An in-memory gateway that approves everything, once per idempotency key."""

    def __init__(self, name: str, *, ach: bool = False, latency_ms: float = 0.0) -> None:
        self.name = name
        self._ach = ach
        self._latency_s = latency_ms / 1000
        self.charges: dict[str, MemoryCharge] = {}
        # Requests that repeated a key already charged: answered from the record, not taken.
        self.repeats = 0

    @property
    def count(self) -> int:
        """Charges taken (one per key)."""
        return len(self.charges)

    @property
    def total_cents(self) -> int:
        """Money taken, in cents."""
        return sum(charge.amount_cents for charge in self.charges.values())

    async def charge(self, request: ChargeRequest) -> Outcome:
        """Take the charge unless its key was seen; a repeated key gets the first answer."""
        if self._latency_s:
            await anyio.sleep(self._latency_s)
        key = request.idempotency_key
        seen = self.charges.get(key)
        if seen is not None:
            self.repeats += 1
            return seen.outcome
        ref = f"mem_{self.name}_{len(self.charges) + 1}"
        outcome: Outcome = Processing(gateway_ref=ref) if self._ach else Succeeded(gateway_ref=ref)
        self.charges[key] = MemoryCharge(
            amount_cents=request.amount_cents,
            installment_id=request.metadata.get("installment_id"),
            gateway_ref=ref,
            outcome=outcome,
        )
        return outcome

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        """The first answer given under this key; None when this process never took it."""
        if self._latency_s:
            await anyio.sleep(self._latency_s)
        seen = self.charges.get(idempotency_key)
        return seen.outcome if seen is not None else None


class MemoryAchGateway(MemoryGateway):
    """The ACH flavour: debits are ``Processing`` when taken and settled when asked."""

    def __init__(self, name: str, *, latency_ms: float = 0.0) -> None:
        super().__init__(name, ach=True, latency_ms=latency_ms)

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Settlement | None:
        """Every debit this process took has settled; None for one it never took."""
        seen = self.charges.get(idempotency_key)
        if seen is None:
            return None
        return Succeeded(gateway_ref=seen.gateway_ref, code="settled")


@asynccontextmanager
async def _opened(gateway: MemoryGateway) -> AsyncIterator[MemoryGateway]:
    try:
        yield gateway
    finally:
        log.info(
            "memory_gateway_closed",
            gateway=gateway.name,
            charges=gateway.count,
            charged_cents=gateway.total_cents,
            repeats=gateway.repeats,
        )


@asynccontextmanager
async def open_memory_card(ctx: GatewayContext) -> AsyncIterator[MemoryGateway]:
    """A memory card gateway named ``ctx.name`` (the database URL is not used)."""
    async with _opened(MemoryGateway(ctx.name, latency_ms=ctx.latency_ms)) as gateway:
        yield gateway


@asynccontextmanager
async def open_memory_ach(ctx: GatewayContext) -> AsyncIterator[MemoryGateway]:
    """A memory ACH gateway named ``ctx.name`` (the database URL is not used)."""
    async with _opened(MemoryAchGateway(ctx.name, latency_ms=ctx.latency_ms)) as gateway:
        yield gateway
