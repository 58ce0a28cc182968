"""``collector audit``: each invariant holds on a clean book and is reported, with its rows,
once the book is corrupted directly in SQL (the journal is append-only, so corruption is an
extra journal row or a column written behind the journal's back)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from collector.db import money
from collector.db.attention import set_aside
from collector.db.audit import CHECKS, AuditReport, export_audit_gauges, run_audit
from collector.db.money import Ending, MovementKind, Presentment
from collector.domain import MethodKind
from collector.gateways.base import ChargeRequest, Gateway
from collector.metrics import REGISTRY
from collector.policy import CardRetryRules
from tests.factories import LeaseRef, make_lease

# These histories retry one method more often than the two-strike stop allows, on purpose:
# each test reads the check it is about with that stop off.
NO_STOP = CardRetryRules(two_strike_limit=0)

pytestmark = pytest.mark.ledger_left_dirty(
    "each test corrupts the ledger to show a check reports it"
)


DAY = date(2026, 11, 2)

Conn = asyncpg.pool.PoolConnectionProxy


# --- building a clean book through the journal's functions --------------------------------


async def new_attempt(
    conn: Conn,
    ref: LeaseRef,
    *,
    installment_id: int | None = None,
    payment_id: int | None = None,
    amount_cents: int = 5_000,
    source: str = "batch",
    as_of: date = DAY,
    key: str | None = None,
    claimed_until: datetime | None = None,
) -> int:
    """A pending attempt on the lease's method, presented through the journal."""
    attempt_id: int = await conn.fetchval(
        "INSERT INTO charge_attempts (installment_id, payment_id, payment_method_id,"
        " amount_cents, idempotency_key, source, status, gateway, customer_id, instrument_key,"
        " as_of, claimed_until)"
        " SELECT $1, $2, pm.id, $3, coalesce($4, 'test-' || gen_random_uuid()), $5, 'pending',"
        " pm.gateway, pm.customer_id, pm.instrument_key, $6, $7"
        " FROM payment_methods pm WHERE pm.id = $8 RETURNING id",
        installment_id,
        payment_id,
        amount_cents,
        key,
        source,
        as_of,
        claimed_until,
        ref.method_id,
    )
    if installment_id is not None:
        await money.present(
            conn,
            [
                Presentment(
                    attempt_id=attempt_id,
                    installment_id=installment_id,
                    amount_cents=amount_cents,
                    customer_id=ref.customer_id,
                    source=source,
                )
            ],
            as_of=as_of,
        )
    return attempt_id


async def answer(
    conn: Conn,
    attempt_id: int,
    status: str,
    kind: MovementKind | None,
    *,
    as_of: date = DAY,
    retry_on: date | None = None,
    plan: bool = False,
) -> None:
    """Store a gateway's answer on the attempt and apply what it does to the money."""
    customer_id = await conn.fetchval(
        "UPDATE charge_attempts SET status = $2, gateway_ref = CASE WHEN $2 IN"
        " ('succeeded', 'processing', 'returned') THEN 'ref_' || id::text ELSE gateway_ref END"
        " WHERE id = $1 RETURNING customer_id",
        attempt_id,
        status,
    )
    await money.follow(
        conn,
        [Ending(attempt_id=attempt_id, kind=kind, sets_plan=plan, retry_on=retry_on)],
        as_of=as_of,
        source="test",
        customer_of={attempt_id: customer_id},
    )


async def return_debit(
    conn: Conn, attempt_id: int, code: str, category: str, *, as_of: date, reversed_paid: bool
) -> None:
    await conn.execute(
        "INSERT INTO charge_returns (attempt_id, customer_id, return_code, category,"
        " amount_cents, reversed_paid, source, as_of)"
        " SELECT id, customer_id, $2, $3, amount_cents, $4, 'poll', $5 FROM charge_attempts"
        " WHERE id = $1",
        attempt_id,
        code,
        category,
        reversed_paid,
        as_of,
    )
    kind = MovementKind.REVERSED if reversed_paid else MovementKind.RETURNED
    await answer(conn, attempt_id, "returned", kind, as_of=as_of, plan=True)


