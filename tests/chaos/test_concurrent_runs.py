"""Four ``collector run`` processes at once on one due set, and a storm of manual payments
through the portal API on the same leases while they run: every installment taken at most
once, every answer the portal gave held by its replay, the ledger and the sandbox agreeing.

The portal is the ASGI app in this process, on its own pool and sandbox gateways (a daemon's
process would serve it the same way); the batch runs in four children.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest

from collector.api.app import create_app
from collector.gateways.registry import open_gateways
from tests.chaos.conftest import Scale
from tests.chaos.helpers import (
    assert_audit_clean,
    assert_gateway_matches_ledger,
    business_today,
    chaos_settings,
    child_env,
    describe_statuses,
    pass_in_process,
    passes_until_resolved,
    sandbox_record,
    start_collector,
    statuses,
    wait_until,
)
from tests.chaos.storm import (
    ANSWERS,
    API_TOKEN,
    STORM_ATTEMPTS,
    assert_replays_hold,
    blow,
    make_leases,
    make_overdue_leases,
    plan,
)
from tests.conftest import gateway_context

pytestmark = pytest.mark.chaos

RUNS = 4


async def test_four_runs_and_a_storm_of_manual_payments_take_each_installment_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, scale: Scale, rng: random.Random
) -> None:
    today = business_today()
    # Half the leases are all the batch's to take today (manual payments collide with it);
    # on the other half the batch takes today's installment while manual payments alone
    # can pay the overdue ones, declined before and retried in days.
    half = scale(40, 500)
    leases = await make_leases(pool, half, rng, today)
    leases += await make_overdue_leases(pool, half, rng, today, due_today=True)
    # Small batches and 40 ms a charge: the four passes interleave their claims, and the
    # storm meets installments in every state.
    env = child_env(
        database_url,
        COLLECTOR_SANDBOX_LATENCY_MS="40",
        COLLECTOR_CONCURRENCY="2",
        COLLECTOR_BATCH_SIZE="5",
        COLLECTOR_CLAIMERS="2",
    )
    settings = chaos_settings(
        database_url,
        api_tokens=[API_TOKEN],
        sandbox_latency_ms=5,
        manual_pay_max_attempts=int(STORM_ATTEMPTS),
    )
    now = datetime.now(UTC)
    planned = plan(leases, scale(100, 1_500), rng, tag="storm")
    logs = tmp_path / "logs"
    async with open_gateways(settings.gateways, gateway_context(database_url)) as gateways:
        app = create_app(settings, pool, gateways, clock=lambda: now)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://portal.chaos",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as http:
            runs = [
                await start_collector(["run", "--date", today.isoformat()], env, logs)
                for _ in range(RUNS)
            ]
            t0 = time.monotonic()
            installments = await pool.fetchval(
                "SELECT count(*) FROM installments WHERE next_attempt_on <= $1", today
            )

            def wave(share: float) -> Callable[[], Awaitable[None]]:
                # A part of the storm waits until the batch has presented this share of the
                # installments (or the four passes are over).
                async def until() -> None:
                    async def reached() -> bool:
                        if all(run.returncode is not None for run in runs):
                            return True
                        n: int = await pool.fetchval(
                            "SELECT count(*) FROM charge_attempts WHERE source <> 'manual'"
                        )
                        return n >= share * installments

                    await wait_until(reached, what=f"the batch at {share:.0%}")

                return until

            try:
                storm = await blow(
                    http, planned, waves=[wave(share) for share in (0.02, 0.1, 0.25, 0.45, 0.7)]
                )
                t1 = time.monotonic()
                codes = [await run.wait() for run in runs]
                t2 = time.monotonic()
            finally:
                with anyio.CancelScope(shield=True):
                    for run in runs:
                        await run.kill()
            print(
                f"storm answers {storm.by_status()}; runs exited {codes}; storm {t1 - t0:.1f} s, runs {t2 - t0:.1f} s"
            )
            assert codes == [0] * RUNS, [r.stderr()[-2000:] for r in runs if r.returncode]
            bad = [(s.key, s.status, s.answer) for s in storm.sent if s.status not in ANSWERS]
            assert not bad, f"answers a manual payment may not give: {bad[:10]}"
            assert storm.by_status().get(201, 0) > 0, "no manual payment went through"

            # Then the day's ordinary passes until nothing is unknown.
            await passes_until_resolved(pool, lambda: pass_in_process(pool, settings, as_of=today))
            t3 = time.monotonic()
            await assert_replays_hold(http, storm)
            print(f"final passes {t3 - t2:.1f} s, replays {time.monotonic() - t3:.1f} s")
    print(f"installments: {describe_statuses(await statuses(pool))}")
    # An installment the day's passes left untouched is one whose method a hard decline
    # disabled before its turn came: nothing else may be left behind.
    left = await pool.fetch(
        "SELECT i.id, pm.token, pm.status FROM installments i"
        " JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id"
        " JOIN payment_methods pm ON pm.customer_id = l.customer_id AND pm.is_primary"
        " WHERE i.status = 'scheduled' AND pm.status = 'active'"
    )
    assert not left, f"installments due and never collected: {[tuple(r) for r in left]}"
    payments = await statuses(pool, "payments")
    assert "pending" not in payments and "in_doubt" not in payments, payments
    await assert_audit_clean(pool)
    await assert_gateway_matches_ledger(
        pool, await sandbox_record(pool), gateways=["sandbox_card", "sandbox_ach"]
    )
