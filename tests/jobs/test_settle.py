"""ACH settlement and returns, through the sandbox's settlement answers and by key."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg
import pytest

from collector.config import Settings
from collector.gateways.base import ChargeRequest, Gateway, Processing, Returned, Succeeded
from collector.jobs.collect import run_pass
from collector.jobs.settle import apply_by_key, settle
from collector.metrics import ACH_RETURN_RATE
from collector.policy import CardRetryRules
from tests.factories import attempts_of, installment, make_lease

# Thanksgiving: no banking day. A debit made for it takes effect Friday 11-27 and settles two
# banking days later, Tuesday 12-01.
THANKSGIVING = date(2026, 11, 26)
SETTLES_ON = date(2026, 12, 1)


async def test_an_ach_debit_is_pending_until_it_settles_then_paid(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_ok", due_dates=[THANKSGIVING])
    first = await run_pass(pool, gateways, settings, as_of=THANKSGIVING)
    assert first.counts.processing == 1
    before = await run_pass(pool, gateways, settings, as_of=SETTLES_ON - timedelta(days=1))
    assert before.counts.settled == 0
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
        assert (row["status"], row["paid_cents"]) == ("pending_settlement", 0)
    on_day = await run_pass(pool, gateways, settings, as_of=SETTLES_ON)
    assert on_day.counts.settled == 1
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
        assert (row["status"], row["paid_cents"]) == ("paid", row["amount_cents"])
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
        assert attempt["status"] == "succeeded"


# NACHA's own cap, tested with the two-strike stop (which comes first) off.
@pytest.mark.audit_rules(CardRetryRules(two_strike_limit=0))
async def test_nsf_returns_are_reinitiated_at_most_twice(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    settings = settings.model_copy(update={"two_strike_limit": 0})
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_return_R01", due_dates=[THANKSGIVING])
    iid = lease.installment_ids[0]
    day = THANKSGIVING
    for presentment in (1, 2, 3):
        assert (await run_pass(pool, gateways, settings, as_of=day)).counts.processing == 1
        # Far enough ahead for this debit to come back.
        day = day + timedelta(days=7)
        result = await run_pass(pool, gateways, settings, as_of=day)
        assert result.counts.returned == 1
        async with pool.acquire() as conn:
            row = await installment(conn, iid)
            method = await conn.fetchval(
                "SELECT status FROM payment_methods WHERE id = $1", lease.method_id
            )
        assert row["status"] == "overdue" and method == "active"
        if presentment < 3:
            assert row["next_attempt_on"] is not None, f"reinitiation {presentment} refused"
            day = row["next_attempt_on"]
        else:
            assert row["next_attempt_on"] is None, "a third reinitiation was scheduled"
    async with pool.acquire() as conn:
        returns = await conn.fetch(
            "SELECT return_code, category FROM charge_returns ORDER BY attempt_id"
        )
    assert [tuple(r) for r in returns] == [("R01", "nsf")] * 3


@pytest.mark.parametrize(("code", "category"), [("R02", "administrative"), ("R10", "unauthorized")])
async def test_dead_account_and_unauthorized_returns_disable_the_method(
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    code: str,
    category: str,
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token=f"sandbox_ach_return_{code}", due_dates=[THANKSGIVING])
    await run_pass(pool, gateways, settings, as_of=THANKSGIVING)
    await run_pass(pool, gateways, settings, as_of=SETTLES_ON)
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
        method = await conn.fetchrow(
            "SELECT status, disabled_reason FROM payment_methods WHERE id = $1", lease.method_id
        )
        recorded = await conn.fetchval("SELECT category FROM charge_returns")
    assert (row["status"], row["next_attempt_on"]) == ("overdue", None)
    assert (method["status"], method["disabled_reason"]) == ("disabled", f"ach_return_{code}")
    assert recorded == category
    assert ACH_RETURN_RATE.labels(category="overall")._value.get() > 0


async def test_a_late_return_reverses_a_paid_installment_once(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token="sandbox_ach_ok", due_dates=[THANKSGIVING], amount_cents=4_000
        )
    await run_pass(pool, gateways, settings, as_of=THANKSGIVING)
    await run_pass(pool, gateways, settings, as_of=SETTLES_ON)
    async with pool.acquire() as conn:
        [attempt] = await attempts_of(conn, lease.installment_ids[0])
        assert (await installment(conn, lease.installment_ids[0]))["status"] == "paid"
    # Weeks later the bank returns it as unauthorized (R10 may come up to 60 days later).
    later = SETTLES_ON + timedelta(days=30)
    async with pool.acquire() as conn:
        # The bank's own record of it (the sandbox stands in for the bank).
        await conn.execute(
            "UPDATE sandbox.charges SET return_code = 'R10' WHERE idempotency_key = $1",
            attempt["idempotency_key"],
        )
    for _ in range(2):
        await apply_by_key(
            pool,
            attempt["idempotency_key"],
            Returned(code="R10"),
            as_of=later,
            retry_days=settings.soft_retry_days,
            source="webhook",
        )
    async with pool.acquire() as conn:
        row = await installment(conn, lease.installment_ids[0])
        returns = await conn.fetch("SELECT reversed_paid, amount_cents FROM charge_returns")
        status = await conn.fetchval(
            "SELECT status FROM charge_attempts WHERE id = $1", attempt["id"]
        )
    assert (row["status"], row["paid_cents"]) == ("overdue", 0)
    assert [tuple(r) for r in returns] == [(True, 4_000)]
    assert status == "returned"


class _WebhookFirstBank:
    """A settling gateway at its boundary that counts how often it is asked."""

    def __init__(self, poll_after: timedelta) -> None:
        self.name = "sandbox_ach"
        self.settlement_poll_after = poll_after
        self.asked = 0

    async def charge(self, request: object) -> Processing:
        return Processing(gateway_ref="ref")

    async def lookup(self, idempotency_key: str) -> None:
        return None

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Succeeded:
        self.asked += 1
        return Succeeded(gateway_ref="ref")


@pytest.mark.parametrize(("poll_after", "asked"), [(timedelta(days=1), 0), (timedelta(0), 1)])
async def test_young_debits_are_left_to_the_webhook(
    pool: asyncpg.Pool, settings: Settings, poll_after: timedelta, asked: int
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, token="sandbox_ach_ok", due_dates=[THANKSGIVING])
    bank = _WebhookFirstBank(poll_after)
    gws = {"sandbox_ach": bank}
    await run_pass(pool, gws, settings, as_of=THANKSGIVING)  # type: ignore[arg-type]
    counts = await settle(
        pool,
        gws,
        as_of=SETTLES_ON,
        retry_days=[3],
        batch_size=10,
        concurrency=2,  # type: ignore[arg-type]
    )
    assert (bank.asked, counts.settled) == (asked, asked)


class _Recording:
    """The sandbox ACH gateway, with every charge request it is sent kept for the test."""

    def __init__(self, inner: Gateway) -> None:
        self.name = inner.name
        self.inner = inner
        self.requests: list[ChargeRequest] = []

    async def charge(self, request: ChargeRequest) -> object:
        self.requests.append(request)
        return await self.inner.charge(request)

    async def lookup(self, idempotency_key: str) -> object:
        return await self.inner.lookup(idempotency_key)

    async def settlement(self, idempotency_key: str, *, as_of: date) -> object:
        return await self.inner.settlement(idempotency_key, as_of=as_of)  # type: ignore[attr-defined]


async def test_a_debit_presented_again_after_an_nsf_return_says_it_is_a_reinitiation(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_ach_return_R01", due_dates=[THANKSGIVING])
    bank = _Recording(gateways["sandbox_ach"])
    gws = {"sandbox_ach": bank}
    await run_pass(pool, gws, settings, as_of=THANKSGIVING)  # type: ignore[arg-type]
    await run_pass(pool, gws, settings, as_of=THANKSGIVING + timedelta(days=7))  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        retry_on = (await installment(conn, lease.installment_ids[0]))["next_attempt_on"]
    await run_pass(pool, gws, settings, as_of=retry_on)  # type: ignore[arg-type]
    assert [r.metadata.get("ach_reinitiation") for r in bank.requests] == [None, "true"]
