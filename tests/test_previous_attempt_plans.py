"""The "attempt before this one" lookups read one index range, never the primary key's.

The notice rule's previous automatic debit of the lease (notices.notice_facts, and
notices.upcoming_debits for the notices written ahead) and the two-strike run
(eligibility.history) ask for an installment's attempts, newest first, with ``id <`` the one
being presented. The primary key is (id, customer_id) (sql/0022): a plan that takes ``id <
$attempt AND customer_id = ...`` as its condition reads every older attempt to test the
customer, and one such plan, chosen mid-pass, doubled a pass's cost (sql/0032). Both lookups
must find the attempts through (installment_id, id) alone, in generic plans (the statement
cache's, after five runs) as in plans made for their values.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest

from collector.db.notices import notice_facts
from collector.db.queries import QUERIES
from collector.policy import DEAD_ACCOUNT_RETURNS, NEVER_RETRY_ADVICE
from tests.factories import attempt_under_key, make_lease

AS_OF = date(2026, 11, 26)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _attempt_index_scans(
    conn: asyncpg.pool.PoolConnectionProxy, query: str, args: tuple[object, ...], mode: str
) -> list[dict[str, Any]]:
    """The plan's scans of charge_attempts' indexes (plain or bitmap, at any depth), under
    plan_cache_mode ``mode``."""
    await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
    # A few dozen rows are cheapest read whole; a book's tables are not: the plan is chosen
    # among the indexes, as on a table of a real size.
    await conn.execute("SET LOCAL enable_seqscan = off")
    statement = await conn.prepare("EXPLAIN (FORMAT JSON) " + query)
    [[found]] = await statement.fetch(*args)
    plan = json.loads(found)[0]["Plan"]
    return [n for n in _nodes(plan) if n.get("Index Name", "").startswith("charge_attempts_")]


Presented = tuple[asyncpg.pool.PoolConnectionProxy, list[int], list[int], list[int]]


@pytest.fixture
async def presented(pool: asyncpg.Pool) -> AsyncIterator[Presented]:
    """Attempts of a few leases, two per installment, analyzed, in a transaction rolled back
    afterwards (they have no journal): its connection, and (attempt, installment, amount) of
    the newest of each."""
    attempt_ids, installment_ids = [], []
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            for n in range(20):
                lease = await make_lease(conn, due_dates=[AS_OF])
                await attempt_under_key(conn, lease, f"old-{n}", as_of=AS_OF, status="succeeded")
                attempt_ids.append(await attempt_under_key(conn, lease, f"new-{n}", as_of=AS_OF))
                installment_ids.append(lease.installment_ids[0])
            await conn.execute("ANALYZE")
            yield conn, attempt_ids, installment_ids, [5_000] * len(attempt_ids)
        finally:
            await transaction.rollback()


def _lookup_args(lookup: str, attempts: list[int], installments: list[int]) -> tuple[object, ...]:
    if lookup == "notices.notice_facts":
        return (attempts, installments, [5_000] * len(attempts))
    if lookup == "notices.upcoming_debits":
        return (AS_OF - timedelta(days=3), 10, date.min, 0, 500)
    return (
        attempts,
        installments,
        [f"card:{n}" for n in range(len(attempts))],
        ["card"] * len(attempts),
        AS_OF,
        sorted(NEVER_RETRY_ADVICE),
        sorted(DEAD_ACCOUNT_RETURNS),
        2,
    )


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
@pytest.mark.parametrize(
    "lookup", ["notices.notice_facts", "notices.upcoming_debits", "eligibility.history"]
)
async def test_the_attempts_before_this_one_are_read_by_installment_and_id(
    presented: Presented, lookup: str, mode: str
) -> None:
    conn, attempts, installments, _ = presented
    args = _lookup_args(lookup, attempts, installments)
    scans = await _attempt_index_scans(conn, QUERIES[lookup], args, mode)
    seen = [(s["Index Name"], s.get("Index Cond")) for s in scans]
    # The lease's attempts are read an installment at a time, newest first...
    assert any(
        s["Index Name"] == "charge_attempts_installment"
        and "installment_id =" in s.get("Index Cond", "")
        for s in scans
    ), seen
    # ... and the primary key is only ever probed for one attempt, never walked.
    walked = [
        s
        for s in scans
        if s["Index Name"] == "charge_attempts_pkey"
        and not re.search(r"\bid = ", s.get("Index Cond", ""))
    ]
    assert not walked, seen


async def _attempt(
    conn: asyncpg.pool.PoolConnectionProxy,
    installment_id: int,
    method_id: int,
    *,
    cents: int,
    source: str = "batch",
    status: str = "succeeded",
) -> int:
    attempt_id: int = await conn.fetchval(
        "INSERT INTO charge_attempts (installment_id, payment_method_id, amount_cents,"
        " idempotency_key, source, status, gateway, customer_id, instrument_key, as_of,"
        " effective_on)"
        " SELECT $1, pm.id, $2, 'k-' || gen_random_uuid(), $3, $4, pm.gateway, pm.customer_id,"
        " pm.instrument_key, $5, $5 FROM payment_methods pm WHERE pm.id = $6 RETURNING id",
        installment_id,
        cents,
        source,
        status,
        AS_OF,
        method_id,
    )
    return attempt_id


async def test_the_previous_debit_is_the_leases_last_automatic_one_before_this_attempt(
    pool: asyncpg.Pool,
) -> None:
    # The notice rule's "previous debit": the lease's newest automatic attempt before this
    # one, on any of its installments; refused attempts (never sent) and manual payments are
    # no debit of the schedule, another lease's are not its, and later ones are not previous.
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            lease = await make_lease(conn, due_dates=[AS_OF, AS_OF.replace(day=27)])
            first, second = lease.installment_ids
            other = await make_lease(conn, due_dates=[AS_OF])
            fresh = await make_lease(conn, due_dates=[AS_OF])
            m = lease.method_id
            await _attempt(conn, first, m, cents=4_000)
            await _attempt(conn, other.installment_ids[0], other.method_id, cents=9_000)
            await _attempt(conn, first, m, cents=4_100, status="refused")
            await _attempt(conn, first, m, cents=4_200, source="manual")
            now = await _attempt(conn, second, m, cents=5_000, status="pending")
            await _attempt(conn, second, m, cents=4_300)
            never = await _attempt(
                conn, fresh.installment_ids[0], fresh.method_id, cents=1, status="pending"
            )
            facts = await notice_facts(
                conn, [(now, second, 5_000), (never, fresh.installment_ids[0], 1)]
            )
            assert facts[(now, second)].previous_cents == 4_000
            assert facts[(never, fresh.installment_ids[0])].previous_cents is None
        finally:
            # Nothing here has a journal.
            await transaction.rollback()
