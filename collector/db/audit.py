"""The ledger's invariants, checked over the whole book (DESIGN.md, "The money journal").

``run_audit`` runs one named query per check (``sql/queries/audit.sql``; the sandbox's in
``sql/external/sandbox.sql``), all in one read-only snapshot, so a pass committing meanwhile
cannot make two checks disagree. Each check lists at most ``limit`` violations and counts
them all. ``export_audit_gauges`` shows the counts on ``collector_audit_violations``, every
check included, so a check that went clean reads 0 rather than its last bad figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, LiteralString

import asyncpg

from collector.db.pool import Executor, describe
from collector.db.queries import QUERIES, parse_queries, sql_dir
from collector.exceptions import DatabaseError
from collector.fees.rules import FeeTable, load_rules
from collector.metrics import AUDIT_VIOLATIONS
from collector.policy import (
    DEFAULT_CARD_RULES,
    MAX_REINITIATIONS,
    PRENOTE_CLOSING_RETURNS,
    REINITIATION_WINDOW_DAYS,
    CardRetryRules,
)

CHECKS: tuple[str, ...] = (
    "journal_matches_installments",
    "journal_matches_payments",
    "journal_references",
    "over_taken",
    "succeeded_without_reference",
    "pending_past_deadline",
    "attempt_money_consistency",
    "reinitiation_cap",
    "card_cap",
    "two_strike_stop",
    "charge_offs",
    "payoffs",
    "promises",
    "late_fees",
    "sandbox_matches_ledger",
    "prenote_before_live",
    "open_needs_attention",
)
"""Every check, in the order the audit runs and prints them."""

DEFAULT_LIMIT = 100
DEFAULT_GRACE = timedelta(hours=1)
SANDBOX_GATEWAYS: tuple[str, ...] = ("sandbox_card", "sandbox_ach")

_NO_SANDBOX = "no sandbox.charges table in this database"


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One broken invariant: what is wrong, and the rows involved (ids and amounts only)."""

    check: str
    message: str
    installment_ids: tuple[int, ...] = ()
    attempt_ids: tuple[int, ...] = ()
    payment_ids: tuple[int, ...] = ()
    customer_ids: tuple[int, ...] = ()
    attention_ids: tuple[int, ...] = ()
    keys: tuple[str, ...] = ()  # idempotency keys (the sandbox check's unknown charges)
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditReport:
    """Per check: the violations listed (at most the limit), how many there are in all, and
    why a check did not run (``skipped``, counted as clean)."""

    violations: Mapping[str, tuple[Violation, ...]]
    counts: Mapping[str, int]
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every violation found, listed or not."""
        return sum(self.counts.values())

    @property
    def clean(self) -> bool:
        """True when no check found anything."""
        return self.total == 0


@cache
def _external() -> dict[str, LiteralString]:
    path = sql_dir() / "external" / "sandbox.sql"
    return parse_queries("sandbox", path.read_text(encoding="utf-8"))


def _violation(check: str, row: asyncpg.Record) -> Violation:
    facts = row["facts"]
    if isinstance(facts, str):  # a connection without the pool's jsonb codec
        facts = json.loads(facts)
    return Violation(
        check=check,
        message=row["message"],
        installment_ids=tuple(row["installment_ids"]),
        attempt_ids=tuple(row["attempt_ids"]),
        payment_ids=tuple(row["payment_ids"]),
        customer_ids=tuple(row["customer_ids"]),
        attention_ids=tuple(row["attention_ids"]),
        keys=tuple(row["keys"]),
        facts=facts,
    )


async def _run_checks(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    *,
    limit: int,
    now: datetime | None,
    grace: timedelta,
    card_rules: CardRetryRules,
    sandbox_gateways: Sequence[str],
    fee_table: FeeTable,
) -> AuditReport:
    args: dict[str, tuple[Any, ...]] = {
        "late_fees": fee_table.sql_args(),
        "pending_past_deadline": (now, grace),
        "reinitiation_cap": (MAX_REINITIATIONS, REINITIATION_WINDOW_DAYS),
        "card_cap": (
            card_rules.visa_max_declines_30d,
            card_rules.mastercard_max_declines_30d,
            card_rules.other_max_declines_30d,
        ),
        "two_strike_stop": (card_rules.two_strike_limit,),
        "sandbox_matches_ledger": (list(sandbox_gateways),),
        "prenote_before_live": (sorted(PRENOTE_CLOSING_RETURNS),),
    }
    violations: dict[str, tuple[Violation, ...]] = {}
    counts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for check in CHECKS:
        if check == "sandbox_matches_ledger":
            if not await conn.fetchval(QUERIES["audit.sandbox_present"]):
                violations[check], counts[check], skipped[check] = (), 0, _NO_SANDBOX
                continue
            sql = _external()["sandbox.sandbox_matches_ledger"]
        else:
            sql = QUERIES[f"audit.{check}"]
        rows = await conn.fetch(sql, limit, *args.get(check, ()))
        violations[check] = tuple(_violation(check, r) for r in rows)
        counts[check] = rows[0]["total"] if rows else 0
    return AuditReport(violations=violations, counts=counts, skipped=skipped)


async def run_audit(
    db: Executor,
    *,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
    grace: timedelta = DEFAULT_GRACE,
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
    sandbox_gateways: Sequence[str] = SANDBOX_GATEWAYS,
    fee_table: FeeTable | None = None,
) -> AuditReport:
    """Check every invariant of the ledger in one read-only snapshot; ``now`` None reads
    the database's clock; ``fee_table`` None: the shipped late-fee rules. Raises
    DatabaseError when the checks cannot run."""
    table = fee_table or load_rules()
    if limit < 1:
        raise ValueError("limit must be at least 1")
    try:
        if isinstance(db, asyncpg.Pool):
            async with db.acquire() as conn:
                return await _in_snapshot(
                    conn, limit, now, grace, card_rules, sandbox_gateways, table
                )
        return await _in_snapshot(db, limit, now, grace, card_rules, sandbox_gateways, table)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise DatabaseError(f"the audit could not run: {describe(exc)}") from exc


async def _in_snapshot(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    limit: int,
    now: datetime | None,
    grace: timedelta,
    card_rules: CardRetryRules,
    sandbox_gateways: Sequence[str],
    fee_table: FeeTable,
) -> AuditReport:
    async def checks() -> AuditReport:
        return await _run_checks(
            conn,
            limit=limit,
            now=now,
            grace=grace,
            card_rules=card_rules,
            sandbox_gateways=sandbox_gateways,
            fee_table=fee_table,
        )

    if conn.is_in_transaction():
        # The caller's transaction is the snapshot (a test, or a job auditing what it wrote).
        return await checks()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await checks()


def export_audit_gauges(report: AuditReport) -> None:
    """Set ``collector_audit_violations`` for every check: its count, 0 when clean."""
    for check in CHECKS:
        AUDIT_VIOLATIONS.labels(check=check).set(report.counts.get(check, 0))
