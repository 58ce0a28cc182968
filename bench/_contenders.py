"""The engine's rivals in bench/compare.py, each the same job done another way, on the same
schema's ``installments`` and ``charge_attempts``, through the same gateway objects.

None of them runs the eligibility check, the retry policy, the notices, the metrics or the
logs, reconciles or settles, and only ``loop+journal`` writes the money journal and the money
events: they are what a hand-written job costs, the floor the engine's extra work is measured
against (``loop+journal``: the floor of any job that keeps the design's ledger). Each
charges under a deterministic idempotency key, so a re-run after a crash would not charge
twice at a gateway that honours keys.

The loops' statements share their common parts as constant fragments, joined once here (no
value is ever put into them: ruff's S608 cannot tell a fragment from a value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import anyio
import asyncpg
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectSendStream

from collector.domain import MethodKind
from collector.gateways.base import ChargeRequest, Gateway, Outcome, Processing, Succeeded

# --- the batched loop --------------------------------------------------------------------

# One claimer's batch: lock up to $2 due installments after the keyset cursor ($3, $4),
# SKIP LOCKED, record a pending attempt each (ids drawn up front, as the engine does, so the
# result needs no join back to the inserted rows) and take them out of the collectable set.
_LOOP_PICK = """
WITH picked AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('charge_attempts', 'id')) AS attempt_id,
           i.id AS installment_id, i.next_attempt_on,
           i.amount_cents - i.paid_cents AS amount_cents,
           'loop-inst-' || i.id || '-' || (i.attempts + 1) AS idempotency_key,
           pm.id AS payment_method_id, pm.gateway, pm.token, pm.instrument_key,
           l.customer_id
    FROM installments i
    JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
    JOIN payment_methods pm
      ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
    WHERE i.status IN ('scheduled', 'overdue')
      AND i.next_attempt_on IS NOT NULL
      AND i.next_attempt_on <= $1
      AND (i.next_attempt_on, i.id) > ($3::date, $4::bigint)
    ORDER BY i.next_attempt_on, i.id
    LIMIT $2
    FOR UPDATE OF i SKIP LOCKED
), attempts AS (
    INSERT INTO charge_attempts
        (id, installment_id, payment_method_id, amount_cents, idempotency_key, source, status,
         gateway, customer_id, instrument_key, as_of, effective_on)
    SELECT attempt_id, installment_id, payment_method_id, amount_cents, idempotency_key,
           'batch', 'pending', gateway, customer_id, instrument_key, $1, $1
    FROM picked
)"""
_LOOP_CLAIMED = """
SELECT attempt_id, installment_id, next_attempt_on, amount_cents, idempotency_key, token
FROM picked
ORDER BY next_attempt_on, installment_id
"""
LOOP_CLAIM = (
    _LOOP_PICK  # noqa: S608 (constant fragments)
    + """, marked AS (
    UPDATE installments i
    SET status = 'processing', attempts = i.attempts + 1, next_attempt_on = NULL,
        updated_at = now()
    FROM picked p
    WHERE i.id = p.installment_id
)"""
    + _LOOP_CLAIMED
)

# One statement per batch of answers: each attempt's outcome and its installment's state.
_LOOP_ANSWERS = """
WITH o AS (
    SELECT *
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[])
      AS o(attempt_id, installment_id, amount_cents, status, gateway_ref, code)
), recorded AS (
    UPDATE charge_attempts a
    SET status = o.status, gateway_ref = o.gateway_ref, outcome_code = o.code,
        updated_at = now(), resolved_at = now()
    FROM o
    WHERE a.id = o.attempt_id
)"""
_PAID_STATUS = """status = CASE o.status WHEN 'succeeded' THEN 'paid'
                           WHEN 'processing' THEN 'pending_settlement'
                           ELSE 'overdue' END,
    paid_cents = i.paid_cents + CASE WHEN o.status = 'succeeded' THEN o.amount_cents ELSE 0 END,"""
LOOP_RECORD = (
    _LOOP_ANSWERS
    + """
UPDATE installments i
SET """
    + _PAID_STATUS
    + """
    updated_at = now()
