from __future__ import annotations

import asyncpg
import pytest

from collector.db.migrate import available_migrations, migrate
from collector.db.queries import load_queries
from collector.domain import AttemptStatus, InstallmentStatus, RunStatus


async def test_migrations_are_recorded_and_rerun_is_a_no_op(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in available_migrations()]
        assert await migrate(conn) == []


async def test_every_named_query_prepares_against_the_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for name, sql in load_queries().items():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:  # pragma: no cover - the failure message
                pytest.fail(f"query {name} does not prepare: {exc}")


async def test_one_primary_method_per_customer(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        cid = await conn.fetchval(
            "INSERT INTO customers (email, name) VALUES ('a@x', 'A') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO payment_methods (customer_id, kind, gateway, token, is_primary)"
            " VALUES ($1, 'card', 'sandbox_card', 't1', true)",
            cid,
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO payment_methods (customer_id, kind, gateway, token, is_primary)"
                " VALUES ($1, 'card', 'sandbox_card', 't2', true)",
                cid,
            )


async def test_money_constraints_reject_bad_amounts(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        cid = await conn.fetchval(
            "INSERT INTO customers (email, name) VALUES ('b@x', 'B') RETURNING id"
        )
        lid = await conn.fetchval(
            "INSERT INTO leases (customer_id, store, agreement_ref) VALUES ($1, 's', 'AG-1') RETURNING id",
            cid,
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO installments (lease_id, customer_id, seq, due_on, amount_cents)"
                " VALUES ($1, $2, 1, '2026-01-01', 0)",
                lid,
                cid,
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO installments (lease_id, customer_id, seq, due_on, amount_cents,"
                " paid_cents) VALUES ($1, $2, 1, '2026-01-01', 100, 101)",
                lid,
                cid,
            )


async def test_status_enums_match_the_check_constraints(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for table, enum in (
            ("installments", InstallmentStatus),
            ("charge_attempts", AttemptStatus),
            ("collection_runs", RunStatus),
        ):
            check = await conn.fetchval(
                "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c"
                " WHERE c.conrelid = $1::regclass AND c.conname = $2",
                table,
                f"{table}_status_check",
            )
            for value in enum:
                assert f"'{value.value}'" in check


async def test_functions_with_a_kept_generic_plan_never_plan_a_sequential_scan(
    pool: asyncpg.Pool,
) -> None:
    # A generic plan is made at a session's first call and kept: made while a table was still
    # small, it would scan the table whole for the rest of the session as the table grew
    # (sql/0010). Every such function reaches its rows by key and forbids the scan.
    rows = await pool.fetch(
        "SELECT p.proname, p.proconfig FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = current_schema()"
        " AND 'plan_cache_mode=force_generic_plan' = ANY (p.proconfig)"
    )
    assert {row["proname"] for row in rows} >= {
        "money_apply_v1",
        "money_present_v1",
        "money_follow_v1",
        "money_replan_v1",
    }
    for row in rows:
        assert "enable_seqscan=off" in row["proconfig"], row["proname"]