async def manual_payment(
    conn: Conn, ref: LeaseRef, status: str, kind: MovementKind | None
) -> tuple[int, int]:
    """A portal payment covering every installment of the lease, answered with ``status``."""
    amounts = await conn.fetch(
        "SELECT id, amount_cents, status, next_attempt_on FROM installments"
        " WHERE lease_id = $1 ORDER BY due_on, id",
        ref.lease_id,
    )
    total = sum(r["amount_cents"] for r in amounts)
    payment_id: int = await conn.fetchval(
        "INSERT INTO payments (lease_id, customer_id, payment_method_id, amount_cents,"
        " request_key, request_hash, as_of) VALUES ($1, $2, $3, $4, gen_random_uuid(), 'h', $5)"
        " RETURNING id",
        ref.lease_id,
        ref.customer_id,
        ref.method_id,
        total,
        DAY,
    )
    await conn.executemany(
        "INSERT INTO payment_allocations (payment_id, installment_id, customer_id, amount_cents,"
        " prev_status, prev_next_attempt_on) VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (
                payment_id,
                r["id"],
                ref.customer_id,
                r["amount_cents"],
                r["status"],
                r["next_attempt_on"],
            )
            for r in amounts
        ],
    )
    attempt_id = await new_attempt(
        conn,
        ref,
        payment_id=payment_id,
        amount_cents=total,
        source="manual",
        key=f"collector-pay-{payment_id}",
    )
    await money.present(
        conn,
        [
            Presentment(
                attempt_id=attempt_id,
                installment_id=r["id"],
                amount_cents=r["amount_cents"],
                customer_id=ref.customer_id,
                source="manual",
                payment_id=payment_id,
            )
            for r in amounts
        ],
        as_of=DAY,
    )
    await conn.execute("UPDATE payments SET status = $2 WHERE id = $1", payment_id, status)
    await answer(conn, attempt_id, status, kind)
    return payment_id, attempt_id


@dataclass
class Book:
    paid: int  # installment paid by card
    paid_attempt: int
    declined: int  # installment declined soft, retry planned
    declined_attempt: int
    processing: int  # ACH debit in flight
    processing_attempt: int
    in_doubt: int
    in_doubt_attempt: int
    reinitiated: int  # ACH debit returned NSF after settling, presented again
    original_attempt: int
    reinitiation_attempt: int
    ach: LeaseRef
    paid_payment: int
    declined_payment: int
    declined_payment_attempt: int
    untouched: int


async def build_book(conn: Conn) -> Book:
    card = await make_lease(conn, due_dates=[DAY, DAY, DAY])
    paid_attempt = await new_attempt(conn, card, installment_id=card.installment_ids[0])
    await answer(conn, paid_attempt, "succeeded", MovementKind.SETTLED)

    declined_attempt = await new_attempt(conn, card, installment_id=card.installment_ids[1])
    await answer(
        conn,
        declined_attempt,
        "declined",
        MovementKind.RELEASED,
        plan=True,
        retry_on=DAY + timedelta(days=3),
    )
    in_doubt_attempt = await new_attempt(
        conn,
        card,
        installment_id=card.installment_ids[2],
        claimed_until=datetime(2026, 11, 2, 12, tzinfo=UTC),
    )
    await answer(conn, in_doubt_attempt, "in_doubt", None)

    ach = await make_lease(conn, token="sandbox_ach_ok", due_dates=[DAY, DAY])
    processing_attempt = await new_attempt(conn, ach, installment_id=ach.installment_ids[0])
    await answer(conn, processing_attempt, "processing", MovementKind.ACCEPTED)

    reinitiated = ach.installment_ids[1]
    original = await new_attempt(conn, ach, installment_id=reinitiated)
    await answer(conn, original, "processing", MovementKind.ACCEPTED)
    await answer(conn, original, "succeeded", MovementKind.SETTLED, as_of=DAY + timedelta(days=2))
    await return_debit(
        conn, original, "R01", "nsf", as_of=DAY + timedelta(days=4), reversed_paid=True
    )
    reinitiation = await new_attempt(
        conn, ach, installment_id=reinitiated, source="retry", as_of=DAY + timedelta(days=6)
    )
    await answer(
        conn, reinitiation, "processing", MovementKind.ACCEPTED, as_of=DAY + timedelta(days=6)
    )

    portal = await make_lease(conn, due_dates=[DAY - timedelta(days=30), DAY])
    paid_payment, _ = await manual_payment(conn, portal, "succeeded", MovementKind.SETTLED)
    declined_portal = await make_lease(conn, due_dates=[DAY - timedelta(days=30)])
    declined_payment, declined_payment_attempt = await manual_payment(
        conn, declined_portal, "declined", MovementKind.RELEASED
    )
    untouched = (await make_lease(conn, due_dates=[DAY + timedelta(days=30)])).installment_ids[0]
    return Book(
        paid=card.installment_ids[0],
        paid_attempt=paid_attempt,
        declined=card.installment_ids[1],
        declined_attempt=declined_attempt,
        processing=ach.installment_ids[0],
        processing_attempt=processing_attempt,
        in_doubt=card.installment_ids[2],
        in_doubt_attempt=in_doubt_attempt,
        reinitiated=reinitiated,
        original_attempt=original,
        reinitiation_attempt=reinitiation,
        ach=ach,
        paid_payment=paid_payment,
        declined_payment=declined_payment,
        declined_payment_attempt=declined_payment_attempt,
        untouched=untouched,
    )