FROM o
WHERE i.id = o.installment_id
"""
)

# The batched loop with what the design asks of every charge besides (DESIGN.md: the money
# journal, the outbox), in the same statements as the loop's own writes: at the claim, the
# journal's presented row and the money put in flight; at the record, the answer's journal
# row, the money taken out of flight and the customer's money event (with the dedupe key the
# journal's trigger looks for, so it finds the event written). Written directly, not through
# the engine's functions; no eligibility check, no notices, no policy, no paid-off events.
LOOP_CLAIM_JOURNAL = (
    _LOOP_PICK  # noqa: S608 (constant fragments)
    + """, presented AS (
    INSERT INTO money_movements
        (customer_id, installment_id, attempt_id, kind, amount_cents, as_of, source)
    SELECT customer_id, installment_id, attempt_id, 'presented', amount_cents, $1, 'batch'
    FROM picked
), marked AS (
    UPDATE installments i
    SET status = 'processing', attempts = i.attempts + 1, next_attempt_on = NULL,
        in_flight_cents = i.in_flight_cents + p.amount_cents,
        awaiting_answers = i.awaiting_answers + 1, updated_at = now()
    FROM picked p
    WHERE i.id = p.installment_id
)"""
    + _LOOP_CLAIMED
)
LOOP_RECORD_JOURNAL = (
    _LOOP_ANSWERS  # noqa: S608 (constant fragments)
    + """, answered AS (
    UPDATE installments i
    SET """
    + _PAID_STATUS
    + """
        in_flight_cents = i.in_flight_cents
                          - CASE WHEN o.status = 'processing' THEN 0 ELSE o.amount_cents END,
        awaiting_answers = i.awaiting_answers - 1, updated_at = now()
    FROM o
    WHERE i.id = o.installment_id
    RETURNING i.id AS installment_id, i.customer_id, i.lease_id, o.attempt_id, o.amount_cents,
              CASE o.status WHEN 'succeeded' THEN 'settled'
                            WHEN 'processing' THEN 'accepted'
                            ELSE 'released' END AS kind,
              CASE o.status WHEN 'succeeded' THEN 'payment.succeeded'
                            WHEN 'processing' THEN 'payment.pending_settlement'
                            ELSE 'payment.failed' END AS type
), journaled AS (
    INSERT INTO money_movements
        (customer_id, installment_id, attempt_id, kind, amount_cents, as_of, source, answers)
    SELECT customer_id, installment_id, attempt_id, kind, amount_cents, $7, 'batch', true
    FROM answered
)
INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body, dedupe_key)
SELECT customer_id, lease_id, 'lease:' || lease_id, type, $7,
       jsonb_build_object('attempt_id', attempt_id, 'installment_ids',
                          jsonb_build_array(installment_id), 'amount_cents', amount_cents),
       type || ':' || attempt_id
