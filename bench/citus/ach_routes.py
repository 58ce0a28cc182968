"""Run every statement of settlement, returns, NACHA files, prenotes, notices and outbox
delivery against a database and say how it went: on Citus, each statement's answer and
whether Citus planned a subquery that reads a whole table (a "WHERE true" subplan). Every
change is rolled back; deferred triggers are fired before the rollback (SET CONSTRAINTS).

    COLLECTOR_DATABASE_URL=postgresql://postgres@127.0.0.1:9700/hach \\
        uv run python bench/citus/ach_routes.py

Needs a migrated, seeded database after one pass (ACH debits in flight). Not part of the
engine: a stand-in until the lead's tests/citus harness runs these paths.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from collector.db import ach_entries, notices, outbox, prenotes, settlement
from collector.db.pool import open_pool
from collector.db.queries import QUERIES

AS_OF = date(2026, 12, 4)


class Check:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.notes: list[str] = []
        self.failed = 0
        conn.add_log_listener(lambda _c, message: self.notes.append(message.message))

    async def __call__(self, name: str, step: Callable[[], Awaitable[object]]) -> Any:
        self.notes.clear()
        await self.conn.execute("SAVEPOINT step")
        try:
            result = await step()
        except asyncpg.PostgresError as exc:
            await self.conn.execute("ROLLBACK TO SAVEPOINT step")
            self.failed += 1
            print(f"ERROR {name}: {type(exc).__name__}: {exc}")
            return None
        pulls = [n for n in self.notes if "WHERE true" in n]
        routed = sum("single distribution column value" in n for n in self.notes)
        shown = len(result) if isinstance(result, list | dict) else result
        print(f"ok    {name}: {shown!s:.60}  (router plans: {routed}, table pulls: {len(pulls)})")
        for note in pulls:
            self.failed += 1
            print(f"      PULL {note[:300]}")
        return result


async def main() -> int:
    url = os.environ["COLLECTOR_DATABASE_URL"]
    async with (
        open_pool(url, size=2, statement_timeout_s=60, lock_timeout_s=10) as pool,
        pool.acquire() as conn,
    ):
        check = Check(conn)
        await conn.execute("SET client_min_messages = debug2")
        # Each area in a transaction of its own, as the engine runs them (an export's
        # transaction starts with its lock), each rolled back.
        customers = [r[0] for r in await conn.fetch("SELECT id FROM customers ORDER BY id LIMIT 6")]
        tag = datetime.now(UTC).strftime("%H%M%S%f")
        # The NACHA gateway accepts debits in transactions of their own (the charge's); these
        # are kept until the end, then deleted.
        async with conn.transaction():
            await _entries(conn, check, customers, tag)
        for area in (_settlement, _nacha, _prenotes_and_notices, _outbox):
            tr = conn.transaction()
            await tr.start()
            try:
                await area(conn, check)
            finally:
                await tr.rollback()
        await conn.execute(
            "DELETE FROM ach_entries WHERE customer_id = ANY ($1::bigint[])"
            " AND idempotency_key LIKE 'ach-routes-%'",
            customers,
        )
        await conn.execute("RESET client_min_messages")
        print(f"{check.failed} problem(s)")
        return 1 if check.failed else 0


async def _debits(conn: Any) -> list[settlement.DebitInFlight]:
    return await settlement.debits_in_flight(
        conn, after_id=0, gateways=["sandbox_ach", "nacha"], limit=1000
    )


async def _settlement(conn: Any, check: Check) -> None:
    debits = await check(
        "settlement.processing_attempts",
        lambda: settlement.debits_in_flight(
            conn, after_id=0, gateways=["sandbox_ach", "nacha"], limit=1000
        ),
    )
    if not debits:
        print("no ACH debits in flight: run one pass first")
        return
    first, second = debits[0], debits[-1]
    await check(
        "settlement.attempt_by_key", lambda: settlement.attempt_by_key(conn, first.idempotency_key)
    )
    await check("settlement.return_rates", lambda: settlement.return_rates(conn))
    await check(
        "settlement.settle_attempts (money_follow_v1 inside)",
        lambda: settlement.settle_attempts(conn, debits[1:-1], as_of=AS_OF, source="poll"),
    )
    await check(
        "settlement.record_return (disables the method)",
        lambda: settlement.record_return(
            conn,
            attempt_id=first.attempt_id,
            customer_id=first.customer_id,
            code="R02",
            category="administrative",
            source="poll",
            disable_method=True,
            as_of=AS_OF,
        ),
    )
    await check(
        "settlement.decline_processing",
        lambda: settlement.decline_processing(
            conn,
            attempt_id=second.attempt_id,
            customer_id=second.customer_id,
            code="R03",
            message="no account",
            disable_method=True,
        ),
    )
    # The method.disabled event of a method disabled above is written by the deferred
    # trigger at commit, on the method's shard: not seen here, where everything is rolled
    # back (SET CONSTRAINTS does not reach the workers). See the report for the committed
    # proof.


async def _entries(conn: Any, check: Check, customers: list[int], tag: str) -> None:
    for c in customers:
        await check(
            f"ach_entries.insert_entry (customer {c})",
            lambda c=c: ach_entries.insert_entry(
                conn,
                ach_entries.NewEntry(
                    idempotency_key=f"ach-routes-{tag}-{c}",
                    customer_id=c,
                    gateway="nacha",
                    odfi_id="02100002",
                    effective_on=AS_OF,
                    amount_cents=1000 + c,
                    token=f"tok{c}",
                    individual_id=str(c),
                    individual_name=f"N {c}",
                    sec_code="PPD",
                    entry_description="LEASE PMT",
                ),
            ),
        )


async def _nacha(conn: Any, check: Check) -> None:
    await check("ach_entries.lock_exports", lambda: ach_entries.lock_exports(conn))
    first = await conn.fetchval(
        "SELECT idempotency_key FROM ach_entries WHERE idempotency_key LIKE 'ach-routes-%'"
        " ORDER BY created_at DESC LIMIT 1"
    )
    tag = first.removeprefix("ach-routes-").rsplit("-", 1)[0]
    await check(
        "ach_entries.entry_by_key",
        lambda: ach_entries.entry_by_key(conn, first, gateway="nacha"),
    )
    await check(
        "ach_entries.dates_to_file",
        lambda: ach_entries.dates_to_file(conn, gateway="nacha", up_to=AS_OF, earliest=AS_OF),
    )
    candidates = await check(
        "ach_entries.file_candidates",
        lambda: ach_entries.file_candidates(
            conn,
            gateway="nacha",
            sec_code="PPD",
            entry_description="LEASE PMT",
            effective_on=AS_OF,
            up_to=AS_OF,
            earliest=AS_OF,
        ),
    )
    mine = [e for e in candidates or [] if e.idempotency_key.startswith(f"ach-routes-{tag}")]
    used = await check(
        "ach_entries.modifiers_used", lambda: ach_entries.modifiers_used(conn, created_on=AS_OF)
    )
    modifier = next(m for m in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if m not in (used or set()))
    now = datetime.now(UTC)
    file = await check(
        "ach_entries.claim_entries (per shard group)",
        lambda: ach_entries.claim_file(
            conn,
            file_name=f"ach-routes-{tag}.ach",
            gateway="nacha",
            sec_code="PPD",
            entry_description="LEASE PMT",
            effective_on=AS_OF,
            exported_on=AS_OF,
            file_id_modifier=modifier,
            created_at=now,
            created_local=now.replace(tzinfo=None),
            entries=mine,
        ),
    )
    if file is None:
        return
    print(f"      file holds {file.entry_count} entries, {file.total_cents} cents")
    await check(
        "ach_entries.release_entries (per shard group)",
        lambda: ach_entries.release_entries(conn, file, mine[:2]),
    )
    entries = await check(
        "ach_entries.file_entries", lambda: ach_entries.file_entries(conn, file.file_name)
    )
    await check(
        "ach_entries.unwritten_files", lambda: ach_entries.unwritten_files(conn, gateway="nacha")
    )
    await check(
        "ach_entries.mark_written",
        lambda: ach_entries.mark_written(conn, file.file_name, written_at=now),
    )
    traced = await check(
        "ach_entries.keys_by_trace",
        lambda: ach_entries.entries_by_trace(
            conn, [(e.trace_number, e.amount_cents) for e in entries or []]
        ),
    )
    if entries and traced:
        e = entries[0]
        await check(
            "ach_entries.insert_change",
            lambda: ach_entries.insert_change(
                conn,
                ach_entries.NewChange(
                    idempotency_key=e.idempotency_key,
                    customer_id=traced[e.trace_number][1],
                    original_trace=e.trace_number,
                    notice_trace="091000010000001",
                    change_code="C01",
                    corrected_routing=None,
                    corrected_account_last4="1234",
                    corrected_transaction_code=None,
                    corrected_text="",
                    received_on=AS_OF,
                ),
            ),
        )


async def _prenotes_and_notices(conn: Any, check: Check) -> None:
    debit = (await _debits(conn))[0]
    method = await conn.fetchrow(
        "SELECT id, customer_id, instrument_key, gateway FROM payment_methods"
        " WHERE customer_id = $1 AND id = $2",
        debit.customer_id,
        debit.payment_method_id,
    )
    await check(
        "prenotes.candidates", lambda: prenotes.candidates(conn, gateway="nacha", customer_id=None)
    )
    await check(
        "prenotes.facts",
        lambda: prenotes.facts(
            conn,
            [(debit.attempt_id, method["instrument_key"], method["id"], method["gateway"])],
        ),
    )
    await check(
        "prenotes.method_of_entry", lambda: prenotes.method_of_entry(conn, debit.idempotency_key)
    )
    await check(
        "prenotes.closed_accounts",
        lambda: prenotes.closed_accounts(conn, [method["instrument_key"]]),
    )
    await check("prenotes.close_if_closed", lambda: prenotes.close_if_closed(conn, method["id"]))
    await check(
        "prenotes.set_last4",
        lambda: prenotes.set_last4(conn, method["id"], "9999", customer_id=method["customer_id"]),
    )
    await check(
        "notices.notice_facts",
        lambda: notices.notice_facts(conn, [(debit.attempt_id, debit.installment_id or 0, 100)]),
    )
    upcoming = await check(
        "notices.upcoming_debits",
        lambda: _first_batch(notices.upcoming_debits(conn, as_of=AS_OF, days=10, batch_size=500)),
    )
    await check(
        "notices.expiring_cards",
        lambda: conn.execute(QUERIES["notices.expiring_cards"], AS_OF, 30),
    )
    if upcoming:
        await check(
            "notices.write_debit_notices",
            lambda: notices.write_debit_notices(
                conn, [(u, False) for u in upcoming[:20]], as_of=AS_OF
            ),
        )


async def _first_batch(batches: AsyncIterator[list[Any]]) -> list[Any]:
    """The first batch a streamed read yields (its first statement is the one checked)."""
    async for batch in batches:
        return batch
    return []


async def _outbox(conn: Any, check: Check) -> None:
    await check("outbox.dispatch_lock", lambda: conn.execute(QUERIES["outbox.dispatch_lock"]))
    await check(
        "outbox.dispatch",
        lambda: conn.fetch(QUERIES["outbox.dispatch"], ["http://a", "http://b"], 500),
    )
    claimed = await check(
        "outbox.claim (locks per shard group)",
        lambda: outbox.claim(conn, "http://a", limit=50, claim_s=30.0),
    )
    again = await check(
        "outbox.claim again (the first are held)",
        lambda: outbox.claim(conn, "http://a", limit=50, claim_s=30.0),
    )
    if claimed and again:
        overlap = {d.event_id for d in claimed} & {d.event_id for d in again}
        print(f"      claimed twice: {len(overlap)}")
    await check("outbox.backlog", lambda: outbox.backlog(conn, ["http://a", "http://b"]))
    await check("outbox.list", lambda: outbox.list_events(conn, status=None, type=None, limit=5))


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
