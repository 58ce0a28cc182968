"""Zero-latency card and ACH gateways that keep their charges in the process's memory.

For benchmarks (``bench/compare.py``, ``bench/collect.py --gateway memory``) and in-process
tests: they approve every charge and write nothing anywhere, so a pass through them measures
the engine's own work and nothing of a gateway's. ``memory_card`` answers ``Succeeded``;
``memory_ach`` answers ``Processing`` (a debit taken, to settle later) and, asked where a
debit stands, says it settled. Every call yields to the event loop once, as any I/O does
(``--latency-ms`` / ``GatewayContext.latency_ms`` makes it a sleep instead).

They are honest about idempotency, like the sandbox: a repeated key gets the first answer
and is not charged again, and ``lookup`` finds what a key charged. The record
(:attr:`MemoryGateway.charges`: key -> amount in cents, the first request's) lives as long as
the process: a pass in another process, or after a crash, finds none of it, so these
gateways are for measuring, never for crash tests (use the sandbox) and never for real money.
It is kept small (about 140 bytes a charge: 1,000,000 charges hold some 135 MB) and the
closing log line, ``memory_gateway_closed``, says how many charges it took, their total and
the record's size, so a benchmark can compare the gateway's count with the ledger's and
tell the engine's memory from the record's. Tokens are never kept or logged.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

import anyio
import anyio.lowlevel

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


def gateway_ref_of(name: str, idempotency_key: str) -> str:
    """The gateway's reference for a key: the same key always gets the same reference."""
    return f"mem_{name}_{idempotency_key}"


class MemoryGateway:
    """An in-memory gateway that approves everything, once per idempotency key."""

    def __init__(self, name: str, *, ach: bool = False, latency_ms: float = 0.0) -> None:
        self.name = name
        self._ach = ach
        self._latency_s = latency_ms / 1000
        # Key -> amount taken, in cents; the answer follows from the key (gateway_ref_of).
        self.charges: dict[str, int] = {}
        self.total_cents = 0
        # Requests that repeated a key already charged: answered from the record, not taken.
        self.repeats = 0

    @property
    def count(self) -> int:
        """Charges taken (one per key)."""
        return len(self.charges)

    def record_bytes(self) -> int:
        """About how much memory the record holds (the dict, its keys and amounts)."""
        charges = self.charges
        return sys.getsizeof(charges) + sum(
            sys.getsizeof(key) + sys.getsizeof(amount) for key, amount in charges.items()
        )

    def _answer(self, key: str) -> Outcome:
        ref = gateway_ref_of(self.name, key)
        return Processing(gateway_ref=ref) if self._ach else Succeeded(gateway_ref=ref)

    async def _wait(self) -> None:
        if self._latency_s:
            await anyio.sleep(self._latency_s)
        else:
            await anyio.lowlevel.checkpoint()

    async def charge(self, request: ChargeRequest) -> Outcome:
        """Take the charge unless its key was seen; a repeated key gets the first answer."""
        await self._wait()
        key = request.idempotency_key
        if key in self.charges:
            self.repeats += 1
        else:
            self.charges[key] = request.amount_cents
            self.total_cents += request.amount_cents
        return self._answer(key)

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        """The first answer given under this key; None when this process never took it."""
        await self._wait()
        return self._answer(idempotency_key) if idempotency_key in self.charges else None


class MemoryAchGateway(MemoryGateway):
    """The ACH flavour: debits are ``Processing`` when taken and settled when asked."""

    def __init__(self, name: str, *, latency_ms: float = 0.0) -> None:
        super().__init__(name, ach=True, latency_ms=latency_ms)

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Settlement | None:
        """Every debit this process took has settled; None for one it never took."""
        if idempotency_key not in self.charges:
            return None
        return Succeeded(gateway_ref=gateway_ref_of(self.name, idempotency_key), code="settled")


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
            record_bytes=gateway.record_bytes(),
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