FROM answered
"""
)


@dataclass(frozen=True, slots=True)
class Claim:
    attempt_id: int
    installment_id: int
    amount_cents: int
    idempotency_key: str
    token: str


def _request(claim: Claim, as_of: date) -> ChargeRequest:
    return ChargeRequest(
        customer_id=0,  # the in-memory and sandbox gateways file nothing under it
        idempotency_key=claim.idempotency_key,
        amount_cents=claim.amount_cents,
        token=claim.token,
        method_kind=MethodKind.CARD,
        metadata={"installment_id": str(claim.installment_id)},
        effective_on=as_of,
    )


def _status(outcome: Outcome) -> tuple[str, str | None, str]:
    if isinstance(outcome, Succeeded):
        return "succeeded", outcome.gateway_ref, outcome.code
    if isinstance(outcome, Processing):
        return "processing", outcome.gateway_ref, outcome.code
    return "failed", getattr(outcome, "gateway_ref", None), getattr(outcome, "code", "unknown")


async def batched_loop(
    pool: asyncpg.Pool,
    gateway: Gateway,
    *,
    as_of: date,
    batch_size: int = 500,
    concurrency: int = 64,
    journal: bool = False,
) -> int:
    """The engine's shape, written directly on asyncpg: one claimer takes batches of
    ``batch_size`` (one statement and one commit each: lock SKIP LOCKED, insert the pending
    attempts, mark the installments processing), the charges run ``concurrency`` at a time
    (two batches may be charging at once, so a batch's last charges do not leave the gateway
    idle), and each batch's answers are recorded in one statement and one commit. Three
    stages at once, a batch buffered between each. No per-charge timeout, no journal, no
    eligibility check, no policy, no metrics, no logs. ``journal``: the journal's rows and
    the money event too (LOOP_CLAIM_JOURNAL). Returns the charges recorded."""
    claim_sql, record_sql = (
        (LOOP_CLAIM_JOURNAL, LOOP_RECORD_JOURNAL) if journal else (LOOP_CLAIM, LOOP_RECORD)
    )
    record_args: tuple[date, ...] = (as_of,) if journal else ()
    limiter = anyio.CapacityLimiter(concurrency)
    recorded = 0
    claims_send, claims_recv = anyio.create_memory_object_stream[list[Claim]](1)
    answers_send, answers_recv = anyio.create_memory_object_stream[list[tuple[Claim, Outcome]]](1)

    async def claimer(send: ObjectSendStream[list[Claim]]) -> None:
        after: tuple[date, int] = (date.min, 0)
        async with send, pool.acquire() as conn:
            while True:
                rows = await conn.fetch(claim_sql, as_of, batch_size, *after)
                if not rows:
                    return
                after = (rows[-1]["next_attempt_on"], rows[-1]["installment_id"])
                await send.send(
                    [
                        Claim(
                            r["attempt_id"],
                            r["installment_id"],
                            r["amount_cents"],
                            r["idempotency_key"],
                            r["token"],
                        )
                        for r in rows
                    ]
                )

    async def charge_batch(
        batch: list[Claim], send: ObjectSendStream[list[tuple[Claim, Outcome]]]
    ) -> None:
        answers: list[tuple[Claim, Outcome]] = []

        async def one(claim: Claim) -> None:
            async with limiter:
                answers.append((claim, await gateway.charge(_request(claim, as_of))))

        async with send:
            async with anyio.create_task_group() as tg:
                for claim in batch:
                    tg.start_soon(one, claim)
            await send.send(answers)

    async def charger(
        recv: ObjectReceiveStream[list[Claim]],
        send: MemoryObjectSendStream[list[tuple[Claim, Outcome]]],
    ) -> None:
        # At most two batches charging at once; the slot is taken here, before the batch is
        # taken off the claimer's stream, and given back by the batch's task.
        slots = anyio.Semaphore(2)

        async def charge_then_free(batch: list[Claim], out: ObjectSendStream[Any]) -> None:
            try:
                await charge_batch(batch, out)
            finally:
                slots.release()

        async with recv, send, anyio.create_task_group() as tg:
            while True:
                await slots.acquire()
                try:
                    batch = await recv.receive()
                except anyio.EndOfStream:
                    slots.release()
                    return
                tg.start_soon(charge_then_free, batch, send.clone())

    async def recorder(recv: ObjectReceiveStream[list[tuple[Claim, Outcome]]]) -> None:
        nonlocal recorded
        async with recv, pool.acquire() as conn:
            async for answers in recv:
                columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
                for claim, outcome in answers:
                    status, ref, code = _status(outcome)
                    for column, value in zip(
                        columns,
                        (
                            claim.attempt_id,
                            claim.installment_id,
                            claim.amount_cents,
                            status,
                            ref,
                            code,
                        ),
                        strict=True,
                    ):
                        column.append(value)
                await conn.execute(record_sql, *columns, *record_args)
                recorded += len(answers)

    async with anyio.create_task_group() as tg:
        tg.start_soon(claimer, claims_send)
        tg.start_soon(charger, claims_recv, answers_send)
        tg.start_soon(recorder, answers_recv)
    return recorded


# --- one transaction per installment ------------------------------------------------------

ROW_CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT i.id AS installment_id, i.amount_cents - i.paid_cents AS amount_cents,
           'row-inst-' || i.id || '-' || (i.attempts + 1) AS idempotency_key,
           pm.id AS payment_method_id, pm.gateway, pm.token, pm.instrument_key, l.customer_id
    FROM installments i
    JOIN leases l ON l.id = i.lease_id AND l.status = 'active'
    JOIN payment_methods pm
      ON pm.customer_id = l.customer_id AND pm.is_primary AND pm.status = 'active'
    WHERE i.status IN ('scheduled', 'overdue')
      AND i.next_attempt_on IS NOT NULL
      AND i.next_attempt_on <= $1
    ORDER BY i.next_attempt_on, i.id
    LIMIT 1
    FOR UPDATE OF i SKIP LOCKED
)
INSERT INTO charge_attempts
    (installment_id, payment_method_id, amount_cents, idempotency_key, source, status,
     gateway, customer_id, instrument_key, as_of, effective_on)
SELECT installment_id, payment_method_id, amount_cents, idempotency_key, 'batch', 'pending',
       gateway, customer_id, instrument_key, $1, $1
FROM picked
RETURNING id AS attempt_id, installment_id, amount_cents, idempotency_key,
          (SELECT token FROM picked) AS token
"""

ROW_RECORD = """
WITH recorded AS (
    UPDATE charge_attempts
    SET status = $2, gateway_ref = $3, outcome_code = $4, updated_at = now(),
        resolved_at = now()
    WHERE id = $1
)
UPDATE installments
SET status = CASE $2::text WHEN 'succeeded' THEN 'paid'
                           WHEN 'processing' THEN 'pending_settlement'
                           ELSE 'overdue' END,
    paid_cents = paid_cents + CASE WHEN $2::text = 'succeeded' THEN $6::bigint ELSE 0 END,
    attempts = attempts + 1, next_attempt_on = NULL, updated_at = now()
WHERE id = $5
"""


