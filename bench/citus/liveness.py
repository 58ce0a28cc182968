"""Is a live pass seen live? A probe on the database COLLECTOR_DATABASE_URL (plain
PostgreSQL or Citus), for issue 12's liveness rule.

A session holds a pass's liveness lock, pg_advisory_lock(LIVENESS_NAMESPACE, run), and a
pending attempt of that run is written (a probe row, removed at the end). Then:
- attempts.live_runs, read on its own statement, sees the run;
- claim_unresolved leaves the attempt alone while the lock is held, takes it once the lock
  is gone.

    COLLECTOR_DATABASE_URL=postgresql://postgres@127.0.0.1:9700/hcore \\
        uv run python bench/citus/liveness.py
"""

from __future__ import annotations

import asyncio
import os

import asyncpg

from collector.db.attempts import LIVENESS_NAMESPACE, claim_unresolved, live_runs
from collector.db.pool import open_pool

_PROBE = """
INSERT INTO charge_attempts
    (installment_id, payment_method_id, amount_cents, idempotency_key, source, status,
     gateway, run_id, claimed_until, customer_id, instrument_key, as_of)
SELECT i.id, pm.id, 1, 'liveness-probe-' || $1::bigint, 'batch', 'pending', pm.gateway, $1::bigint,
       now() + interval '1 hour', i.customer_id, pm.instrument_key, current_date
FROM installments i
JOIN payment_methods pm ON pm.customer_id = i.customer_id AND pm.is_primary
WHERE i.customer_id = (SELECT min(id) FROM customers) AND i.customer_id = pm.customer_id
ORDER BY i.id LIMIT 1
RETURNING id, customer_id, gateway
"""


async def main() -> None:
    url = os.environ["COLLECTOR_DATABASE_URL"]
    async with open_pool(url, size=2) as pool:
        # Two passes' run rows (the attempts' run_id references collection_runs): the probe's
        # pass, and the one that reconciles; run one `collector run` first.
        row = await pool.fetchrow("SELECT min(id) AS a, max(id) AS b FROM collection_runs")
        assert row is not None and row["a"] is not None, "run one pass first"
        await _probe(pool, url, row["a"], row["b"])


async def _probe(pool: asyncpg.Pool, url: str, run: int, reconciler: int) -> None:
    holder = await asyncpg.connect(url)
    probe = None
    try:
        await holder.execute("SELECT pg_advisory_lock($1, $2)", LIVENESS_NAMESPACE, run)
        probe = await pool.fetchrow(_PROBE, run)
        assert probe is not None
        live, _ = await live_runs(pool)
        print(f"run {run} holds its liveness lock; live_runs sees it: {run in live}")
        batch = await claim_unresolved(
            pool,
            after_id=probe["id"] - 1,
            limit=10,
            gateways=[probe["gateway"]],
            run_id=reconciler,
            deadline_s=60,
        )
        taken = [u.charge.attempt_id for u in batch.taken]
        print(f"claim_unresolved while the pass lives takes the probe: {probe['id'] in taken}")
        await holder.execute("SELECT pg_advisory_unlock($1, $2)", LIVENESS_NAMESPACE, run)
        batch = await claim_unresolved(
            pool,
            after_id=probe["id"] - 1,
            limit=10,
            gateways=[probe["gateway"]],
            run_id=reconciler,
            deadline_s=60,
        )
        taken = [u.charge.attempt_id for u in batch.taken]
        print(f"claim_unresolved once the pass is gone takes the probe: {probe['id'] in taken}")
    finally:
        if probe is not None:
            await pool.execute(
                "DELETE FROM charge_attempts WHERE id = $1 AND customer_id = $2",
                probe["id"],
                probe["customer_id"],
            )
        await holder.close()


if __name__ == "__main__":
    asyncio.run(main())