@pytest.fixture
async def book(pool: asyncpg.Pool) -> Book:
    async with pool.acquire() as conn:
        return await build_book(conn)


def only(report: AuditReport, check: str) -> list[str]:
    """The check's messages, after asserting that no other check found anything."""
    others = {c: n for c, n in report.counts.items() if n and c != check}
    assert others == {}, [v.message for c in others for v in report.violations[c]]
    assert report.counts[check] == len(report.violations[check])
    return [v.message for v in report.violations[check]]


# --- clean ---------------------------------------------------------------------------------


async def test_a_freshly_migrated_database_audits_clean(pool: asyncpg.Pool) -> None:
    report = await run_audit(pool)
    assert report.clean and report.total == 0
    assert set(report.counts) == set(CHECKS)
    assert report.skipped == {"sandbox_matches_ledger": "no sandbox.charges table in this database"}


async def test_a_book_kept_through_the_journal_audits_clean(pool: asyncpg.Pool, book: Book) -> None:
    async with pool.acquire() as conn:
        statuses = dict(
            await conn.fetch(
                "SELECT id, status FROM installments WHERE id = ANY ($1)",
                [
                    book.paid,
                    book.declined,
                    book.processing,
                    book.in_doubt,
                    book.reinitiated,
                    book.untouched,
                ],
            )
        )
    assert statuses == {
        book.paid: "paid",
        book.declined: "overdue",
        book.processing: "pending_settlement",
        book.in_doubt: "processing",
        book.reinitiated: "pending_settlement",
        book.untouched: "scheduled",
    }
    report = await run_audit(pool)
    assert report.clean, {c: [v.message for v in vs] for c, vs in report.violations.items() if vs}


# --- one test per check ----------------------------------------------------------------------


async def test_an_installment_written_behind_the_journal_is_reported(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE installments SET status = 'overdue', paid_cents = 0,"
            " next_attempt_on = $2 WHERE id = $1",
            book.paid,
            DAY,
        )
    report = await run_audit(pool)
    [message] = only(report, "journal_matches_installments")
    [v] = report.violations["journal_matches_installments"]
    assert v.installment_ids == (book.paid,)
    assert v.facts["paid_cents"] == 0 and v.facts["journal_paid_cents"] == 5_000
    assert v.facts["journal_status"] == "paid"
    assert f"installment {book.paid}" in message


async def test_a_retry_date_written_behind_the_journal_is_reported(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE installments SET next_attempt_on = $2 WHERE id = $1", book.declined, DAY
        )
    report = await run_audit(pool)
    only(report, "journal_matches_installments")
    [v] = report.violations["journal_matches_installments"]
    assert v.installment_ids == (book.declined,)
    assert v.facts["journal_next_attempt_on"] == (DAY + timedelta(days=3)).isoformat()


async def test_a_payment_whose_status_lies_is_reported(pool: asyncpg.Pool, book: Book) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE payments SET status = 'succeeded' WHERE id = $1", book.declined_payment
        )
    report = await run_audit(pool)
    [message] = only(report, "journal_matches_payments")
    [v] = report.violations["journal_matches_payments"]
    assert v.payment_ids == (book.declined_payment,)
    assert v.attempt_ids == (book.declined_payment_attempt,)
    assert f"its attempt {book.declined_payment_attempt} is declined" in message
    assert "released 5000, settled 0" in message


