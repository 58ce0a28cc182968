"""``collector run`` killed with SIGKILL at random moments over one large due set, again and
again, then finished by ordinary passes: every installment collected exactly once.

Each kill waits for a moment drawn from the seed, read from the database's own state: the
child's run row has appeared (it is reconciling or settling), it has taken over attempts a
killed pass left, it has claimed (a fraction of what is left), the sandbox has taken more
charges, or more answers are recorded. Then SIGKILL; the next child starts at once.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from collector.seed import seed_demo
from tests.chaos.conftest import Scale
from tests.chaos.helpers import (
    Child,
    assert_audit_clean,
    assert_gateway_matches_ledger,
    assert_where_tokens_put_them,
    business_today,
    chaos_settings,
    child_env,
    pass_in_process,
    passes_until_resolved,
    sandbox_record,
    start_collector,
    wait_until,
)

pytestmark = pytest.mark.chaos

TRIGGERS = ("started", "reconciling", "claimed", "charged", "recorded")


@dataclass(frozen=True)
class Progress:
    run_id: int
    attempt_id: int
    attempts: int
    recorded: int
    charged: int
    left: int  # installments never presented yet
    orphans: int  # attempts a killed pass left pending or in doubt


async def _progress(db: asyncpg.Pool) -> Progress:
    row = await db.fetchrow(
        "SELECT (SELECT coalesce(max(id), 0) FROM collection_runs) AS run_id,"
        " (SELECT coalesce(max(id), 0) FROM charge_attempts) AS attempt_id,"
        " (SELECT count(*) FROM charge_attempts) AS attempts,"
        " (SELECT count(*) FROM charge_attempts WHERE status <> 'pending') AS recorded,"
        " (SELECT count(*) FROM sandbox.charges) AS charged,"
        " (SELECT count(*) FROM installments WHERE status = 'scheduled') AS left,"
        " (SELECT count(*) FROM charge_attempts WHERE status IN ('pending', 'in_doubt')) AS orphans"
    )
    assert row is not None
    return Progress(**dict(row))


def _moment(
    rng: random.Random, before: Progress, child: Child, pool: asyncpg.Pool
) -> tuple[str, Callable[[], Awaitable[bool]]]:
    """A moment to kill at, drawn from the seed, as a condition on the database's state."""
    trigger = rng.choice(TRIGGERS)
    if trigger == "reconciling" and before.orphans == 0:
        trigger = "claimed"
    if trigger in ("claimed", "charged", "recorded") and before.left == 0:
        trigger = "started"  # nothing left to claim: kill it while it reconciles or audits
    step = max(1, int(before.left * rng.uniform(0.01, 0.25)))

    async def run_id() -> int | None:
        found: int | None = await pool.fetchval(
            "SELECT id FROM collection_runs WHERE id > $1 AND pid = $2", before.run_id, child.pid
        )
        return found

    async def started() -> bool:
        return await run_id() is not None

    async def reconciling() -> bool:
        run = await run_id()
        return run is not None and bool(
            await pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM charge_attempts WHERE run_id = $1 AND id <= $2)",
                run,
                before.attempt_id,
            )
        )

    async def claimed() -> bool:
        n: int = await pool.fetchval("SELECT count(*) FROM charge_attempts")
        return n >= before.attempts + step

    async def charged() -> bool:
        n: int = await pool.fetchval("SELECT count(*) FROM sandbox.charges")
        return n >= before.charged + step

    async def recorded() -> bool:
        n: int = await pool.fetchval(
            "SELECT count(*) FROM charge_attempts WHERE status <> 'pending'"
        )
        return n >= before.recorded + step

    checks = {
        "started": started,
        "reconciling": reconciling,
        "claimed": claimed,
        "charged": charged,
        "recorded": recorded,
    }
    counted = trigger in ("claimed", "charged", "recorded")
    return (f"{trigger}+{step}" if counted else trigger), checks[trigger]


async def test_sigkilled_runs_then_a_final_pass_collect_each_installment_exactly_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, scale: Scale, rng: random.Random
) -> None:
    today = business_today().isoformat()
    total = scale(800, 20_000)
    kills = scale(3, 20)
    await seed_demo(pool, customers=total, due_on=business_today(), mix="demo", installments=1)
    # 5 ms a charge at the sandbox, 32 in flight: at every moment of a pass some charges are
    # claimed and not answered, some answered and not recorded.
    env = child_env(
        database_url,
        COLLECTOR_SANDBOX_LATENCY_MS="5",
        COLLECTOR_CONCURRENCY="32",
        COLLECTOR_BATCH_SIZE="100",
    )
    logs = tmp_path / "logs"
    landed: list[str] = []
    for _ in range(kills):
        child = await start_collector(["run", "--date", today], env, logs)
        try:
            # The sandbox's table appears with the first child's gateways.
            await wait_until(
                lambda: pool.fetchval("SELECT to_regclass('sandbox.charges') IS NOT NULL"),
                what="the sandbox's table",
                alive=child,
            )
            before = await _progress(pool)
            name, moment = _moment(rng, before, child, pool)
            await wait_until(moment, what=f"the moment to kill ({name})", alive=child)
        finally:
            await child.kill()
        landed.append(name)
    print(f"killed {len(landed)} times: {', '.join(landed)}")

    # Then ordinary passes until every answer is known: the first takes over what the last
    # kill left; timeouts it records in doubt are looked up by the next.
    settings = chaos_settings(database_url, sandbox_latency_ms=5)
    await passes_until_resolved(
        pool, lambda: pass_in_process(pool, settings, as_of=business_today())
    )

    # Nothing lost, nothing twice: each installment ends where its token says, with one
    # accepted charge at most, and the sandbox's record is the ledger's.
    await assert_where_tokens_put_them(pool, total)
    await assert_audit_clean(pool)
    await assert_gateway_matches_ledger(
        pool, await sandbox_record(pool), gateways=["sandbox_card", "sandbox_ach"]
    )
