"""Every SQL statement the engine runs keeps the distributed shape (rules R1-R3 of issue 12).

The statements: every named query (sql/queries), the sandbox's (sql/external/sandbox.sql), and
every statement of every LANGUAGE sql or plpgsql function of the migrated schema, read from
its catalog. tests/query_shape.py checks them, with PostgreSQL's own parser, against the
placement of collector/db/distribution.py. KNOWN lists what is still to fix: fixing a statement
fails this test until its line is removed, and a new violation fails it at once.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter

import asyncpg

from collector.db.pool import Executor
from collector.db.queries import load_queries, parse_queries, sql_dir
from tests.query_shape import (
    Schema,
    Violation,
    check_function,
    check_statement,
    collector_distribution,
    functions_touching_tables,
)

COLUMNS = """
SELECT c.relname::text AS table_name, array_agg(a.attname::text) AS columns
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'v')
GROUP BY c.relname
"""

# Names of which some overload is not IMMUTABLE (Citus refuses them in RETURNING); without
# argument types a name stands for all its overloads.
MUTABLE = "SELECT DISTINCT proname::text FROM pg_proc WHERE provolatile <> 'i'"
AGGREGATES = "SELECT DISTINCT proname::text FROM pg_proc WHERE prokind = 'a'"

FUNCTIONS = """
SELECT p.proname::text AS name, l.lanname::text AS language,
       CASE l.lanname WHEN 'sql' THEN p.prosrc ELSE pg_get_functiondef(p.oid) END AS body,
       coalesce(p.proargnames, '{}')::text[] AS arguments
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'public'
JOIN pg_language l ON l.oid = p.prolang
WHERE l.lanname IN ('sql', 'plpgsql') AND p.prokind = 'f'
ORDER BY p.proname
"""


async def find_violations(conn: Executor) -> list[Violation]:
    """What the rules find in every statement of the engine (sorted)."""
    schema = Schema(
        distributed=collector_distribution(),
        columns={r["table_name"]: frozenset(r["columns"]) for r in await conn.fetch(COLUMNS)},
        mutable_functions=frozenset(r[0] for r in await conn.fetch(MUTABLE)),
        aggregates=frozenset(r[0] for r in await conn.fetch(AGGREGATES)),
    )
    functions = [
        (fn["name"], fn["language"], fn["body"], fn["arguments"])
        for fn in await conn.fetch(FUNCTIONS)
    ]
    schema = dataclasses.replace(
        schema, table_functions=functions_touching_tables(functions, schema)
    )
    found: set[Violation] = set()
    queries = dict(load_queries())
    sandbox = (sql_dir() / "external" / "sandbox.sql").read_text(encoding="utf-8")
    queries.update(parse_queries("external.sandbox", sandbox))
    for name, sql in queries.items():
        found |= check_statement(name, sql, schema)
    for name, language, body, arguments in functions:
        found |= check_function(f"fn {name}", language, body, arguments, schema)
    return sorted(found)


# The statements still to fix (issue 12, part 2), as the rules report them: "<rule>
# <statement>: <what>". R1: the two table references (alias(table), after the CTEs and
# subqueries they are in) a join does not co-locate, one line per missing link; or a table
# "correlated to" / "outer-joined from" rows of no customer table. R2: a table a locking
# statement does not pin to its customers (or value). R3: report only, for whoever fixes the
# statement. A statement is "<file>.<name>" of sql/queries, "external.sandbox.<name>", or
# "fn <function>" of the migrated schema. After a merge that changes SQL, print the new list
# with `uv run python -m tests.test_query_shape <url of a migrated database> --known`.
KNOWN: list[str] = [
    "R0 fn outbox_method_disabled_v1: dynamic SQL (EXECUTE) is not checked",
    "R0 fn shard_beside_v1: dynamic SQL (EXECUTE) is not checked",
    "R1 attempts.claim_due: picked/i(installments) x picked/l(leases)",
    "R1 attempts.claim_due: picked/i(installments) x picked/pr(promises)",
    "R1 attempts.next_candidate: i(installments) x l(leases)",
    "R1 attempts.next_candidate: i(installments) x pr(promises)",
    "R1 attempts.record_outcomes: changed/a(charge_attempts) x methods_disabled/pm(payment_methods)",
    "R1 audit.card_cap: decline/a(charge_attempts) x shared/a(charge_attempts)",
    "R1 audit.journal_references: attempt_owner/a(charge_attempts) x suspect/m(money_movements)",
    "R1 audit.journal_references: installment_owner/i(installments) x suspect/m(money_movements)",
    "R1 audit.journal_references: method_owner/pm(payment_methods) x method_suspect/a(charge_attempts)",
    "R1 audit.journal_references: payment_owner/p(payments) x suspect/m(money_movements)",
    "R1 audit.prenote_before_live: pair/a(charge_attempts) x shared_prenote/p(ach_prenotes)",
    "R1 audit.prenote_before_live: shared/pm(payment_methods) x shared_prenote/p(ach_prenotes)",
    "R1 audit.reinitiation_cap: presented_after/p(charge_attempts) x unauthorized/r(charge_returns)",
    "R1 delinquency.bucket_events: changed/l(leases) x new/s(delinquency_snapshots)",
    "R1 delinquency.write_snapshot: aged/l(leases) x lease_due/i(installments)",
    "R1 eligibility.history: instruments/h/a(charge_attempts) correlated to k (no customer table)",
    "R1 eligibility.history: instruments/h/a(charge_attempts) x instruments/h/r(charge_returns)",
    "R1 eligibility.history: instruments/h/a(charge_attempts) x m/j(money_movements)",
    "R1 eligibility.history: instruments/h/a(charge_attempts) x pr/pi(installments)",
    "R1 eligibility.history: instruments/h/a(charge_attempts) x st/s/pi(installments)",
    "R1 eligibility.history: instruments/h/r(charge_returns) correlated to k (no customer table)",
    "R1 eligibility.history: m/b(charge_attempts) correlated to p (no customer table)",
    "R1 eligibility.history: m/b(charge_attempts) x m/j(money_movements)",
    "R1 eligibility.history: m/j(money_movements) correlated to p (no customer table)",
    "R1 eligibility.history: m/j(money_movements) x m/r(charge_returns)",
    "R1 eligibility.history: m/r(charge_returns) correlated to p (no customer table)",
    "R1 eligibility.history: pr/o(promises) correlated to p (no customer table)",
    "R1 eligibility.history: pr/o(promises) x pr/pi(installments)",
    "R1 eligibility.history: pr/pi(installments) correlated to p (no customer table)",
    "R1 eligibility.history: st/s/b(charge_attempts) correlated to p (no customer table)",
    "R1 eligibility.history: st/s/b(charge_attempts) x st/s/pi(installments)",
    "R1 eligibility.history: st/s/bi(installments) correlated to p (no customer table)",
    "R1 eligibility.history: st/s/bi(installments) x st/s/pi(installments)",
    "R1 eligibility.history: st/s/pi(installments) correlated to p (no customer table)",
    "R1 eligibility.history: st/s/pi(installments) x st/s/z(method_authorizations)",
    "R1 eligibility.history: st/s/z(method_authorizations) correlated to p (no customer table)",
    "R1 eligibility.history_routed: m/j(money_movements) x pr/pi(installments)",
    "R1 eligibility.history_routed: pr/pi(installments) x st/s/pi(installments)",
    "R1 eligibility.instruments: h/a(charge_attempts) x z/z(method_authorizations)",
    "R1 external.sandbox.sandbox_matches_ledger: kept/a(charge_attempts) x known/a(charge_attempts)",
    "R1 external.sandbox.sandbox_matches_ledger: kept/m(money_movements) outer-joined from b (no customer table)",
    "R1 external.sandbox.sandbox_matches_ledger: kept_again/m(money_movements) outer-joined from b (no customer table)",
    "R1 fn money_charge_off_v1: due/i(installments) x due/l(leases)",
    "R1 fn money_charge_off_v1: due/i(installments) x flipped/l(leases)",
    "R1 fn money_charge_off_v1: i(installments) x m(money_movements)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/a(charge_attempts)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/i(installments)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/j/m(money_movements)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/pm(payment_methods)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/r(charge_returns)",
    "R1 fn outbox_money_events_v1: money_events/j/m(money_movements) x money_events/j/mi(installments)",
    "R1 fn outbox_money_events_v1: money_events/outbox_events x paid_off/t/i(installments)",
    "R1 fn promise_money_v1: a(charge_attempts) x i(installments)",
    "R1 fn promise_money_v1: i(installments) x m(money_movements)",
    "R1 notices.notice_facts: d(debit_notices) correlated to p (no customer table)",
    "R1 prenotes.candidates: d/a(charge_attempts) x m/pm(payment_methods)",
    "R1 prenotes.candidates: m/pm(payment_methods) x p/r(ach_prenotes)",
    "R1 prenotes.close_if_closed: pm(payment_methods) x r/p(ach_prenotes)",
    "R1 prenotes.facts: debited/a(charge_attempts) x v/pm(payment_methods)",
    "R1 prenotes.facts: open/o(ach_prenotes) x v/pm(payment_methods)",
    "R1 prenotes.facts: returned/r(ach_prenotes) x v/pm(payment_methods)",
    "R1 seed.set_terms: l(leases) x s/i(installments)",
    "R2 attempts.claim_due: picked/i(installments) not pinned by customer_id",
    "R2 attempts.claim_due: picked/l(leases) not pinned by customer_id",
    "R2 attempts.claim_due: picked/pm(payment_methods) not pinned by customer_id",
    "R2 attempts.claim_due: picked/pr(promises) not pinned by customer_id",
    "R2 attempts.next_candidate: i(installments) not pinned by customer_id",
    "R2 attempts.next_candidate: l(leases) not pinned by customer_id",
    "R2 attempts.next_candidate: pm(payment_methods) not pinned by customer_id",
    "R2 attempts.next_candidate: pr(promises) not pinned by customer_id",
    "R2 payments.lock_lease: c(customers) not pinned by id",
    "R2 payments.lock_lease: l(leases) not pinned by customer_id",
    "R3 ach_entries.insert_entry: calls ach_next_trace_v1() inside a statement on tables",
    "R3 ach_entries.insert_prenote: calls ach_next_trace_v1() inside a statement on tables",
    "R3 attempts.claim_due: calls money_present_v1() inside a statement on tables",
    "R3 attempts.claim_due: nextval() in a statement that locks rows",
    "R3 attempts.claim_unresolved: extract() in RETURNING of a(charge_attempts)",
    "R3 attempts.record_outcomes: calls money_follow_v1() inside a statement on tables",
    "R3 attempts.record_outcomes: now() in CASE of a write to changed/a(charge_attempts)",
    "R3 fn money_assess_fees_v1: calls late_fees_due_v1() inside a statement on tables",
]


async def test_every_statement_keeps_the_distributed_shape(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        found = [str(v) for v in await find_violations(conn)]
    new = sorted(set(found) - set(KNOWN))
    fixed = sorted(set(KNOWN) - set(found))
    assert not new and not fixed, (
        "new violations (fix the statement; see the README, Past one database):\n  "
        + "\n  ".join(new)
        + "\nfixed (remove from KNOWN):\n  "
        + "\n  ".join(fixed)
    )
    assert len(found) == len(KNOWN), "KNOWN lists a violation twice"


def per_rule_and_file(violations: list[Violation]) -> Counter[tuple[str, str]]:
    """Counts by (rule, SQL file): the file of a named query, or "functions"."""
    return Counter(
        (v.rule, "functions" if v.statement.startswith("fn ") else v.statement.rsplit(".", 1)[0])
        for v in violations
    )


async def _print_counts(url: str, known: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        found = await find_violations(conn)
    finally:
        await conn.close()
    if known:
        sys.stdout.write("".join(f"    {json.dumps(str(v))},\n" for v in found))
        return
    for (rule, where), n in sorted(per_rule_and_file(found).items()):
        sys.stdout.write(f"{rule}\t{where}\t{n}\n")
    for rule, n in sorted(Counter(v.rule for v in found).items()):
        sys.stdout.write(f"{rule}\ttotal\t{n}\n")


if __name__ == "__main__":
    # Counts per rule and per SQL file against a migrated database (any PostgreSQL), or
    # with --known the lines of KNOWN:
    # uv run python -m tests.test_query_shape postgresql://postgres@127.0.0.1:5499/hlint
    import anyio

    anyio.run(_print_counts, sys.argv[1], "--known" in sys.argv[2:])
