"""The money journal's guarantees, held by the schema itself and by the shape of the code."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from collector.db.queries import load_queries, sql_dir
from tests.factories import make_lease, put_state

TODAY = date(2026, 11, 26)

# The columns only installments_derive_v1 may write.
DERIVED = (
    "paid_cents",
    "in_flight_cents",
    "cancelled_cents",
    "status",
    "attempts",
    "next_attempt_on",
    "fee_cents",
    "fee_waived_cents",
)
_UPDATE_INSTALLMENTS = re.compile(r"\bUPDATE\s+installments\b", re.IGNORECASE)
_CREATE_FUNCTION = re.compile(r"CREATE (?:OR REPLACE )?FUNCTION")


def test_no_named_query_writes_an_installments_money_state() -> None:
    writers = [name for name, sql in load_queries().items() if _UPDATE_INSTALLMENTS.search(sql)]
    assert writers == []


def _sets_money_state(statement: str) -> bool:
    """Whether the UPDATE at the start of ``statement`` sets a derived column (a backfill of
    another column, such as 0022's customer_id, writes no money state)."""
    set_list = statement.split(";")[0].split(" SET ", 1)[1].split(" FROM ")[0]
    return any(re.search(rf"\b{column}\s*=", set_list) for column in DERIVED)


def test_only_the_derivation_updates_installments_in_the_functions() -> None:
    # Migrations before the journal wrote installments in their own way; from it on, the
    # UPDATEs of installments are money_apply_v1's (v2's from 0023; rows just added) and
    # installments_derive_v1's (the whole journal), both through installment_status_v1.
    journal = sorted(sql_dir().glob("*.sql"))
    later = [p for p in journal if p.name >= "0006"]
    updates = [
        (p.name, m.start())
        for p in later
        for m in _UPDATE_INSTALLMENTS.finditer(p.read_text(encoding="utf-8"))
        if _sets_money_state(p.read_text(encoding="utf-8")[m.start() :])
    ]
    owners = []
    for name, at in updates:
        text = Path(sql_dir() / name).read_text(encoding="utf-8")
        # The nearest function definition before the UPDATE (0017: payoff, 0021: fees
        # replace both); a later migration may replace them, never add another writer.
        start = max(m.start() for m in _CREATE_FUNCTION.finditer(text, 0, at))
        owners.append(_CREATE_FUNCTION.sub("CREATE FUNCTION", text[start:].split("(")[0]))
    # 0023: money_apply_v2 (the same writer, naming its rows' customers for Citus) takes
    # the place of money_apply_v1, which now only calls it (0028); 0029 derives a customer
    # at a time; 0030 replaces money_apply_v2 (the customers' test no index takes on plain
    # PostgreSQL).
    assert owners == [
        "CREATE FUNCTION money_apply_v1",
        "CREATE FUNCTION installments_derive_v1",
    ] * 3 + [
        "CREATE FUNCTION money_apply_v2",
        "CREATE FUNCTION installments_derive_v1",
        "CREATE FUNCTION money_apply_v2",
    ]


async def test_the_journal_refuses_updates_and_deletes(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY])
        await put_state(conn, lease.installment_ids[0], status="paid")
        for statement in (
            "UPDATE money_movements SET amount_cents = 1",
            "DELETE FROM money_movements",
            "TRUNCATE money_movements CASCADE",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM money_movements") == 2


@pytest.mark.ledger_left_dirty(
    "an over-presentment is written behind the journal's functions to show the CHECK"
)
async def test_taken_money_never_exceeds_the_amount(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY], amount_cents=5_000)
        [iid] = lease.installment_ids
        await put_state(conn, iid, status="pending_settlement", paid_cents=1_000)
        row = await conn.fetchrow("SELECT * FROM installments WHERE id = $1", iid)
        assert (row["paid_cents"], row["in_flight_cents"]) == (1_000, 4_000)
        # One cent more in flight than is left to take: the derivation refuses it.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO money_movements (customer_id, installment_id, kind, amount_cents,"
                " as_of, source) VALUES ($1, $2, 'presented', 1, $3, 'migration')",
                lease.customer_id,
                iid,
                TODAY,
            )
            await conn.execute("SELECT installments_derive_v1(ARRAY[$1::bigint])", iid)


async def test_the_derivation_gives_back_a_state_written_around_it(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY], amount_cents=5_000)
        [iid] = lease.installment_ids
        await put_state(conn, iid, status="overdue", attempts=1, next_attempt_on=TODAY)
        before = dict(
            await conn.fetchrow(f"SELECT {', '.join(DERIVED)} FROM installments WHERE id = $1", iid)
        )
        # A statement outside the journal changes the money state; derivation restores it.
        await conn.execute(
            "UPDATE installments SET paid_cents = 5000, status = 'paid', next_attempt_on = NULL"
            " WHERE id = $1",
            iid,
        )
        await conn.execute("SELECT installments_derive_v1(ARRAY[$1::bigint])", iid)
        after = dict(
            await conn.fetchrow(f"SELECT {', '.join(DERIVED)} FROM installments WHERE id = $1", iid)
        )
    assert after == before
    assert before["status"] == "overdue" and before["attempts"] == 1


# A bare customer filter, `x.customer_id = ANY (p_customers)`; sql/0030's form
# `(p_customers IS NULL OR x.customer_id = ANY (p_customers))` is not matched.
_BARE_CUSTOMER_FILTER = re.compile(
    r"(?<!p_customers IS NULL OR )\b\w+\.customer_id = ANY \(p_customers\)"
)


async def test_no_generic_plan_puts_a_customer_array_beside_a_key(pool: asyncpg.Pool) -> None:
    # Under a generic plan p_customers is a parameter of unknown length, and PostgreSQL 15
    # takes `customer_id = ANY (p_customers)` beside `id = ANY (...)` as index conditions on
    # the (id, customer_id) keys: one descent for every pair (money_apply_v2: 30 ms a batch
    # of 500). A function planned once for all calls tests the array only as a filter.
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT p.proname, p.prosrc FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'public'"
            " WHERE 'plan_cache_mode=force_generic_plan' = ANY (p.proconfig)"
        )
    assert rows, "no function planned generically: the check reads nothing"
    bare = sorted(r["proname"] for r in rows if _BARE_CUSTOMER_FILTER.search(r["prosrc"]))
    assert bare == []
