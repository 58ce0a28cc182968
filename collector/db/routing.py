"""Which customers' rows one statement may touch: the shard groups of a batch.

On Citus a statement that takes row locks must stay on one shard (Citus runs ``FOR UPDATE``
and ``SKIP LOCKED`` only in single-shard statements), so a batch is split by the shard its
customers' rows live on and each statement names its group's customers
(``customer_id = ANY($customers)`` on every distributed table it reads or writes). On plain
PostgreSQL the whole batch is one group: the same statements, as many as before.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from collector.db.distribution import has_citus
from collector.db.pool import Executor, pool_on_citus

# The shard each customer's rows are on; customers is the table every money table is
# co-located with (collector/db/distribution.py).
_SHARDS = """
SELECT c.id, get_shard_id_for_distribution_column('customers', c.id) AS shard
FROM unnest($1::bigint[]) AS c(id)
"""


async def shard_groups(db: Executor, customer_ids: Iterable[int]) -> list[list[int]]:
    """The customers grouped by the shard their rows are on, each group sorted; one group on
    plain PostgreSQL. Empty for no customers."""
    customers = sorted(set(customer_ids))
    if not customers:
        return []
    if not await _on_citus(db):
        return [customers]
    groups: dict[int, list[int]] = {}
    for row in await db.fetch(_SHARDS, customers):
        groups.setdefault(row["shard"], []).append(row["id"])
    return [groups[shard] for shard in sorted(groups)]


async def one_node(db: Executor) -> bool:
    """Whether the database is one node (plain PostgreSQL): a statement may then lock rows of
    any customers and call the journal's functions inside itself, so the pass's hot
    statements keep their one-statement shapes. On Citus neither holds: they are split into
    an unlocked read, then statements of one shard group each. The one switch between the
    two (the repositories ask it, nothing else tells the backends apart)."""
    return not await _on_citus(db)


async def _on_citus(db: Executor) -> bool:
    # open_pool's pools and their connections know (asked once, when opened; a proxy forwards
    # the question), so asking never takes a connection; anything else is asked now.
    known: bool | None = (
        pool_on_citus(db) if isinstance(db, asyncpg.Pool) else getattr(db, "on_citus", None)
    )
    if known is None:
        known = await has_citus(db)
    return known
