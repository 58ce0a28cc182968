"""A storm of manual payments on the leases the batch is collecting: requests drawn from the
seed (whole overdue amount, a part of it, an explicit method; now and then a repeat of an
earlier Idempotency-Key with the same body), sent concurrently, their answers kept."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import anyio
import asyncpg
import httpx

from tests.factories import LeaseRef, make_lease, put_state

API_TOKEN = "chaos-storm-token-0123456789"
# Tokens of the storm's leases (sandbox behaviours), with how often each is met.
TOKENS = (
    (60, "sandbox_card_ok"),
    (14, "sandbox_ach_ok"),
    (8, "sandbox_card_insufficient_funds"),
    (3, "sandbox_card_stolen"),
    (7, "sandbox_card_timeout_taken"),
    (4, "sandbox_card_timeout_not_taken"),
    (4, "sandbox_ach_return_R01"),
)
# What a manual payment may answer while the batch runs beside it; never a 5xx.
ANSWERS = {201, 202, 402, 409, 422, 429}
# The storm means to collide with the batch, not to meet the per-customer limit on manual
# payments (its own tests hold that): the limit is raised out of its way.
STORM_ATTEMPTS = "1000"


async def make_leases(
    pool: asyncpg.Pool, n: int, rng: random.Random, today: date
) -> list[LeaseRef]:
    """Leases with an installment overdue for 40 days, one for 10 and one due today: the
    batch may take all three, manual pay the two overdue."""
    leases = []
    async with pool.acquire() as conn:
        for _ in range(n):
            token = rng.choices([t for _, t in TOKENS], weights=[w for w, _ in TOKENS])[0]
            leases.append(
                await make_lease(
                    conn,
                    token=token,
                    due_dates=[today - timedelta(days=40), today - timedelta(days=10), today],
                    amount_cents=rng.randint(2_500, 12_500),
                )
            )
    return leases


async def make_overdue_leases(
    pool: asyncpg.Pool, n: int, rng: random.Random, today: date, *, due_today: bool = False
) -> list[LeaseRef]:
    """Leases whose two installments are overdue, declined once and retried in three days:
    the day's batch leaves them alone, so only manual payments move their money. With
    ``due_today`` their third installment is due today, for the batch to charge beside the
    manual payments; else it is due in 20 days."""
    leases = await make_leases(pool, n, rng, today)
    async with pool.acquire() as conn:
        for lease in leases:
            for installment_id in lease.installment_ids[:2]:
                await put_state(
                    conn,
                    installment_id,
                    status="overdue",
                    attempts=1,
                    next_attempt_on=today + timedelta(days=3),
                )
            if due_today:
                continue
            # The third is not due for weeks.
            await conn.execute(
                "UPDATE installments SET due_on = $2, next_attempt_on = $2 WHERE id = $1",
                lease.installment_ids[2],
                today + timedelta(days=20),
            )
    return leases


@dataclass
class Sent:
    lease_id: int
    key: str
    body: dict[str, Any]
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class Storm:
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def by_status(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for s in self.sent:
            counts[s.status] = counts.get(s.status, 0) + 1
        return counts


def plan(leases: Sequence[LeaseRef], n: int, rng: random.Random, *, tag: str) -> list[Sent]:
    """``n`` requests drawn from the seed; about one in seven repeats an earlier key."""
    planned: list[Sent] = []
    for i in range(n):
        if planned and rng.random() < 0.15:
            earlier = rng.choice(planned)
            planned.append(Sent(earlier.lease_id, earlier.key, dict(earlier.body)))
            continue
        lease = rng.choice(leases)
        roll = rng.random()
        body: dict[str, Any] = {}
        if roll < 0.3:
            body = {"amount_cents": rng.randint(1, 2_500)}
        elif roll < 0.5:
            body = {"payment_method_id": lease.method_id}
        planned.append(Sent(lease.lease_id, f"{tag}-{i}", body))
    return planned


async def send(http: httpx.AsyncClient, s: Sent) -> None:
    try:
        response = await http.post(
            f"/v1/leases/{s.lease_id}/payments", json=s.body, headers={"Idempotency-Key": s.key}
        )
    except httpx.TransportError as exc:
        s.status = -1
        s.answer = {"transport_error": type(exc).__name__}
        return
    s.status = response.status_code
    try:
        s.answer = response.json()
    except ValueError:
        s.answer = {"text": response.text[:200]}


async def blow(
    http: httpx.AsyncClient,
    planned: Sequence[Sent],
    *,
    in_flight: int = 16,
    waves: Sequence[Callable[[], Awaitable[object]]] = (),
) -> Storm:
    """Send every planned request, at most ``in_flight`` at once; with ``waves``, the plan is
    cut in as many parts and each part waits for its wave (a moment of the batch's progress)
    before it is sent."""
    storm = Storm(sent=list(planned))
    limiter = anyio.CapacityLimiter(in_flight)

    async def one(s: Sent) -> None:
        async with limiter:
            await send(http, s)

    parts = max(1, len(waves))
    size = -(-len(storm.sent) // parts)
    async with anyio.create_task_group() as tg:
        for n in range(parts):
            if waves:
                await waves[n]()
            for s in storm.sent[n * size : (n + 1) * size]:
                tg.start_soon(one, s)
    return storm


async def assert_replays_hold(http: httpx.AsyncClient, storm: Storm) -> None:
    """Each key that got a payment answers a repeat with that payment's final answer: the
    first answer where it was final, the resolved one where it was 202 (unknown)."""
    first: dict[str, Sent] = {}
    for s in storm.sent:
        if s.status in (201, 202, 402) or (s.status == 422 and "code" in s.answer):
            first.setdefault(s.key, s)
    wrong = []
    for key, s in first.items():
        again = Sent(s.lease_id, key, s.body)
        await send(http, again)
        if s.status == 202:
            ok = again.status in (201, 402) and (
                again.status == 402 or again.answer.get("payment_id") == s.answer.get("payment_id")
            )
        else:
            ok = (again.status, again.answer) == (s.status, s.answer)
        if not ok:
            wrong.append(f"{key}: first {s.status} {s.answer}, now {again.status} {again.answer}")
    assert not wrong, "replays that do not hold: " + "; ".join(wrong[:10])
