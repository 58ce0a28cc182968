"""The schema's shape for a distributed PostgreSQL (Citus), distributed by ``customer_id``.

The README's scaling guide says what the shape is (sql/0022 built it). These tests read the
migrated schema's own catalog, on plain PostgreSQL, so a migration that breaks the shape fails
here before anyone tries it on a cluster; ``tests/citus/`` runs the engine on one.
"""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest

from collector.db.distribution import PLAIN_KEY_INDEXES
from tests.factories import attempt_under_key, make_lease

# Every table whose rows are, or decide, a movement of a customer's money.
MONEY_TABLES = (
    "leases",
    "payment_methods",
    "installments",
    "charge_attempts",
    "money_movements",
    "payments",
    "payment_allocations",
    "charge_returns",
    "ach_entries",
    "ach_notifications_of_change",
    "ach_prenotes",
    "method_authorizations",
    "payment_method_changes",
    "promises",
    "outbox_events",
    "event_deliveries",
    "debit_notices",
    "delinquency_snapshots",
)
# needs_attention is not one: the operators' queue may hold a row that names no customer (a
# return file's line that matches no debit); on Citus it is a reference table.

COLUMNS = """
SELECT table_name, is_nullable
FROM information_schema.columns
WHERE table_schema = 'public' AND column_name = 'customer_id' AND table_name = ANY ($1::text[])
"""

UNIQUE_KEYS = """
SELECT t.relname AS table_name, i.relname AS index_name,
       array_agg(a.attname::text ORDER BY a.attnum) AS columns
FROM pg_index x
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (x.indkey)
WHERE x.indisunique AND t.relname = ANY ($1::text[])
GROUP BY t.relname, i.relname
"""


async def _columns(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch(COLUMNS, list(MONEY_TABLES))
    return {row["table_name"]: row["is_nullable"] for row in rows}


FOREIGN_KEYS = """
SELECT c.conname, c.conrelid::regclass::text AS table_name,
       c.confrelid::regclass::text AS referenced,
       ARRAY(SELECT attname::text FROM pg_attribute
             WHERE attrelid = c.conrelid AND attnum = ANY (c.conkey)) AS columns,
       ARRAY(SELECT attname::text FROM pg_attribute
             WHERE attrelid = c.confrelid AND attnum = ANY (c.confkey)) AS referenced_columns
FROM pg_constraint c
WHERE c.contype = 'f' AND c.conrelid::regclass::text = ANY ($1::text[])
"""


async def test_every_money_table_names_its_customer_on_every_row(pool: asyncpg.Pool) -> None:
    columns = await _columns(pool)
    missing = sorted(set(MONEY_TABLES) - set(columns))
    assert missing == [], f"no customer_id on: {', '.join(missing)}"
    nullable = sorted(table for table, is_nullable in columns.items() if is_nullable != "NO")
    assert nullable == [], f"customer_id may be NULL on: {', '.join(nullable)}"


async def test_the_journal_has_no_foreign_key_that_a_shard_could_not_check(
    pool: asyncpg.Pool,
) -> None:
    # Citus checks a foreign key only between co-located tables; the journal's references are
    # checked by the audit instead (its check journal_references), which works distributed.
    count = await pool.fetchval(
        "SELECT count(*) FROM pg_constraint"
        " WHERE conrelid = 'money_movements'::regclass AND contype = 'f'"
    )
    assert count == 0


async def test_every_unique_key_of_a_money_table_includes_the_customer(
    pool: asyncpg.Pool,
) -> None:
    rows = await pool.fetch(UNIQUE_KEYS, list(MONEY_TABLES))
    # Plain PostgreSQL's own indexes on the idempotency key alone (sql/0031), which a
    # database's move to Citus drops before placing its tables (distribution.py).
    plain_only = set(PLAIN_KEY_INDEXES.values())
    without = sorted(
        f"{row['table_name']}.{row['index_name']}"
        for row in rows
        if "customer_id" not in row["columns"] and row["index_name"] not in plain_only
    )
    assert without == [], f"unique keys without customer_id: {', '.join(without)}"


async def test_every_foreign_key_between_money_tables_is_co_located(pool: asyncpg.Pool) -> None:
    # A shard checks a foreign key only when both rows are on it: the customer on both sides.
    # customers is distributed by its id, so a key to it is co-located as it stands.
    rows = await pool.fetch(FOREIGN_KEYS, list(MONEY_TABLES))
    assert rows, "no foreign keys found: the query is wrong"
    apart = sorted(
        f"{row['table_name']}.{row['conname']}"
        for row in rows
        if row["referenced"] in MONEY_TABLES
        and not ("customer_id" in row["columns"] and "customer_id" in row["referenced_columns"])
    )
    assert apart == [], f"foreign keys not co-located on customer_id: {', '.join(apart)}"


async def test_no_money_table_has_a_row_trigger_of_its_own_but_the_journal(
    pool: asyncpg.Pool,
) -> None:
    # A row trigger on a distributed table runs on its shard; Citus refuses one unless told
    # otherwise. The journal's are kept, and distributed with citus.enable_unsafe_triggers
    # (collector/db/distribution.py says why each is safe there).
    triggers = await pool.fetch(
        "SELECT tgrelid::regclass::text AS table_name, tgname FROM pg_trigger"
        " WHERE NOT tgisinternal AND tgrelid::regclass::text = ANY ($1::text[])",
        list(MONEY_TABLES),
    )
    others = sorted(
        f"{t['table_name']}.{t['tgname']}"
        for t in triggers
        if t["table_name"] not in ("money_movements", "payment_methods")
    )
    assert others == [], f"row triggers on: {', '.join(others)}"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("customer_emails", "email"),
        ("lease_agreement_refs", "agreement_ref"),
        ("idempotency_keys", "idempotency_key"),
    ],
)
async def test_global_uniqueness_lives_in_a_table_keyed_by_the_value(
    pool: asyncpg.Pool, table: str, key: str
) -> None:
    primary = await pool.fetchval(
        "SELECT array_agg(a.attname::text) FROM pg_index x"
        " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey)"
        " WHERE x.indrelid = $1::regclass AND x.indisprimary",
        table,
    )
    assert primary == [key]


async def test_on_plain_postgresql_the_table_that_sends_a_key_holds_it_once(
    pool: asyncpg.Pool,
) -> None:
    rows = await pool.fetch(UNIQUE_KEYS, list(PLAIN_KEY_INDEXES))
    held = {(row["table_name"], row["index_name"]): row["columns"] for row in rows}
    for table, index in PLAIN_KEY_INDEXES.items():
        assert held.get((table, index)) == ["idempotency_key"], table
    # What the index is for: one key under two customers would get the second the first's
    # charge from the gateway. The attempt itself is refused, with nothing else written.
    async with pool.acquire() as conn:
        first, second = [await make_lease(conn, due_dates=[date(2026, 11, 2)]) for _ in "ab"]
        key, on = "collector-inst-1-1", date(2026, 11, 2)
        # Rolled back: a bare attempt with no journal is what the closing audit refuses.
        attempts = conn.transaction()
        await attempts.start()
        try:
            await attempt_under_key(conn, first, key, as_of=on, status="pending")
            with pytest.raises(asyncpg.UniqueViolationError):
                await attempt_under_key(conn, second, key, as_of=on, status="pending")
        finally:
            await attempts.rollback()