async def per_row(
    connections: Sequence[asyncpg.Connection], gateway: Gateway, *, as_of: date
) -> int:
    """One worker per connection, each collecting one installment per transaction: BEGIN,
    lock the next due installment (SKIP LOCKED) and insert its pending attempt, charge it
    while the transaction holds the row, record the answer, COMMIT; four statements and one
    commit per installment. The deterministic key makes a charge whose transaction was lost
    harmless at a gateway that honours keys. Returns the charges recorded."""
    recorded = 0

    async def worker(conn: asyncpg.Connection) -> None:
        nonlocal recorded
        while True:
            async with conn.transaction():
                row = await conn.fetchrow(ROW_CLAIM, as_of)
                if row is None:
                    return
                claim = Claim(
                    row["attempt_id"],
                    row["installment_id"],
                    row["amount_cents"],
                    row["idempotency_key"],
                    row["token"],
                )
                status, ref, code = _status(await gateway.charge(_request(claim, as_of)))
                await conn.execute(
                    ROW_RECORD,
                    claim.attempt_id,
                    status,
                    ref,
                    code,
                    claim.installment_id,
                    claim.amount_cents,
                )
            recorded += 1

    async with anyio.create_task_group() as tg:
        for conn in connections:
            tg.start_soon(worker, conn)
    return recorded


# --- procrastinate --------------------------------------------------------------------------

JOB_READ = """
SELECT i.amount_cents - i.paid_cents AS amount_cents, pm.token
FROM installments i
JOIN leases l ON l.id = i.lease_id
JOIN payment_methods pm ON pm.customer_id = l.customer_id AND pm.is_primary
WHERE i.id = $1 AND i.status IN ('scheduled', 'overdue')
"""

JOB_MARK_PAID = """
UPDATE installments
SET status = 'paid', paid_cents = amount_cents, attempts = attempts + 1,
    next_attempt_on = NULL, updated_at = now()
WHERE id = $1
"""


@dataclass(slots=True)
class ProcrastinateRun:
    jobs: int
    defer_s: float
    worker_s: float
    paid: int


async def procrastinate_jobs(
    url: str,
    pool: asyncpg.Pool,
    gateway: Gateway,
    *,
    as_of: date,
    installment_ids: Sequence[int],
    concurrency: int,
    pool_size: int = 20,
    analyze: bool = True,
    before_worker: Any = None,
) -> ProcrastinateRun:
    """The same job as a PostgreSQL task queue would run it: one procrastinate job per
    installment, deferred in batches (timed apart), then one worker with ``concurrency``
    until the queue is empty (procrastinate's defaults otherwise, its pool of ``pool_size``
    checking each connection it hands out, as procrastinate sets it up). Each job reads its
    installment and method, charges through the gateway under a key of its installment, and
    marks it paid (no attempt row). Its
    statements run on ``pool`` (asyncpg); procrastinate's own on psycopg. ``before_worker``,
    an async callable, runs between deferring and working (the caller's snapshot)."""
    from procrastinate import App, PsycopgConnector

    paid = 0
    app = App(connector=PsycopgConnector(conninfo=url, min_size=1, max_size=pool_size))

    @app.task(name="collect_installment")
    async def collect_installment(installment_id: int) -> None:
        nonlocal paid
        row = await pool.fetchrow(JOB_READ, installment_id)
        if row is None:
            return
        outcome = await gateway.charge(
            ChargeRequest(
                customer_id=0,  # the gateway files nothing under it
                idempotency_key=f"procrastinate-inst-{installment_id}",
                amount_cents=row["amount_cents"],
                token=row["token"],
                method_kind=MethodKind.CARD,
                metadata={"installment_id": str(installment_id)},
                effective_on=as_of,
            )
        )
        if isinstance(outcome, Succeeded):
            await pool.execute(JOB_MARK_PAID, installment_id)
            paid += 1

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        started = anyio.current_time()
        for start in range(0, len(installment_ids), 1_000):
            chunk: list[dict[str, Any]] = [
                {"installment_id": i} for i in installment_ids[start : start + 1_000]
            ]
            await collect_installment.batch_defer_async(*chunk)
        defer_s = anyio.current_time() - started
        if analyze:
            # As autovacuum would have on a queue in steady use: without statistics the
            # planner sees the job table as it was when empty.
            await app.connector.execute_query_async("ANALYZE procrastinate_jobs")
        if before_worker is not None:
            await before_worker()
        started = anyio.current_time()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False
        )
        worker_s = anyio.current_time() - started
    return ProcrastinateRun(
        jobs=len(installment_ids), defer_s=defer_s, worker_s=worker_s, paid=paid
    )
