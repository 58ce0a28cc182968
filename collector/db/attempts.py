"""The charge-attempt ledger: claiming due work, recording outcomes, taking over the
attempts of dead passes. One method per named query; rows become domain values here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import asyncpg

from collector.db.money import Ending
from collector.db.outbox import write_money_events
from collector.db.pool import Executor, fetch_planned, transaction
from collector.db.queries import QUERIES
from collector.domain import AttemptSource, AttemptStatus, ClaimedCharge, MethodKind
from collector.policy import Decision

# The first argument of every pass's liveness lock, pg_advisory_lock(LIVENESS_NAMESPACE, run_id).
LIVENESS_NAMESPACE = 0x636F6C6C  # "coll"

_FIRST_CURSOR = (date.min, 0)


@dataclass(slots=True)
class ClaimCursor:
    """A claimer's keyset position: claimed rows leave dead tuples at the head of the index,
    so each claim starts after the last row this claimer saw instead of re-scanning them."""

    after_on: date = _FIRST_CURSOR[0]
    after_id: int = _FIRST_CURSOR[1]
    # Installments this pass set aside (their claim was refused by the database): passed
    # over for the rest of the pass, even after a reset.
    skipped: set[int] = field(default_factory=set)

    def reset(self) -> None:
        self.after_on, self.after_id = _FIRST_CURSOR

    @property
    def at_start(self) -> bool:
        return (self.after_on, self.after_id) == _FIRST_CURSOR


def _claimed(row: asyncpg.Record) -> ClaimedCharge:
    return ClaimedCharge(
        attempt_id=row["attempt_id"],
        installment_id=row["installment_id"],
        lease_id=row["lease_id"],
        customer_id=row["customer_id"],
        payment_method_id=row["payment_method_id"],
        gateway=row["gateway"],
        method_kind=MethodKind(row["kind"]),
        token=row["token"],
        amount_cents=row["amount_cents"],
        idempotency_key=row["idempotency_key"],
        attempt_no=row["attempt_no"],
        due_on=row["due_on"],
        source=AttemptSource(row["source"]),
        payment_id=row.get("payment_id"),
        brand=row["brand"],
        as_of=row.get("as_of"),
        reinitiation=bool(row.get("reinitiation")),
        effective_on=row.get("effective_on"),
        instrument_key=row.get("instrument_key") or "",
        allocations=tuple(
            zip(row.get("allocation_ids") or (), row.get("allocation_cents") or (), strict=True)
        )
        if row.get("payment_id") is not None
        else (),
    )


async def claim_due(
    db: Executor,
    *,
    as_of: date,
    cursor: ClaimCursor,
    limit: int,
    gateways: Sequence[str],
    run_id: int,
    deadline_s: int,
) -> list[ClaimedCharge]:
    """Claim and record pending attempts for up to ``limit`` due installments, in one commit."""
    rows = await fetch_planned(
        db,
        QUERIES["attempts.claim_due"],
        as_of,
        cursor.after_on,
        cursor.after_id,
        limit,
        list(gateways),
        run_id,
        deadline_s,
        sorted(cursor.skipped),
    )
    if rows:
        # Before the cursor moves: a key another customer holds refuses the batch, and the
        # caller claims it again one row at a time from where this batch began.
        await register_keys(db, [(row["idempotency_key"], row["customer_id"]) for row in rows])
        last = rows[-1]
        cursor.after_on, cursor.after_id = last["next_attempt_on"], last["installment_id"]
    return [_claimed(row) for row in rows]


async def register_keys(db: Executor, keys: Sequence[tuple[str, int]]) -> None:
    """Hold new attempts' (idempotency key, customer) pairs across all customers, in the
    caller's transaction: a key another customer holds raises UniqueViolationError, and the
    transaction sends nothing."""
    await db.execute(QUERIES["attempts.register_keys"], [k for k, _ in keys], [c for _, c in keys])


async def register_key_again(db: Executor, key: str, customer_id: int) -> None:
    """Hold a key derived the same way on every try (a prenote's); a retry is no change."""
    await db.execute(QUERIES["attempts.register_key_again"], key, customer_id)


async def record_outcomes(
    db: Executor,
    decisions: Sequence[tuple[int, Decision, Ending]],
    *,
    as_of: date,
    source: str,
) -> set[int]:
    """Store many (attempt id, decision, what it does to the money) in one statement, the
    money applied through the journal, and their outbox events; return the attempt ids that
    changed (an attempt already resolved elsewhere is left as it is)."""
    if not decisions:
        return set()
    columns: tuple[list[object], ...] = tuple([] for _ in range(10))
    for attempt_id, d, ending in decisions:
        values = (
            attempt_id,
            d.attempt_status.value,
            d.gateway_ref,
            d.code,
            d.message,
            d.disable_method,
            d.network_advice,
            ending.kind.value if ending.kind is not None else None,
            ending.sets_plan,
            ending.retry_on,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    # The answers and their outbox events in one transaction: the events, a batch at a time,
    # read the attempts' new state, which only a statement after the recorder's can see.
    async with transaction(db) as conn:
        rows = await fetch_planned(
            conn, QUERIES["attempts.record_outcomes"], *columns, as_of, source
        )
        changed = sorted(row["attempt_id"] for row in rows)
        await write_money_events(conn, changed)
    return set(changed)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnresolvedAttempt:
    """An attempt taken over by reconciliation, with what is needed to ask or re-drive it."""

    status: AttemptStatus
    charge: ClaimedCharge
    age_s: float  # since the attempt was recorded, by the database's clock


async def claim_unresolved(
    db: Executor,
    *,
    after_id: int,
    limit: int,
    gateways: Sequence[str],
    run_id: int,
    deadline_s: int,
) -> list[UnresolvedAttempt]:
    """Take over up to ``limit`` pending attempts of dead passes and in-doubt attempts."""
    rows = await fetch_planned(
        db,
        QUERIES["attempts.claim_unresolved"],
        after_id,
        list(gateways),
        run_id,
        limit,
        deadline_s,
        LIVENESS_NAMESPACE,
    )
    found = [
        UnresolvedAttempt(
            status=AttemptStatus(row["status"]), charge=_claimed(row), age_s=row["age_s"]
        )
        for row in rows
    ]
    found.sort(key=lambda u: u.charge.attempt_id)
    return found


async def card_declines_30d(
    db: Executor, instrument_keys: Sequence[str], *, as_of: date
) -> dict[str, int]:
    """Declined attempts per card instrument in the 30 days before ``as_of`` (recorded ones)."""
    if not instrument_keys:
        return {}
    rows = await fetch_planned(
        db, QUERIES["attempts.card_declines_30d"], sorted(set(instrument_keys)), as_of
    )
    return {row["instrument_key"]: row["declines"] for row in rows}


async def touch_sent(db: Executor, attempt_id: int) -> None:
    """Note that the attempt is being sent again under its key now."""
    await db.execute(QUERIES["attempts.touch_sent"], attempt_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """The installment a claim would take next."""

    installment_id: int
    next_attempt_on: date
    customer_id: int


async def next_candidate(
    db: Executor, *, as_of: date, cursor: ClaimCursor, gateways: Sequence[str]
) -> Candidate | None:
    """The installment ``claim_due`` would take first from ``cursor``, locked; None if none."""
    row = await db.fetchrow(
        QUERIES["attempts.next_candidate"],
        as_of,
        cursor.after_on,
        cursor.after_id,
        list(gateways),
        sorted(cursor.skipped),
    )
    if row is None:
        return None
    return Candidate(
        installment_id=row["id"],
        next_attempt_on=row["next_attempt_on"],
        customer_id=row["customer_id"],
    )
