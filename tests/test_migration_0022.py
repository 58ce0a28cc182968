"""sql/0022 (the distribution key) on a populated database: a database at 0021 with a row of
every kind the migration touches, then 0022, then what each row became."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from itertools import count

import asyncpg
import pytest

from collector.db.embedded import database_url_of
from collector.db.migrate import available_migrations

_counter = count()

# A small book at 0021: a customer with a card (an installment attempted and paid in part by a
# manual payment) and a bank account (a debit returned, its NACHA entry, a prenote and its
# entry, a notice of change about the debit), and a notice of change about a trace nobody sent.
_BOOK_AT_0021 = """
INSERT INTO customers (id, email, name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
INSERT INTO payment_methods (id, customer_id, kind, gateway, token, last4, is_primary)
VALUES (10, 1, 'card', 'sandbox_card', 'sandbox_card_ok', '4242', true),
       (20, 2, 'ach', 'sandbox_ach', 'sandbox_ach_ok', '6789', true);
INSERT INTO leases (id, customer_id, store, agreement_ref)
VALUES (100, 1, 's', 'AGR-1'), (200, 2, 's', 'AGR-2');
INSERT INTO installments (id, lease_id, seq, due_on, amount_cents)
VALUES (1000, 100, 1, '2026-11-01', 5000), (2000, 200, 1, '2026-11-01', 7000);
INSERT INTO payments (id, lease_id, customer_id, payment_method_id, amount_cents, request_key,
                      request_hash, as_of)
VALUES (500, 100, 1, 10, 2000, 'req-1', 'h', '2026-11-02');
INSERT INTO payment_allocations (payment_id, installment_id, amount_cents, prev_status)
VALUES (500, 1000, 2000, 'overdue');
INSERT INTO charge_attempts (id, installment_id, payment_id, payment_method_id, amount_cents,
                             idempotency_key, source, status, gateway, customer_id,
                             instrument_key, as_of, effective_on)
VALUES (1, 1000, NULL, 10, 5000, 'collector-inst-1000-1', 'batch', 'declined', 'sandbox_card',
        1, 'card:1', '2026-11-01', '2026-11-01'),
       (2, NULL, 500, 10, 2000, 'collector-pay-500', 'manual', 'succeeded', 'sandbox_card', 1,
        'card:1', '2026-11-02', '2026-11-02'),
       (3, 2000, NULL, 20, 7000, 'collector-inst-2000-1', 'batch', 'returned', 'nacha', 2,
        'ach:2', '2026-11-01', '2026-11-03');
INSERT INTO charge_returns (attempt_id, return_code, category, amount_cents, reversed_paid,
                            source, as_of)
VALUES (3, 'R01', 'nsf', 7000, false, 'return_file', '2026-11-05');
INSERT INTO ach_entries (idempotency_key, gateway, trace_number, effective_on, amount_cents,
                         token, sec_code, entry_description, prenote)
VALUES ('collector-inst-2000-1', 'nacha', '091000010000001', '2026-11-03', 7000, 'tok', 'PPD',
        'LEASE PMT', false),
       ('prenote:nacha:ach:2:1', 'nacha', '091000010000002', '2026-10-20', 0, 'tok', 'PPD',
        'LEASE PMT', true);
INSERT INTO ach_prenotes (customer_id, instrument_key, payment_method_id, gateway,
                          idempotency_key, requested_on)
VALUES (2, 'ach:2', 20, 'nacha', 'prenote:nacha:ach:2:1', '2026-10-20');
INSERT INTO ach_notifications_of_change (customer_id, idempotency_key, original_trace,
                                         notice_trace, change_code, corrected_account_last4,
                                         received_on)
VALUES (2, 'collector-inst-2000-1', '091000010000001', '091000019999991', 'C01', '1234',
        '2026-11-05'),
       (NULL, NULL, '091000019999999', '091000019999992', 'C01', '9999', '2026-11-05');
"""


@pytest.fixture
async def at_0021(server_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A database with migrations 1 to 21 applied and the book above in it."""
    name = f"collector_m22_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(database_url_of(server_url, name))
    try:
        for migration in available_migrations():
            if migration.version > 21:
                break
            await conn.execute(migration.path.read_text(encoding="utf-8"))
        await conn.execute(_BOOK_AT_0021)
        yield conn
    finally:
        await conn.close()
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _0022() -> str:
    return next(m for m in available_migrations() if m.version == 22).path.read_text(
        encoding="utf-8"
    )


async def test_every_row_gets_its_customer_and_the_lookups_their_values(
    at_0021: asyncpg.Connection,
) -> None:
    conn = at_0021
    await conn.execute(_0022())

    for table, key, expected in (
        ("installments", "id", {1000: 1, 2000: 2}),
        ("payment_allocations", "payment_id", {500: 1}),
        ("charge_returns", "attempt_id", {3: 2}),
    ):
        rows = await conn.fetch(f"SELECT {key} AS k, customer_id FROM {table}")
        assert {r["k"]: r["customer_id"] for r in rows} == expected, table
    entries = await conn.fetch("SELECT idempotency_key, customer_id FROM ach_entries")
    assert {r["idempotency_key"]: r["customer_id"] for r in entries} == {
        "collector-inst-2000-1": 2,
        "prenote:nacha:ach:2:1": 2,
    }
    assert await conn.fetch("SELECT email, customer_id FROM customer_emails ORDER BY email") == [
        ("a@example.com", 1),
        ("b@example.com", 2),
    ]
    assert await conn.fetchval("SELECT count(*) FROM lease_agreement_refs") == 2
    keys = await conn.fetch("SELECT idempotency_key, customer_id FROM idempotency_keys")
    assert {r["idempotency_key"]: r["customer_id"] for r in keys} == {
        "collector-inst-1000-1": 1,
        "collector-pay-500": 1,
        "collector-inst-2000-1": 2,
        "prenote:nacha:ach:2:1": 2,
    }
    # The notice about the debit keeps its customer; the one about a trace nobody sent is set
    # aside for an operator, with what it said.
    assert await conn.fetchval("SELECT customer_id FROM ach_notifications_of_change") == 2
    moved = await conn.fetchrow(
        "SELECT subject_id, reason, detail FROM needs_attention WHERE reason = $1",
        "change_for_unknown_entry",
    )
    assert moved is not None
    assert (moved["subject_id"], json.loads(moved["detail"])["corrected_account_last4"]) == (
        "091000019999999",
        "9999",
    )


async def test_after_it_the_schema_refuses_what_the_distribution_key_forbids(
    at_0021: asyncpg.Connection,
) -> None:
    conn = at_0021
    await conn.execute(_0022())
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO customer_emails (email, customer_id) VALUES ('a@example.com', 2)"
        )
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO idempotency_keys (idempotency_key, customer_id)"
            " VALUES ('collector-inst-1000-1', 2)"
        )
    # Customer 2's installment cannot be named by an attempt of customer 1.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(
            "INSERT INTO charge_attempts (id, installment_id, payment_method_id, amount_cents,"
            " idempotency_key, source, status, gateway, customer_id, instrument_key, as_of,"
            " effective_on) VALUES (99, 2000, 10, 100, 'k-x', 'batch', 'pending',"
            " 'sandbox_card', 1, 'card:1', '2026-11-01', '2026-11-01')"
        )


async def test_an_entry_that_belongs_to_nobody_stops_the_migration_with_its_count(
    at_0021: asyncpg.Connection,
) -> None:
    conn = at_0021
    await conn.execute(
        "INSERT INTO ach_entries (idempotency_key, gateway, trace_number, effective_on,"
        " amount_cents, token, sec_code, entry_description) VALUES ('orphan', 'nacha',"
        " '091000010000009', '2026-11-03', 100, 'tok', 'PPD', 'LEASE PMT')"
    )
    with pytest.raises(asyncpg.RaiseError, match="1 entries match no attempt and no prenote"):
        async with conn.transaction():
            await conn.execute(_0022())
