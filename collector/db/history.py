"""The history the eligibility check reads (``sql/queries/eligibility.sql``): the
instruments' history across customers in one query per batch of presentments, then each shard
group's presentments (one group on plain PostgreSQL); rows into the values of
:mod:`collector.eligibility`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from collector.db.pool import Executor, fetch_planned
from collector.db.queries import QUERIES
from collector.db.routing import one_node, shard_groups
from collector.eligibility import InstrumentHistory, MoneyLine, NsfHistory, nsf_history
from collector.policy import DEAD_ACCOUNT_RETURNS, NEVER_RETRY_ADVICE


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """One presentment to judge: an attempt's money for one installment, to an instrument."""

    attempt_id: int
    installment_id: int
    instrument_key: str
    method_kind: str
    customer_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    instrument: InstrumentHistory
    nsf: NsfHistory | None
    # The lease's promise to pay pauses automatic presentments before this date.
    paused_until: date | None = None


async def histories(
    db: Executor, subjects: Sequence[Subject], *, as_of: date, strike_limit: int = 0
) -> dict[tuple[int, int], History]:
    """The history of each (attempt, installment) presentment, read as of business date
    ``as_of``; its strikes counted up to ``strike_limit`` (0: not counted)."""
    if not subjects:
        return {}
    if await one_node(db):
        rows = await fetch_planned(
            db,
            QUERIES["eligibility.history"],
            [s.attempt_id for s in subjects],
            [s.installment_id for s in subjects],
            [s.instrument_key for s in subjects],
            [s.method_kind for s in subjects],
            as_of,
            sorted(NEVER_RETRY_ADVICE),
            sorted(DEAD_ACCOUNT_RETURNS),
            strike_limit,
            rows=len(subjects),
        )
        return {key: _history(row, row) for key, row in _keyed(rows).items()}
    keys = sorted({s.instrument_key for s in subjects})
    instruments = {
        row["instrument_key"]: row
        for row in await fetch_planned(
            db,
            QUERIES["eligibility.instruments"],
            keys,
            as_of,
            sorted(NEVER_RETRY_ADVICE),
            sorted(DEAD_ACCOUNT_RETURNS),
            rows=len(keys),
        )
    }
    rows = []
    for group in await shard_groups(db, (s.customer_id for s in subjects)):
        members = set(group)
        part = [s for s in subjects if s.customer_id in members]
        rows += await fetch_planned(
            db,
            QUERIES["eligibility.history_routed"],
            [s.attempt_id for s in part],
            [s.installment_id for s in part],
            [s.instrument_key for s in part],
            [s.method_kind for s in part],
            [instruments[s.instrument_key]["failures"] for s in part],
            [instruments[s.instrument_key]["authorized_at"] for s in part],
            group,
            strike_limit,
            rows=len(part),
        )
    keyed = {(s.attempt_id, s.installment_id): s.instrument_key for s in subjects}
    return {key: _history(row, instruments[keyed[key]]) for key, row in _keyed(rows).items()}


def _keyed(rows: Sequence[asyncpg.Record]) -> dict[tuple[int, int], asyncpg.Record]:
    return {(row["attempt_id"], row["installment_id"]): row for row in rows}


def _history(row: asyncpg.Record, seen: asyncpg.Record) -> History:
    """A presentment's history from its row and its instrument's (the same row on one node,
    where one query reads both)."""
    attempt_id = row["attempt_id"]
    lines = []
    if row["line_ids"]:
        lines = [
            MoneyLine(
                id=line_id,
                attempt_id=attempt,
                returned=returned,
                nsf=nsf,
                amount_cents=cents,
                as_of=on,
                sent=sent,
            )
            for line_id, attempt, returned, nsf, cents, on, sent in zip(
                row["line_ids"],
                row["line_attempts"],
                row["line_returned"],
                row["line_nsf"],
                row["line_cents"],
                row["line_on"],
                row["line_sent"],
                strict=True,
            )
        ]
    return History(
        instrument=InstrumentHistory(
            declines_30d=seen["declines_30d"],
            unresolved_before=sum(1 for a in seen["unresolved_ids"] if a < attempt_id),
            never_retry=seen["never_retry"],
            unauthorized_return=seen["unauthorized_return"],
            dead_account_return=seen["dead_account_return"],
            strikes=row["strikes"],
        ),
        nsf=nsf_history(lines),
        paused_until=row["promise_resume_on"],
    )


async def mark_verdicts(
    db: Executor, verdicts: Sequence[tuple[int, int, bool, str | None]]
) -> None:
    """Store (attempt id, customer, reinitiation, refusal reason or None) on the attempts,
    one statement per shard group of the customers (one on plain PostgreSQL)."""
    if not verdicts:
        return
    for group in await shard_groups(db, (v[1] for v in verdicts)):
        members = set(group)
        part = [v for v in verdicts if v[1] in members]
        await db.execute(
            QUERIES["eligibility.mark"],
            [v[0] for v in part],
            [v[2] for v in part],
            [v[3] for v in part],
            group,
        )
