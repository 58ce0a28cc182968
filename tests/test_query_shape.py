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
    "R1 attempts.claim_due: picked/i(installments) x picked/l(leases)",
    "R1 attempts.claim_due: picked/i(installments) x picked/pr(promises)",
    "R1 attempts.claim_unresolved: a(charge_attempts) x picked/a(charge_attempts)",
    "R1 attempts.claim_unresolved: details/a(charge_attempts) x picked/a(charge_attempts)",
    "R1 attempts.claim_unresolved: details/i(installments) x picked/a(charge_attempts)",
    "R1 attempts.claim_unresolved: details/j/m(money_movements) x picked/a(charge_attempts)",
    "R1 attempts.claim_unresolved: details/pay(payments) x picked/a(charge_attempts)",
    "R1 attempts.claim_unresolved: details/pm(payment_methods) x picked/a(charge_attempts)",
    "R1 attempts.next_candidate: i(installments) x l(leases)",
    "R1 attempts.next_candidate: i(installments) x pr(promises)",
    "R1 attempts.record_outcomes: changed/a(charge_attempts) x methods_disabled/pm(payment_methods)",
    "R1 audit.attempt_money_consistency: judged/a(charge_attempts) x line/m(money_movements)",
    "R1 audit.attempt_money_consistency: line/a(charge_attempts) x line/m(money_movements)",
    "R1 audit.attempt_money_consistency: line/m(money_movements) x violations/a(charge_attempts)",
    "R1 audit.card_cap: decline/a(charge_attempts) x decline/pm(payment_methods)",
    "R1 audit.charge_offs: bad/a(charge_attempts) x bad/ai(installments)",
    "R1 audit.charge_offs: bad/a(charge_attempts) x co/m(money_movements)",
    "R1 audit.charge_offs: bad/l(leases) x co/m(money_movements)",
    "R1 audit.charge_offs: co/i(installments) x co/m(money_movements)",
    "R1 audit.journal_matches_installments: derived/i(installments) x sums/m(money_movements)",
    "R1 audit.journal_matches_installments: derived/i(installments) x violations/l(leases)",
    "R1 audit.journal_matches_payments: attempt/a(charge_attempts) x violations/p(payments)",
    "R1 audit.journal_matches_payments: journal/m(money_movements) x line/pa(payment_allocations)",
    "R1 audit.journal_matches_payments: judged/i(installments) x line/pa(payment_allocations)",
    "R1 audit.journal_matches_payments: judged/p(payments) x line/pa(payment_allocations)",
    "R1 audit.journal_matches_payments: line/pa(payment_allocations) x violations/p(payments)",
    "R1 audit.journal_references: bad/a(charge_attempts) x bad/m(money_movements)",
    "R1 audit.journal_references: bad/i(installments) x bad/m(money_movements)",
    "R1 audit.journal_references: bad/l(leases) x bad/m(money_movements)",
    "R1 audit.journal_references: bad/m(money_movements) x bad/p(payments)",
    "R1 audit.journal_references: rows_bad/a(charge_attempts) x rows_bad/pm(payment_methods)",
    "R1 audit.late_fees: checked/ci(installments) x checked/co(money_movements)",
    "R1 audit.late_fees: checked/ci(installments) x fees/m(money_movements)",
    "R1 audit.late_fees: checked/i(installments) x fees/m(money_movements)",
    "R1 audit.late_fees: checked/l(leases) x fees/m(money_movements)",
    "R1 audit.over_taken: sums/m(money_movements) x violations/i(installments)",
    "R1 audit.over_taken: sums/m(money_movements) x violations/l(leases)",
    "R1 audit.payoffs: bad/i(installments) x bad/l(leases)",
    "R1 audit.payoffs: bad/l(leases) x bad/t/i(installments)",
    "R1 audit.payoffs: payoff/i(installments) x payoff/p(payments)",
    "R1 audit.payoffs: payoff/l(leases) x payoff/p(payments)",
    "R1 audit.payoffs: payoff/p(payments) x per_payment/m(money_movements)",
    "R1 audit.prenote_before_live: a(charge_attempts) x p(ach_prenotes)",
    "R1 audit.prenote_before_live: e(ach_entries) x p(ach_prenotes)",
    "R1 audit.promises: paused/a(charge_attempts) x paused/ai(installments)",
    "R1 audit.promises: paused/a(charge_attempts) x paused/pr(promises)",
    "R1 audit.promises: paused/o(promises) x paused/pr(promises)",
    "R1 audit.reinitiation_cap: after_unauthorized/b(charge_attempts) x after_unauthorized/r(charge_returns)",
    "R1 audit.reinitiation_cap: after_unauthorized/m(money_movements) x after_unauthorized/r(charge_returns)",
    "R1 audit.reinitiation_cap: after_unauthorized/p(charge_attempts) x after_unauthorized/r(charge_returns)",
    "R1 audit.reinitiation_cap: original/r(charge_returns) x presentment/m(money_movements)",
    "R1 audit.reinitiation_cap: presentment/a(charge_attempts) x presentment/m(money_movements)",
    "R1 audit.two_strike_stop: auto/a(charge_attempts) x auto/i(installments)",
    "R1 audit.two_strike_stop: auto/a(charge_attempts) x auto/r(charge_returns)",
    "R1 audit.two_strike_stop: auto/a(charge_attempts) x bad/run/d/z(method_authorizations)",
    "R1 delinquency.bucket_events: changed/l(leases) x new/s(delinquency_snapshots)",
    "R1 delinquency.recoveries: c/co(money_movements) x c/i(installments)",
    "R1 delinquency.recoveries: c/co(money_movements) x m(money_movements)",
    "R1 delinquency.roll_rates: f(delinquency_snapshots) x i(installments)",
    "R1 delinquency.roll_rates: f(delinquency_snapshots) x l(leases)",
    "R1 delinquency.roll_rates: i(installments) x m(money_movements)",
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
    "R1 external.sandbox.sandbox_matches_ledger: kept/m(money_movements) x ledger/a(charge_attempts)",
    "R1 external.sandbox.sandbox_matches_ledger: ledger/a(charge_attempts) x over_kept/i(installments)",
    "R1 external.sandbox.sandbox_matches_ledger: ledger/a(charge_attempts) x over_kept/l(leases)",
    "R1 fees.lease_fees: f(money_movements) x i(installments)",
    "R1 fees.lease_fees: i(installments) x w(money_movements)",
    "R1 fn debit_history_v1: a/charge_attempts x same/own(money_movements)",
    "R1 fn debit_history_v1: nsf/r(charge_returns) x same/own(money_movements)",
    "R1 fn debit_history_v1: same/b(charge_attempts) x same/own(money_movements)",
    "R1 fn debit_history_v1: same/m(money_movements) x same/own(money_movements)",
    "R1 fn installments_derive_v1: i(installments) x s/j/m(money_movements)",
    "R1 fn installments_derive_v1: n/plan(money_movements) x s/j/m(money_movements)",
    "R1 fn installments_derive_v1: s/j/m(money_movements) correlated to ids (no customer table)",
    "R1 fn late_fees_due_v1: due/i(installments) x due/l(leases)",
    "R1 fn money_apply_v1: d/m(money_movements) x i(installments)",
    "R1 fn money_apply_v1: d/m(money_movements) x n/plan(money_movements)",
    "R1 fn money_cancel_v1: added/i(installments) x added/l(leases)",
    "R1 fn money_charge_off_v1: due/i(installments) x due/l(leases)",
    "R1 fn money_charge_off_v1: due/i(installments) x flipped/l(leases)",
    "R1 fn money_charge_off_v1: i(installments) x m(money_movements)",
    "R1 fn money_follow_v1: added/acc/acc(money_movements) x added/p/m(money_movements)",
    "R1 fn money_follow_v1: added/p/m(money_movements) correlated to f (no customer table)",
    "R1 fn money_replan_v1: added/i(installments) x added/l(leases)",
    "R1 fn money_waive_fee_v1: i(installments) x m(money_movements)",
    "R1 fn outbox_method_disabled_v1: a(charge_attempts) x m/c(money_movements)",
    "R1 fn outbox_method_disabled_v1: a(charge_attempts) x m/e(money_movements)",
    "R1 fn outbox_method_disabled_v1: a(charge_attempts) x m/p(money_movements)",
    "R1 fn outbox_method_disabled_v1: a(charge_attempts) x m/r(money_movements)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/a(charge_attempts)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/i(installments)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/j/m(money_movements)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/pm(payment_methods)",
    "R1 fn outbox_money_events_v1: answer_rows/m(money_movements) x money_events/r(charge_returns)",
    "R1 fn outbox_money_events_v1: money_events/j/m(money_movements) x money_events/j/mi(installments)",
    "R1 fn outbox_money_events_v1: money_events/outbox_events x paid_off/t/i(installments)",
    "R1 fn promise_money_v1: a(charge_attempts) x i(installments)",
    "R1 fn promise_money_v1: i(installments) x m(money_movements)",
    "R1 notices.expiring_cards: next_collection/i(installments) x next_collection/l(leases)",
    "R1 notices.notice_facts: a(charge_attempts) x i(installments)",
    "R1 notices.notice_facts: a(charge_attempts) x i2(installments)",
    "R1 notices.notice_facts: d(debit_notices) correlated to p (no customer table)",
    "R1 notices.notice_facts: d(debit_notices) x i(installments)",
    "R1 notices.notice_facts: i(installments) x l(leases)",
    "R1 notices.upcoming_debits: a(charge_attempts) x i(installments)",
    "R1 notices.upcoming_debits: a(charge_attempts) x i2(installments)",
    "R1 notices.upcoming_debits: i(installments) x l(leases)",
    "R1 outbox.backlog: d(event_deliveries) correlated to e (no customer table)",
    "R1 outbox.backlog: o(outbox_events) correlated to e (no customer table)",
    "R1 payments.allocations: i(installments) x pa(payment_allocations)",
    "R1 payments.claim_view: earlier/a(charge_attempts) x earlier/p(payments)",
    "R1 payments.claim_view: earlier/i(installments) x earlier/pa(payment_allocations)",
    "R1 payments.claim_view: earlier/p(payments) x earlier/pa(payment_allocations)",
    "R1 payments.claim_view: earlier/p(payments) x method/payment_methods",
    "R1 payments.claim_view: l(leases) x p(payments)",
    "R1 payments.insert_payment: allocation/i(installments) x payment/payments",
    "R1 payments.insert_payment: attempt/charge_attempts x payment/payments",
    "R1 payments.insert_payment: attempt/pm(payment_methods) x payment/payments",
    "R1 payments.record_outcome: changed/a(charge_attempts) x method_disabled/pm(payment_methods)",
    "R1 payments.record_outcome: changed/a(charge_attempts) x payment/p(payments)",
    "R1 portal.customer_next_due: i(installments) x l(leases)",
    "R1 portal.lease_detail: i(installments) x l(leases)",
    "R1 portal.lease_detail: pm(payment_methods) outer-joined from b (no customer table)",
    "R1 portal.lease_schedule: fee(money_movements) x i(installments)",
    "R1 portal.lease_schedule: i(installments) x plan/m(money_movements)",
    "R1 portal.lease_schedule: i(installments) x pr/o(promises)",
    "R1 portal.waiting_for_authorization: i(installments) x l(leases)",
    "R1 portal.waiting_for_authorization: i(installments) x plan/m(money_movements)",
    "R1 portal.waiting_for_method: i(installments) x l(leases)",
    "R1 prenotes.candidates: a(charge_attempts) x pm(payment_methods)",
    "R1 prenotes.candidates: i(installments) x l(leases)",
    "R1 prenotes.candidates: p(ach_prenotes) x pm(payment_methods)",
    "R1 prenotes.candidates: pm(payment_methods) x r(ach_prenotes)",
    "R1 prenotes.close_if_closed: pm(payment_methods) x r/p(ach_prenotes)",
    "R1 prenotes.close_if_closed: r/m(payment_methods) x r/p(ach_prenotes)",
    "R1 prenotes.facts: a(charge_attempts) correlated to p (no customer table)",
    "R1 prenotes.facts: a(charge_attempts) x pm(payment_methods)",
    "R1 prenotes.facts: o/e(ach_entries) correlated to p (no customer table)",
    "R1 prenotes.facts: o/e(ach_entries) x o/o(ach_prenotes)",
    "R1 prenotes.facts: o/o(ach_prenotes) correlated to p (no customer table)",
    "R1 prenotes.facts: o/o(ach_prenotes) x pm(payment_methods)",
    "R1 prenotes.facts: pm(payment_methods) outer-joined from p (no customer table)",
    "R1 prenotes.facts: pm(payment_methods) x r(ach_prenotes)",
    "R1 prenotes.facts: r(ach_prenotes) correlated to p (no customer table)",
    "R1 preview.charge_offs: i(installments) x l(leases)",
    "R1 preview.charge_offs: l(leases) x o(installments)",
    "R1 preview.due_by_gateway: i(installments) x l(leases)",
    "R1 preview.due_by_gateway: i(installments) x o(installments)",
    "R1 preview.due_by_gateway: i(installments) x pr(promises)",
    "R1 preview.due_rows: i(installments) x l(leases)",
    "R1 preview.due_rows: i(installments) x o(installments)",
    "R1 preview.due_rows: i(installments) x pr(promises)",
    "R1 preview.skipped: s/i(installments) x s/l(leases)",
    "R1 preview.skipped: s/i(installments) x s/o(installments)",
    "R1 preview.skipped: s/i(installments) x s/pr/o(promises)",
    "R1 promises.due_collections: l(leases) x pr(promises)",
    "R1 promises.link_payment: p(payments) x pr(promises)",
    "R1 promises.resolve: counted/l(leases) x counted/pr(promises)",
    "R1 seed.set_terms: l(leases) x s/i(installments)",
    "R1 settlement.attempt_by_key: a(charge_attempts) x i(installments)",
    "R1 settlement.decline_processing: declined/a(charge_attempts) x method_disabled/pm(payment_methods)",
    "R1 settlement.decline_processing: declined/a(charge_attempts) x payment/p(payments)",
    "R1 settlement.processing_attempts: a/a(charge_attempts) x a/i(installments)",
    "R1 settlement.record_return: method_disabled/pm(payment_methods) x returned/a(charge_attempts)",
    "R1 settlement.record_return: payment_back/p(payments) x returned/a(charge_attempts)",
    "R1 settlement.record_return: recorded/charge_returns x returned/a(charge_attempts)",
    "R1 settlement.return_rates: a(charge_attempts) x pm(payment_methods)",
    "R1 settlement.settle_attempts: payments_done/p(payments) x settled/a(charge_attempts)",
    "R1 stats.ach_unfiled: a(charge_attempts) x e(ach_entries)",
    "R1 stats.business_day_ach: a(charge_attempts) x m(money_movements)",
    "R1 stats.business_day_ach: m(money_movements) x pm(payment_methods)",
    "R1 stats.business_day_attempts: a(charge_attempts) x pm(payment_methods)",
    "R1 stats.business_day_charged_off: i(installments) x m(money_movements)",
    "R1 webhooks.attempt_named: a(charge_attempts) x pm(payment_methods)",
    "R2 attempts.claim_due: picked/i(installments) not pinned by customer_id",
    "R2 attempts.claim_due: picked/l(leases) not pinned by customer_id",
    "R2 attempts.claim_due: picked/pm(payment_methods) not pinned by customer_id",
    "R2 attempts.claim_due: picked/pr(promises) not pinned by customer_id",
    "R2 attempts.claim_unresolved: a(charge_attempts) not pinned by customer_id",
    "R2 attempts.claim_unresolved: details/a(charge_attempts) not pinned by customer_id",
    "R2 attempts.claim_unresolved: details/i(installments) not pinned by customer_id",
    "R2 attempts.claim_unresolved: details/j/m(money_movements) not pinned by customer_id",
    "R2 attempts.claim_unresolved: details/pay(payments) not pinned by customer_id",
    "R2 attempts.claim_unresolved: details/pm(payment_methods) not pinned by customer_id",
    "R2 attempts.claim_unresolved: picked/a(charge_attempts) not pinned by customer_id",
    "R2 attempts.next_candidate: i(installments) not pinned by customer_id",
    "R2 attempts.next_candidate: l(leases) not pinned by customer_id",
    "R2 attempts.next_candidate: pm(payment_methods) not pinned by customer_id",
    "R2 attempts.next_candidate: pr(promises) not pinned by customer_id",
    "R2 fn money_waive_fee_v1: installments not pinned by customer_id",
    "R2 outbox.claim: d(event_deliveries) not pinned by customer_id",
    "R2 outbox.claim: due/d(event_deliveries) not pinned by customer_id",
    "R2 outbox.claim: heads/d(event_deliveries) not pinned by customer_id",
    "R2 outbox.claim: o(outbox_events) not pinned by customer_id",
    "R2 payments.claim_view: earlier/a(charge_attempts) not pinned by customer_id",
    "R2 payments.claim_view: earlier/i(installments) not pinned by customer_id",
    "R2 payments.claim_view: earlier/p(payments) not pinned by customer_id",
    "R2 payments.claim_view: earlier/pa(payment_allocations) not pinned by customer_id",
    "R2 payments.claim_view: p(payments) not pinned by customer_id",
    "R2 payments.claim_view: unpaid/installments not pinned by customer_id",
    "R2 payments.lock_lease: c(customers) not pinned by id",
    "R2 payments.lock_lease: l(leases) not pinned by customer_id",
    "R2 payments.lock_open_installments: open/installments not pinned by customer_id",
    "R2 promises.lock_lease: l(leases) not pinned by customer_id",
    "R2 settlement.record_return: attempt/a(charge_attempts) not pinned by customer_id",
    "R2 settlement.record_return: method_disabled/pm(payment_methods) not pinned by customer_id",
    "R2 settlement.record_return: payment_back/p(payments) not pinned by customer_id",
    "R2 settlement.record_return: returned/a(charge_attempts) not pinned by customer_id",
    "R3 ach_entries.insert_entry: calls ach_next_trace_v1() inside a statement on tables",
    "R3 ach_entries.insert_prenote: calls ach_next_trace_v1() inside a statement on tables",
    "R3 attempts.claim_due: calls money_present_v1() inside a statement on tables",
    "R3 attempts.claim_due: nextval() in a statement that locks rows",
    "R3 attempts.claim_unresolved: extract() in RETURNING of a(charge_attempts)",
    "R3 attempts.claim_unresolved: now() in RETURNING of a(charge_attempts)",
    "R3 attempts.record_outcomes: calls money_follow_v1() inside a statement on tables",
    "R3 attempts.record_outcomes: now() in CASE of a write to changed/a(charge_attempts)",
    "R3 eligibility.mark: now() in CASE of a write to a(charge_attempts)",
    "R3 fees.due: calls late_fees_due_v1(), LANGUAGE sql on tables",
    "R3 fn money_assess_fees_v1: calls late_fees_due_v1(), LANGUAGE sql on tables",
    "R3 fn money_assess_fees_v1: calls money_apply_v1(), LANGUAGE sql on tables",
    "R3 fn money_cancel_v1: calls money_apply_v1(), LANGUAGE sql on tables",
    "R3 fn money_charge_off_v1: calls money_apply_v1(), LANGUAGE sql on tables",
    "R3 fn money_follow_v1: calls money_apply_v1(), LANGUAGE sql on tables",
    "R3 fn money_payoff_follow_v1: calls money_apply_v1(), LANGUAGE sql on tables",
    "R3 fn money_present_v1: calls money_apply_v1(), LANGUAGE sql on tables",
    "R3 fn money_replan_v1: calls money_apply_v1(), LANGUAGE sql on tables",
    "R3 fn money_waive_fee_v1: calls money_apply_v1(), LANGUAGE sql on tables",
    "R3 payments.insert_payment: calls money_present_v1() inside a statement on tables",
    "R3 payments.payoff_quote: calls lease_payoff_v1(), LANGUAGE sql on tables",
    "R3 payments.record_outcome: calls money_follow_v1() inside a statement on tables",
    "R3 payments.record_outcome: now() in CASE of a write to changed/a(charge_attempts)",
    "R3 portal.customer_leases: calls lease_balance_v3(), LANGUAGE sql on tables",
    "R3 portal.lease_detail: calls lease_balance_v3(), LANGUAGE sql on tables",
    "R3 promises.due_collections: calls lease_balance_v3(), LANGUAGE sql on tables",
    "R3 promises.due_collections: calls promise_money_v1(), LANGUAGE sql on tables",
    "R3 promises.list: calls promise_money_v1(), LANGUAGE sql on tables",
    "R3 promises.lock_lease: calls lease_balance_v3(), LANGUAGE sql on tables",
    "R3 promises.resolve: calls promise_money_v1(), LANGUAGE sql on tables",
    "R3 settlement.attempt_by_key: calls debit_history_v1(), LANGUAGE sql on tables",
    "R3 settlement.processing_attempts: calls debit_history_v1(), LANGUAGE sql on tables",
    "R3 settlement.settle_attempts: calls money_follow_v1() inside a statement on tables",
]


async def test_every_statement_keeps_the_distributed_shape(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        found = [str(v) for v in await find_violations(conn)]
    new = sorted(set(found) - set(KNOWN))
    fixed = sorted(set(KNOWN) - set(found))
    assert not new and not fixed, (
        "new violations (fix the statement; see /work/notes/CITUS_FINDINGS.md):\n  "
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