async def test_a_payment_allocation_never_presented_is_reported(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE payment_allocations SET amount_cents = amount_cents + 1 WHERE payment_id = $1",
            book.paid_payment,
        )
    report = await run_audit(pool)
    [message] = only(report, "journal_matches_payments")
    assert "allocations sum to 10002" in message and "allocated 5001: presented 5000" in message


async def test_more_taken_than_the_amount_is_reported(pool: asyncpg.Pool, book: Book) -> None:
    async with pool.acquire() as conn:
        cid = await conn.fetchval(
            "SELECT customer_id FROM charge_attempts WHERE id = $1", book.paid_attempt
        )
        # A reservation that never went through the journal's functions (a second one under
        # the same attempt is refused by the journal's unique indexes: see below).
        await conn.execute(
            "INSERT INTO money_movements (customer_id, installment_id, kind,"
            " amount_cents, as_of, source) VALUES ($1, $2, 'presented', 100, $3, 'migration')",
            cid,
            book.paid,
            DAY,
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO money_movements (customer_id, installment_id, attempt_id, kind,"
                    " amount_cents, as_of, source) VALUES ($1, $2, $3, 'presented', 100, $4,"
                    " 'batch')",
                    cid,
                    book.paid,
                    book.paid_attempt,
                    DAY,
                )
    report = await run_audit(pool)
    [v] = report.violations["over_taken"]
    assert report.counts["over_taken"] == 1
    assert v.installment_ids == (book.paid,)
    assert v.facts == {
        "amount_cents": 5_000,
        "journal_paid_cents": 5_000,
        "journal_in_flight_cents": 100,
    }
    # The row breaks the installment's columns too (it names no attempt).
    assert report.counts["journal_matches_installments"] == 1


async def test_a_negative_in_flight_sum_is_reported(pool: asyncpg.Pool, book: Book) -> None:
    async with pool.acquire() as conn:
        cid = await conn.fetchval(
            "SELECT customer_id FROM charge_attempts WHERE id = $1", book.declined_attempt
        )
        await conn.execute(
            "INSERT INTO money_movements (customer_id, installment_id, kind,"
            " amount_cents, as_of, source) VALUES ($1, $2, 'released', 5000, $3, 'migration')",
            cid,
            book.declined,
            DAY,
        )
    report = await run_audit(pool)
    [v] = report.violations["over_taken"]
    assert v.installment_ids == (book.declined,)
    assert v.facts["journal_in_flight_cents"] == -5_000


async def test_money_taken_without_a_gateway_reference_is_reported(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE charge_attempts SET gateway_ref = NULL WHERE id = ANY ($1)",
            [book.paid_attempt, book.processing_attempt],
        )
    report = await run_audit(pool)
    only(report, "succeeded_without_reference")
    got = [v.attempt_ids for v in report.violations["succeeded_without_reference"]]
    assert got == [(book.paid_attempt,), (book.processing_attempt,)]


async def test_a_pending_attempt_past_its_deadline_is_reported_in_doubt_is_not(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[DAY, DAY])
        now = await conn.fetchval("SELECT now()")
        stale = await new_attempt(
            conn,
            lease,
            installment_id=lease.installment_ids[0],
            claimed_until=now - timedelta(hours=2),
        )
        await new_attempt(
            conn,
            lease,
            installment_id=lease.installment_ids[1],
            claimed_until=now - timedelta(minutes=30),
        )
    report = await run_audit(pool)
    only(report, "pending_past_deadline")
    [v] = report.violations["pending_past_deadline"]
    assert v.attempt_ids == (stale,)
    # The in-doubt attempt's deadline (2026-11-02) is long gone: in doubt may wait.
    assert book.in_doubt_attempt not in v.attempt_ids
    assert (await run_audit(pool, grace=timedelta(minutes=10))).counts["pending_past_deadline"] == 2
    assert (await run_audit(pool, now=now - timedelta(days=1))).counts["pending_past_deadline"] == 0


async def test_an_attempt_whose_status_disagrees_with_its_money_is_reported(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        # Declined and released, then marked succeeded by a writer that skipped the journal.
        await conn.execute(
            "UPDATE charge_attempts SET status = 'succeeded', gateway_ref = 'ref' WHERE id = $1",
            book.declined_attempt,
        )
    report = await run_audit(pool)
    [message] = only(report, "attempt_money_consistency")
    [v] = report.violations["attempt_money_consistency"]
    assert v.attempt_ids == (book.declined_attempt,)
    assert v.installment_ids == (book.declined,)
    assert "released 5000, settled 0" in message


async def test_an_attempt_whose_presented_rows_miss_its_amount_is_reported(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE charge_attempts SET amount_cents = 4000 WHERE id = $1",
            book.processing_attempt,
        )
    report = await run_audit(pool)
    only(report, "attempt_money_consistency")
    [v] = report.violations["attempt_money_consistency"]
    assert v.attempt_ids == (book.processing_attempt,)
    assert v.facts["presented_cents"] == 5_000 and v.facts["amount_cents"] == 4_000


async def _nsf_round(conn: Conn, ref: LeaseRef, installment_id: int, as_of: date) -> int:
    attempt = await new_attempt(
        conn, ref, installment_id=installment_id, source="retry", as_of=as_of
    )
    await answer(conn, attempt, "processing", MovementKind.ACCEPTED, as_of=as_of)
    await return_debit(
        conn, attempt, "R01", "nsf", as_of=as_of + timedelta(days=2), reversed_paid=False
    )
    return attempt


async def test_a_third_reinitiation_is_reported(pool: asyncpg.Pool, book: Book) -> None:
    async with pool.acquire() as conn:
        # The first reinitiation came back NSF too; a second is allowed, a third is not.
        await return_debit(
            conn,
            book.reinitiation_attempt,
            "R09",
            "nsf",
            as_of=DAY + timedelta(days=8),
            reversed_paid=False,
        )
        second = await _nsf_round(conn, book.ach, book.reinitiated, DAY + timedelta(days=10))
        assert (await run_audit(conn, card_rules=NO_STOP)).clean
        third = await new_attempt(
            conn,
            book.ach,
            installment_id=book.reinitiated,
            source="retry",
            as_of=DAY + timedelta(days=14),
        )
    report = await run_audit(pool, card_rules=NO_STOP)
    [message] = only(report, "reinitiation_cap")
    [v] = report.violations["reinitiation_cap"]
    assert v.installment_ids == (book.reinitiated,)
    assert v.attempt_ids == (book.original_attempt, book.reinitiation_attempt, second, third)
    assert "3 later presentment(s) (at most 2)" in message


async def test_a_reinitiation_past_180_days_is_reported(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        ach = await make_lease(conn, token="sandbox_ach_ok", due_dates=[DAY])
        original = await _nsf_round(conn, ach, ach.installment_ids[0], DAY)
        late = await new_attempt(
            conn,
            ach,
            installment_id=ach.installment_ids[0],
            source="retry",
            as_of=DAY + timedelta(days=181),
        )
    report = await run_audit(pool, card_rules=NO_STOP)
    only(report, "reinitiation_cap")
    [v] = report.violations["reinitiation_cap"]
    assert v.attempt_ids == (original, late)
    assert v.facts["past_window"] == 1


async def test_a_debit_after_an_unauthorized_return_is_reported(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        ach = await make_lease(conn, token="sandbox_ach_ok", due_dates=[DAY, DAY + timedelta(30)])
        first = await new_attempt(conn, ach, installment_id=ach.installment_ids[0])
        await answer(conn, first, "processing", MovementKind.ACCEPTED)
        await return_debit(
            conn, first, "R10", "unauthorized", as_of=DAY + timedelta(days=2), reversed_paid=False
        )
        assert (await run_audit(conn, card_rules=NO_STOP)).clean
        # A refused presentment sent nothing: it is what the eligibility check should do.
        refused = await new_attempt(
            conn, ach, installment_id=ach.installment_ids[1], as_of=DAY + timedelta(30)
        )
        await answer(conn, refused, "refused", MovementKind.RELEASED)
        assert (await run_audit(conn, card_rules=NO_STOP)).clean
        sent = await new_attempt(
            conn, ach, installment_id=ach.installment_ids[1], as_of=DAY + timedelta(31)
        )
    report = await run_audit(pool, card_rules=NO_STOP)
    [message] = only(report, "reinitiation_cap")
    [v] = report.violations["reinitiation_cap"]
    assert v.attempt_ids == (first, sent)
    assert v.installment_ids == (ach.installment_ids[1],)
    assert "R10" in message


async def _declines(conn: Conn, ref: LeaseRef, days: list[int]) -> list[int]:
    ids = []
    for offset in days:
        attempt = await new_attempt(
            conn,
            ref,
            installment_id=ref.installment_ids[0],
            source="retry",
            as_of=DAY + timedelta(days=offset),
        )
        await answer(conn, attempt, "declined", MovementKind.RELEASED)
        ids.append(attempt)
    return ids


async def test_declines_above_the_card_networks_cap_are_reported(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        visa = await make_lease(conn, token="sandbox_card_do_not_honor", due_dates=[DAY])
        mastercard = await make_lease(conn, token="sandbox_card_do_not_honor", due_dates=[DAY])
        spread = await make_lease(conn, token="sandbox_card_do_not_honor", due_dates=[DAY])
        await conn.execute(
            "UPDATE payment_methods SET brand = CASE id WHEN $2 THEN 'Mastercard' ELSE 'Visa'"
            " END WHERE id = ANY ($1)",
            [visa.method_id, mastercard.method_id, spread.method_id],
            mastercard.method_id,
        )
        # 15 in 30 days is Visa's cap; 16 over 32 days never puts more than 15 in a window.
        visa_ids = await _declines(conn, visa, list(range(15)))
        await _declines(conn, mastercard, list(range(20)))
        await _declines(conn, spread, [0, *range(17, 32)])
        assert (await run_audit(conn, card_rules=NO_STOP)).clean
        visa_ids += await _declines(conn, visa, [29])
    report = await run_audit(pool, card_rules=NO_STOP)
    [message] = only(report, "card_cap")
    [v] = report.violations["card_cap"]
    assert v.attempt_ids == tuple(visa_ids)
    assert v.facts["declines"] == 16 and v.facts["cap"] == 15
    assert f"method {visa.method_id}, Visa" in message
    # A stricter configured cap applies to the others as well.
    stricter = await run_audit(
        pool, card_rules=CardRetryRules(mastercard_max_declines_30d=19, two_strike_limit=0)
    )
    assert stricter.counts["card_cap"] == 2


async def test_open_rows_set_aside_are_listed_resolved_ones_are_not(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        await set_aside(
            conn,
            subject="attempt",
            subject_id=book.paid_attempt,
            reason="settlement_contradicts_journal",
            detail={"token": "never shown"},
        )
        await set_aside(conn, subject="installment", subject_id=book.declined, reason="old")
        await conn.execute("UPDATE needs_attention SET resolved_at = now() WHERE reason = 'old'")
    report = await run_audit(pool)
    [message] = only(report, "open_needs_attention")
    assert f"attempt {book.paid_attempt} set aside" in message
    assert "settlement_contradicts_journal" in message and "never shown" not in message
    assert "never shown" not in json.dumps(report.violations["open_needs_attention"][0].facts)


async def test_each_check_lists_at_most_the_limit_and_counts_them_all(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        for _ in range(5):
            await set_aside(conn, subject="installment", subject_id=1, reason=f"r{_}")
    report = await run_audit(pool, limit=2)
    assert report.counts["open_needs_attention"] == 5 and report.total == 5
    assert len(report.violations["open_needs_attention"]) == 2


def _gauge(check: str) -> float | None:
    return REGISTRY.get_sample_value("collector_audit_violations", {"check": check})


async def test_the_gauges_show_every_check_zero_when_clean(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for n in range(3):
            await set_aside(conn, subject="installment", subject_id=n, reason="r")
    export_audit_gauges(await run_audit(pool))
    assert _gauge("open_needs_attention") == 3
    async with pool.acquire() as conn:
        await conn.execute("UPDATE needs_attention SET resolved_at = now()")
    export_audit_gauges(await run_audit(pool))
    assert {check: _gauge(check) for check in CHECKS} == dict.fromkeys(CHECKS, 0)


# --- the sandbox's own records -----------------------------------------------------------


async def _charge(gateway: Gateway, conn: Conn, attempt_id: int, token: str) -> None:
    row = await conn.fetchrow(
        "SELECT idempotency_key, customer_id, amount_cents, installment_id, as_of"
        " FROM charge_attempts"
        " WHERE id = $1",
        attempt_id,
    )
    assert row is not None
    await gateway.charge(
        ChargeRequest(
            customer_id=row["customer_id"],
            idempotency_key=row["idempotency_key"],
            amount_cents=row["amount_cents"],
            token=token,
            method_kind=MethodKind.ACH if token.startswith("sandbox_ach") else MethodKind.CARD,
            metadata={"installment_id": str(row["installment_id"])},
            effective_on=row["as_of"],
        )
    )


@dataclass
class Charged:
    card: LeaseRef
    paid_attempt: int
    ach_attempt: int
    pending_attempt: int


@pytest.fixture
async def charged(pool: asyncpg.Pool, gateways: Mapping[str, Gateway]) -> Charged:
    """A book whose every charge went through the sandbox gateways."""
    async with pool.acquire() as conn:
        card = await make_lease(conn, due_dates=[DAY, DAY])
        paid = await new_attempt(conn, card, installment_id=card.installment_ids[0])
        await _charge(gateways["sandbox_card"], conn, paid, "sandbox_card_ok")
        await conn.execute(
            "UPDATE charge_attempts SET status = 'succeeded', gateway_ref = 'sbx' WHERE id = $1",
            paid,
        )
        await money.follow(
            conn,
            [Ending(attempt_id=paid, kind=MovementKind.SETTLED)],
            as_of=DAY,
            source="t",
            customer_of={paid: card.customer_id},
        )
        # Taken, answer lost: the ledger is in doubt until a lookup; not a mismatch.
        pending = await new_attempt(conn, card, installment_id=card.installment_ids[1])
        await _charge(gateways["sandbox_card"], conn, pending, "sandbox_card_timeout_taken")
        await answer(conn, pending, "in_doubt", None)
        ach = await make_lease(conn, token="sandbox_ach_ok", due_dates=[DAY])
        debit = await new_attempt(conn, ach, installment_id=ach.installment_ids[0])
        await _charge(gateways["sandbox_ach"], conn, debit, "sandbox_ach_ok")
        await answer(conn, debit, "processing", MovementKind.ACCEPTED)
    return Charged(card=card, paid_attempt=paid, ach_attempt=debit, pending_attempt=pending)


async def test_a_book_charged_through_the_sandbox_audits_clean(
    pool: asyncpg.Pool, charged: Charged
) -> None:
    report = await run_audit(pool)
    assert report.skipped == {}
    assert report.clean, [v.message for vs in report.violations.values() for v in vs]


async def test_a_charge_the_ledger_does_not_know_is_reported(
    pool: asyncpg.Pool, charged: Charged, gateways: Mapping[str, Gateway]
) -> None:
    await gateways["sandbox_card"].charge(
        ChargeRequest(
            customer_id=1,
            idempotency_key="stray-key",
            amount_cents=5_000,
            token="sandbox_card_ok",
            method_kind=MethodKind.CARD,
            metadata={"installment_id": str(charged.card.installment_ids[0])},
        )
    )
    report = await run_audit(pool)
    messages = only(report, "sandbox_matches_ledger")
    assert messages == [
        "key stray-key: the sandbox accepted it; the ledger has no attempt under this key",
        f"installment {charged.card.installment_ids[0]} of 5000 cents:"
        " the sandbox kept 10000 cents for it",
    ]
    kept = report.violations["sandbox_matches_ledger"][1]
    assert kept.attempt_ids == (charged.paid_attempt,) and kept.keys == ("stray-key",)


async def test_money_the_ledger_counts_taken_but_the_sandbox_never_took_is_reported(
    pool: asyncpg.Pool, charged: Charged
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE sandbox.charges SET status = 'declined' WHERE idempotency_key ="
            " (SELECT idempotency_key FROM charge_attempts WHERE id = $1)",
            charged.ach_attempt,
        )
    report = await run_audit(pool)
    [message] = only(report, "sandbox_matches_ledger")
    assert (
        f"(attempt {charged.ach_attempt}): the ledger says processing; the sandbox declined"
        in message
    )


async def test_an_amount_the_sandbox_took_differently_is_reported(
    pool: asyncpg.Pool, charged: Charged
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE sandbox.charges SET amount_cents = 4999 WHERE idempotency_key ="
            " (SELECT idempotency_key FROM charge_attempts WHERE id = $1)",
            charged.paid_attempt,
        )
    report = await run_audit(pool)
    [message] = only(report, "sandbox_matches_ledger")
    assert "the sandbox took 4999 cents; the ledger asked for 5000" in message


async def test_a_taken_charge_the_ledger_declined_is_reported(
    pool: asyncpg.Pool, charged: Charged
) -> None:
    async with pool.acquire() as conn:
        # Resolving the in-doubt attempt as not taken, though the sandbox took it.
        await answer(conn, charged.pending_attempt, "failed", MovementKind.RELEASED)
    report = await run_audit(pool)
    [message] = only(report, "sandbox_matches_ledger")
    assert (
        f"(attempt {charged.pending_attempt}): the sandbox accepted it; the ledger says failed"
        in message
    )


async def test_a_journal_row_naming_what_is_not_there_is_reported(
    pool: asyncpg.Pool, book: Book
) -> None:
    async with pool.acquire() as conn:
        cid = await conn.fetchval(
            "SELECT customer_id FROM charge_attempts WHERE id = $1", book.paid_attempt
        )
        # A plan line for an installment that does not exist, under another customer.
        await conn.execute(
            "INSERT INTO money_movements (customer_id, installment_id, kind, amount_cents, as_of,"
            " source, sets_plan) VALUES ($1, 999999, 'replanned', 0, $2, 'test', true)",
            cid,
            DAY,
        )
        # A journal row that names an attempt of another customer.
        await conn.execute(
            "INSERT INTO money_movements (customer_id, installment_id, attempt_id, kind,"
            " amount_cents, as_of, source, sets_plan)"
            " SELECT customer_id + 1000, installment_id, id, 'replanned', 0, $2, 'test', true"
            " FROM charge_attempts WHERE id = $1",
            book.declined_attempt,
            DAY,
        )
        # An attempt can no longer be moved to another customer than its installment's and
        # method's: the co-located foreign keys refuse it (sql/0022); on Citus the
        # distribution column of a row cannot change at all.
        with pytest.raises((asyncpg.ForeignKeyViolationError, asyncpg.FeatureNotSupportedError)):
            await conn.execute(
                "UPDATE charge_attempts SET customer_id = customer_id + 1000 WHERE id = $1",
                book.declined_attempt,
            )
    report = await run_audit(pool)
    got = [v.message for v in report.violations["journal_references"]]
    assert report.counts["journal_references"] >= 2
    assert any("no such installment" in m for m in got)
    assert any("the attempt is customer" in m for m in got)


async def test_an_automatic_presentment_during_a_promise_and_a_wrong_outcome_are_reported(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        ref = await make_lease(conn, due_dates=[DAY])
        # The customer promised on DAY - 1 to pay by DAY + 5: the batch's attempt on DAY is
        # made during the pause.
        promise_id = await conn.fetchval(
            "INSERT INTO promises (customer_id, lease_id, amount_cents, made_on, promised_on,"
            " created_at) VALUES ($1, $2, 5000, $3, $4, now() - interval '1 hour') RETURNING id",
            ref.customer_id,
            ref.lease_id,
            DAY - timedelta(days=1),
            DAY + timedelta(days=5),
        )
        attempt_id = await new_attempt(conn, ref, installment_id=ref.installment_ids[0])
        await answer(conn, attempt_id, "declined", MovementKind.RELEASED)
        # And a promise marked kept with nothing paid.
        other = await make_lease(conn, due_dates=[DAY])
        kept_id = await conn.fetchval(
            "INSERT INTO promises (customer_id, lease_id, amount_cents, made_on, promised_on,"
            " status, paid_cents, resolved_on) VALUES ($1, $2, 5000, $3, $4, 'kept', 0, $4)"
            " RETURNING id",
            other.customer_id,
            other.lease_id,
            DAY - timedelta(days=1),
            DAY + timedelta(days=5),
        )
    report = await run_audit(pool, card_rules=NO_STOP)
    assert only(report, "promises") == [
        f"promise {promise_id} of lease {ref.lease_id} of customer {ref.customer_id}:"
        " 1 automatic presentment(s) during its pause",
        f"promise {kept_id} of lease {other.lease_id} of customer {other.customer_id}:"
        " kept with less than its amount counted",
    ]
    assert report.violations["promises"][0].attempt_ids == (attempt_id,)
