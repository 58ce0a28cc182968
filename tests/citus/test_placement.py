"""What `collector migrate` makes of the schema on Citus, read from the cluster's catalog."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest

from collector.db.attempts import register_keys
from collector.db.distribution import PLAIN_KEY_INDEXES, TABLES, distribute
from collector.db.migrate import migrate
from tests.citus.cluster import make_cluster_database
from tests.factories import attempt_under_key, make_lease


async def test_every_table_is_placed_as_the_map_says(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        "SELECT logicalrelid::regclass::text AS name, partmethod,"
        " column_to_column_name(logicalrelid, partkey) AS column, colocationid"
        " FROM pg_dist_partition"
    )
    placed = {row["name"]: row for row in rows}
    assert set(placed) == {t.name for t in TABLES}
    customers_group = placed["customers"]["colocationid"]
    for table in TABLES:
        row = placed[table.name]
        if table.placement == "reference":
            assert row["partmethod"] == b"n", table.name
            continue
        assert (row["partmethod"], row["column"]) == (b"h", table.column), table.name
        # Co-located with customers exactly when distributed by customer.
        assert (row["colocationid"] == customers_group) == (table.placement == "customer")


async def test_migrating_again_places_nothing(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn) == []
        async with conn.transaction():
            assert await distribute(conn) == []
    finally:
        await conn.close()


async def _customer(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, n: int) -> int:
    customer_id: int = await conn.fetchval(
        "INSERT INTO customers (email, name) VALUES ($1, 'C') RETURNING id", f"c{n}@example.com"
    )
    return customer_id


async def test_a_foreign_key_is_checked_on_the_shard(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        ids = [await _customer(conn, n) for n in range(2)]
        lease = await conn.fetchval(
            "INSERT INTO leases (customer_id, store, agreement_ref) VALUES ($1, 's', 'A-1')"
            " RETURNING id",
            ids[0],
        )
        # The lease is customer 0's: an installment of it filed under customer 1 names a
        # (lease, customer) pair that no shard holds.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO installments (lease_id, customer_id, seq, due_on, amount_cents)"
                " VALUES ($1, $2, 1, '2026-12-01', 100)",
                lease,
                ids[1],
            )


@pytest.mark.parametrize(
    ("table", "columns", "values"),
    [
        ("customer_emails", "email, customer_id", ("same@example.com",)),
        ("lease_agreement_refs", "agreement_ref, customer_id, lease_id", ("AGR-SAME", 1)),
        ("idempotency_keys", "idempotency_key, customer_id", ("collector-inst-1-1",)),
    ],
)
async def test_a_value_kept_unique_across_customers_is_refused_for_a_second_customer(
    pool: asyncpg.Pool, table: str, columns: str, values: tuple[object, ...]
) -> None:
    async with pool.acquire() as conn:
        first, second = [await _customer(conn, n) for n in range(2)]
        key, *rest = values
        names = columns.split(", ")
        params = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        sql = f"INSERT INTO {table} ({columns}) VALUES ({params})"
        await conn.execute(sql, key, first, *rest)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(sql, key, second, *rest)


async def test_a_plain_database_that_moves_to_citus_keeps_every_key_held(
    citus_url: str, citus_admin_url: str
) -> None:
    # On plain PostgreSQL the attempts' own unique index holds each key (sql/0031) and the
    # lookup table is not written; on Citus the lookup table must hold every key sent before.
    key = "collector-inst-424242-1"
    first: list[int] = []

    async def history(conn: asyncpg.Connection) -> None:
        lease = await make_lease(conn, due_dates=[date(2026, 11, 2)])
        first.append(lease.customer_id)
        await attempt_under_key(conn, lease, key, as_of=date(2026, 11, 2))
        assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0

    url = await make_cluster_database(
        citus_admin_url, "collector_citus_moved", 4, plain_first=history
    )
    conn = await asyncpg.connect(url)
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relname = ANY ($1::text[])",
                list(PLAIN_KEY_INDEXES.values()),
            )
            == 0
        )
        placed = {
            r[0] for r in await conn.fetch("SELECT logicalrelid::text FROM pg_dist_partition")
        }
        assert {t.name for t in TABLES} <= placed
        assert await conn.fetch("SELECT idempotency_key, customer_id FROM idempotency_keys") == [
            (key, first[0])
        ]
        other = await make_lease(conn, due_dates=[date(2026, 11, 2)])
        async with conn.transaction():
            with pytest.raises(asyncpg.UniqueViolationError):
                await register_keys(conn, [(key, other.customer_id)])
    finally:
        await conn.close()
