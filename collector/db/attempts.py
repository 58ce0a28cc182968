"""The charge-attempt ledger: claiming due work, recording outcomes, taking over the
attempts of dead passes. One method per named query; rows become domain values here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import asyncpg

from collector.db.distribution import PLAIN_KEY_INDEXES
from collector.db.money import Ending, Presentment, follow, present
from collector.db.outbox import write_money_events
from collector.db.pool import Executor, fetch_planned, transaction
from collector.db.queries import QUERIES
from collector.db.routing import one_node, shard_groups
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
    """Claim, record pending attempts for and present the money of up to ``limit`` due
    installments, in the caller's transaction: an unlocked scan from the cursor, then per
    shard group of the candidates' customers (one on plain PostgreSQL) one lock-and-insert
    statement and the money's presentment, then the batch's keys. Empty when nothing is left
    after the cursor. On one node a single statement claims, records and presents."""
    if await one_node(db):
        claimed_rows = await fetch_planned(
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
        if claimed_rows:
            await _register_batch_keys(db, claimed_rows)
            last = claimed_rows[-1]
            cursor.after_on, cursor.after_id = last["next_attempt_on"], last["installment_id"]
        return [_claimed(row) for row in claimed_rows]
    while True:
        candidates = await fetch_planned(
            db,
            QUERIES["attempts.claim_candidates"],
            as_of,
            cursor.after_on,
            cursor.after_id,
            limit,
            list(gateways),
            sorted(cursor.skipped),
        )
        if not candidates:
            return []
        owner = {row["id"]: row["customer_id"] for row in candidates}
        rows: list[asyncpg.Record] = []
        for group in await shard_groups(db, owner.values()):
            members = set(group)
            ids = sorted(i for i, c in owner.items() if c in members)
            claimed = await fetch_planned(
                db,
                QUERIES["attempts.claim_due_routed"],
                as_of,
                ids,
                group,
                list(gateways),
                run_id,
                deadline_s,
            )
            # The money is reserved by the one function that applies it, which marks the
            # installments processing: its own statement, with the group's customers.
            await present(
                db,
                [
                    Presentment(
                        attempt_id=row["attempt_id"],
                        installment_id=row["installment_id"],
                        amount_cents=row["amount_cents"],
                        customer_id=row["customer_id"],
                        source=row["source"],
                    )
                    for row in claimed
                ],
                as_of=as_of,
            )
            rows += claimed
        if rows:
            await _register_batch_keys(db, rows)
        # Past every candidate seen: one another pass holds now is that pass's.
        last = candidates[-1]
        cursor.after_on, cursor.after_id = last["next_attempt_on"], last["id"]
        if rows:
            rows.sort(key=lambda row: (row["next_attempt_on"], row["installment_id"]))
            return [_claimed(row) for row in rows]


async def _register_batch_keys(db: Executor, rows: Sequence[asyncpg.Record]) -> None:
    # Called before the cursor moves: a key another customer holds refuses the batch, and
    # the caller claims it again one row at a time from where this batch began.
    await register_keys(db, [(row["idempotency_key"], row["customer_id"]) for row in rows])


# The constraints that refuse an attempt whose idempotency key is held already: Citus's
# lookup table (register_keys raises its error), plain PostgreSQL's index on the key alone
# (sql/0031), and the (key, customer) unique key both backends keep.
KEY_HELD_CONSTRAINTS = frozenset(
    {"idempotency_keys_pkey", "charge_attempts_idempotency_key_key", *PLAIN_KEY_INDEXES.values()}
)


_HELD_KEY = re.compile(r"^Key \(idempotency_key(?:, customer_id)?\)=\(([^,)]*)")


def held_key(exc: BaseException) -> str | None:
    """The key named when the database refused new attempts because it is held already ("" if
    the refusal names none); None for any other error."""
    if not (
        isinstance(exc, asyncpg.UniqueViolationError)
        and exc.constraint_name in KEY_HELD_CONSTRAINTS
    ):
        return None
    named = _HELD_KEY.match(exc.detail or "")
    return named.group(1) if named else ""


async def register_keys(db: Executor, keys: Sequence[tuple[str, int]]) -> None:
    """Hold new attempts' (idempotency key, customer) pairs across all customers, in the
    caller's transaction. On Citus a key already held raises UniqueViolationError, the error
    plain PostgreSQL's unique index on the key (sql/0031) raised already in the insert of the
    attempt, where this has nothing left to do; either way the transaction sends nothing."""
    if await one_node(db):
        # Plain PostgreSQL: the unique index on the key alone (sql/0031) already refused a
        # key held elsewhere, in the statement that inserted the attempt.
        return
    registered = await db.fetch(
        QUERIES["attempts.register_keys"], [k for k, _ in keys], [c for _, c in keys]
    )
    if len(registered) != len(keys):
        held = sorted({k for k, _ in keys} - {r["idempotency_key"] for r in registered})
        refused = asyncpg.UniqueViolationError(
            f"idempotency key already held: {', '.join(held) or 'a key given twice'}"
        )
        # Worded as PostgreSQL's own refusal by a unique index (plain PostgreSQL's, sql/0031).
        refused.detail = f"Key (idempotency_key)=({held[0] if held else ''}) already exists."
        refused.table_name, refused.constraint_name = "idempotency_keys", "idempotency_keys_pkey"
        raise refused


async def register_key_again(db: Executor, key: str, customer_id: int) -> None:
    """Hold a key derived the same way on every try (a prenote's); a retry is no change.
    Plain PostgreSQL needs nothing: the prenote's own unique index holds it (sql/0031)."""
    if await one_node(db):
        return
    await db.execute(QUERIES["attempts.register_key_again"], key, customer_id)


async def record_outcomes(
    db: Executor,
    decisions: Sequence[tuple[int, int, Decision, Ending]],
    *,
    as_of: date,
    source: str,
) -> set[int]:
    """Store many (attempt id, customer, decision, what it does to the money), the money
    applied through the journal, and their outbox events, in one transaction: per shard
    group of the customers (one on plain PostgreSQL) the answers' statement, the money's and
    the events'. Return the attempt ids that changed (an attempt already resolved elsewhere
    is left as it is)."""
    if not decisions:
        return set()
    if await one_node(db):
        return await _record_outcomes_one_node(db, decisions, as_of=as_of, source=source)
    changed: set[int] = set()
    # The answers and their outbox events in one transaction: the events, a batch at a time,
    # read the attempts' new state, which only a statement after the recorder's can see.
    async with transaction(db) as conn:
        for group in await shard_groups(conn, (c for _, c, _, _ in decisions)):
            members = set(group)
            part = [item for item in decisions if item[1] in members]
            columns: tuple[list[object], ...] = tuple([] for _ in range(7))
            for attempt_id, _, d, _ in part:
                values = (
                    attempt_id,
                    d.attempt_status.value,
                    d.gateway_ref,
                    d.code,
                    d.message,
                    d.disable_method,
                    d.network_advice,
                )
                for column, value in zip(columns, values, strict=True):
                    column.append(value)
            rows = await fetch_planned(
                conn, QUERIES["attempts.record_outcomes_routed"], *columns, group
            )
            ids = {row["attempt_id"] for row in rows}
            await follow(
                conn,
                [ending for attempt_id, _, _, ending in part if attempt_id in ids],
                as_of=as_of,
                source=source,
                customer_of={row["attempt_id"]: row["customer_id"] for row in rows},
            )
            await write_money_events(conn, sorted(ids), customers=group)
            changed |= ids
    return changed


async def _record_outcomes_one_node(
    db: Executor,
    decisions: Sequence[tuple[int, int, Decision, Ending]],
    *,
    as_of: date,
    source: str,
) -> set[int]:
    """record_outcomes on one node: the answers and their money in one statement, then the
    outbox events (the method.disabled ones the trigger writes at commit)."""
    columns: tuple[list[object], ...] = tuple([] for _ in range(10))
    for attempt_id, _, d, ending in decisions:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class UnresolvedBatch:
    """One batch of reconciliation's take-over: the attempts taken, and the last attempt id
    looked at (the next batch starts after it, whether or not its attempt was taken)."""

    taken: list[UnresolvedAttempt]
    scanned_to: int | None  # None: nothing left to look at


async def live_runs(db: Executor) -> tuple[list[int], datetime]:
    """The runs whose pass is alive now (their liveness lock is held), and the database's
    clock. Read on the node the engine is connected to, where the passes' session locks are."""
    row = await db.fetchrow(QUERIES["attempts.live_runs"], LIVENESS_NAMESPACE)
    assert row is not None  # an aggregate always answers one row
    return list(row["run_ids"]), row["now"]


async def claim_unresolved(
    db: Executor,
    *,
    after_id: int,
    limit: int,
    gateways: Sequence[str],
    run_id: int,
    deadline_s: int,
) -> UnresolvedBatch:
    """Take over up to ``limit`` pending attempts of dead passes and in-doubt attempts with id
    above ``after_id``: the live runs read on their own, an unlocked scan, then one locking
    statement per shard group of the candidates' customers (one on plain PostgreSQL)."""
    if isinstance(db, asyncpg.Pool):
        # One connection for the batch's statements: it knows its backend (shard_groups).
        async with db.acquire() as conn:
            return await claim_unresolved(
                conn,
                after_id=after_id,
                limit=limit,
                gateways=gateways,
                run_id=run_id,
                deadline_s=deadline_s,
            )
    live, now = await live_runs(db)
    candidates = await db.fetch(
        QUERIES["attempts.unresolved_candidates"], after_id, list(gateways), limit, live
    )
    if not candidates:
        return UnresolvedBatch(taken=[], scanned_to=None)
    owner = {row["id"]: row["customer_id"] for row in candidates}
    rows: list[asyncpg.Record] = []
    for group in await shard_groups(db, owner.values()):
        members = set(group)
        ids = sorted(i for i, c in owner.items() if c in members)
        rows += await fetch_planned(
            db, QUERIES["attempts.claim_unresolved"], ids, group, run_id, live, deadline_s, now
        )
    found = [
        UnresolvedAttempt(
            status=AttemptStatus(row["status"]), charge=_claimed(row), age_s=row["age_s"]
        )
        for row in rows
    ]
    found.sort(key=lambda u: u.charge.attempt_id)
    return UnresolvedBatch(taken=found, scanned_to=max(owner))


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
    """The installment ``claim_due`` would take first from ``cursor``, locked (on Citus an
    unlocked scan, then a single-shard lock of its row); None if none."""
    if await one_node(db):
        found = await db.fetchrow(
            QUERIES["attempts.next_candidate"],
            as_of,
            cursor.after_on,
            cursor.after_id,
            list(gateways),
            sorted(cursor.skipped),
        )
        if found is None:
            return None
        return Candidate(
            installment_id=found["id"],
            next_attempt_on=found["next_attempt_on"],
            customer_id=found["customer_id"],
        )
    after_on, after_id = cursor.after_on, cursor.after_id
    while True:
        row = await db.fetchrow(
            QUERIES["attempts.claim_candidates"],
            as_of,
            after_on,
            after_id,
            1,
            list(gateways),
            sorted(cursor.skipped),
        )
        if row is None:
            return None
        locked = await db.fetchrow(
            QUERIES["attempts.lock_candidate"], row["id"], row["customer_id"]
        )
        if locked is not None:
            return Candidate(
                installment_id=locked["id"],
                next_attempt_on=locked["next_attempt_on"],
                customer_id=locked["customer_id"],
            )
        after_on, after_id = row["next_attempt_on"], row["id"]  # another pass holds it
