"""The history the eligibility check reads: one query per batch of presentments
(``sql/queries/eligibility.sql``), rows into the values of :mod:`collector.eligibility`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from collector.db.pool import Executor, fetch_planned
from collector.db.queries import QUERIES
from collector.eligibility import InstrumentHistory, MoneyLine, NsfHistory, nsf_history
from collector.policy import DEAD_ACCOUNT_RETURNS, NEVER_RETRY_ADVICE


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """One presentment to judge: an attempt's money for one installment, to an instrument."""

    attempt_id: int
    installment_id: int
    instrument_key: str
    method_kind: str


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
    )
    found: dict[tuple[int, int], History] = {}
    for row in rows:
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
        found[(attempt_id, row["installment_id"])] = History(
            instrument=InstrumentHistory(
                declines_30d=row["declines_30d"],
                unresolved_before=sum(1 for a in row["unresolved_ids"] if a < attempt_id),
                never_retry=row["never_retry"],
                unauthorized_return=row["unauthorized_return"],
                dead_account_return=row["dead_account_return"],
                strikes=row["strikes"],
            ),
            nsf=nsf_history(lines),
            paused_until=row["promise_resume_on"],
        )
    return found


async def mark_verdicts(db: Executor, verdicts: Sequence[tuple[int, bool, str | None]]) -> None:
    """Store (attempt id, reinitiation, refusal reason or None) on the attempts."""
    if not verdicts:
        return
    await db.execute(
        QUERIES["eligibility.mark"],
        [v[0] for v in verdicts],
        [v[1] for v in verdicts],
        [v[2] for v in verdicts],
    )
