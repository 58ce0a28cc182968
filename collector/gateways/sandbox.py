"""Deterministic card and ACH gateways for demos, tests and benchmarks.

The payment method's token picks the answer, the way processors' test cards do (DESIGN.md,
"Sandbox tokens"). The sandbox simulates an outside system, so it keeps its charges in its own
schema, ``sandbox``, which the engine's migrations do not know, and it remembers every key
across processes and restarts: a repeated idempotency key gets the first stored answer.

Every answered charge is committed before ``charge`` returns, so a crash test that kills the
engine after a charge finds it in the sandbox. Commits are grouped: concurrent charges share
one ``INSERT`` (see :class:`GroupWriter`), which is what lets a zero-latency benchmark run at
tens of thousands of charges a second. Tokens are kept (they are the sandbox's own "card on
file") but never logged; this module logs nothing at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from typing import Final

import anyio
import anyio.lowlevel
import asyncpg
from asyncpg.pool import PoolConnectionProxy

from collector.calendar import ach_effective_date, ach_settles_on
from collector.db.pool import learn_array_types
from collector.domain import MethodKind
from collector.exceptions import GatewayError
from collector.gateways.base import (
    ChargeRequest,
    Declined,
    DeclineKind,
    GatewayContext,
    InDoubt,
    Outcome,
    Processing,
    Returned,
    Settlement,
    Succeeded,
)

# Any fixed 64-bit number works; it only has to be the same in every process.
SCHEMA_LOCK_KEY: Final = 0x5A4E_D60C_0001

# The longest one group write may take; it is shielded from cancellation (see GroupWriter).
FLUSH_TIMEOUT_S: Final = 10.0

POOL_MAX_SIZE: Final = 4
POOL_CLOSE_TIMEOUT_S: Final = 5.0

LOCK_SCHEMA: Final = "SELECT pg_advisory_xact_lock($1)"
CREATE_SCHEMA: Final = "CREATE SCHEMA IF NOT EXISTS sandbox"
CREATE_CHARGES: Final = """
CREATE TABLE IF NOT EXISTS sandbox.charges (
    idempotency_key text PRIMARY KEY,
    gateway         text NOT NULL,
    installment_id  bigint,
    amount_cents    bigint NOT NULL,
    status          text NOT NULL CHECK (status IN ('succeeded', 'processing', 'declined')),
    code            text,
    message         text,
    gateway_ref     text NOT NULL,
    return_code     text,
    effective_on    date,
    created_at      timestamptz NOT NULL DEFAULT now()
)
"""

ADD_EFFECTIVE_ON: Final = "ALTER TABLE sandbox.charges ADD COLUMN IF NOT EXISTS effective_on date"

# One statement per group: insert what is new, and answer every key with its first stored row.
# The data-modifying CTE and the outer SELECT share one snapshot, so the second branch sees only
# rows committed before the statement began, never the ones this statement inserts: each key
# comes back at most once. A row committed by another process while this statement ran is in
# neither branch; GroupWriter reads those few keys again (SELECT_CHARGES). Rows go in in key
# order: two processes inserting the same keys in different orders would each wait on the
# other's uncommitted row (ON CONFLICT waits for the outcome), a deadlock seen in testing.
INSERT_CHARGES: Final = """
WITH incoming AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::date[]
    ) AS t(idempotency_key, gateway, installment_id, amount_cents, status,
           code, message, gateway_ref, return_code, effective_on)
), inserted AS (
    INSERT INTO sandbox.charges AS c
        (idempotency_key, gateway, installment_id, amount_cents, status,
         code, message, gateway_ref, return_code, effective_on)
    SELECT idempotency_key, gateway, installment_id, amount_cents, status,
           code, message, gateway_ref, return_code, effective_on
    FROM incoming
    ORDER BY idempotency_key
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING c.idempotency_key, c.status, c.code, c.message, c.gateway_ref
)
SELECT idempotency_key, status, code, message, gateway_ref, true AS fresh FROM inserted
UNION ALL
SELECT c.idempotency_key, c.status, c.code, c.message, c.gateway_ref, false AS fresh
FROM sandbox.charges AS c
WHERE c.idempotency_key = ANY ($1::text[])
"""

SETTLEMENT_OF: Final = """
SELECT status, code, message, gateway_ref, return_code, effective_on, created_at::date
FROM sandbox.charges
WHERE idempotency_key = $1 AND gateway = $2
"""

SELECT_CHARGES: Final = """
SELECT idempotency_key, status, code, message, gateway_ref, false AS fresh
FROM sandbox.charges
WHERE idempotency_key = ANY ($1::text[])
"""

LOOKUP_CHARGE: Final = """
SELECT status, code, message, gateway_ref
FROM sandbox.charges
WHERE idempotency_key = $1 AND gateway = $2
"""

CHARGES_EXIST: Final = "SELECT to_regclass('sandbox.charges') IS NOT NULL"

COUNT_ACCEPTED: Final = """
SELECT installment_id, count(*) AS charges
FROM sandbox.charges
WHERE status IN ('succeeded', 'processing') AND installment_id IS NOT NULL
GROUP BY installment_id
"""

SUCCEEDED: Final = "succeeded"
PROCESSING: Final = "processing"
DECLINED: Final = "declined"

UNKNOWN_TOKEN: Final = "sandbox_unknown_token"
INVALID_AMOUNT: Final = "invalid_amount"

_MAX_BIGINT: Final = 2**63 - 1

# The kind of a decline is a property of its code: the table stores the code only.
_SOFT_DECLINES: Final = frozenset({"insufficient_funds", "do_not_honor"})


@dataclass(frozen=True, slots=True)
class _Script:
    """What the sandbox does for one token."""

    status: str
    code: str
    message: str = ""
    return_code: str | None = None
    answer_lost: bool = False  # the charge is recorded but the caller sees a timeout


# Not recorded at all: the request "timed out" before it reached the gateway.
_NOT_TAKEN: Final = _Script(status="", code="")

_CARD_SCRIPTS: Final[dict[str, _Script]] = {
    "sandbox_card_ok": _Script(SUCCEEDED, "approved"),
    "sandbox_card_insufficient_funds": _Script(
        DECLINED, "insufficient_funds", "The card has insufficient funds."
    ),
    "sandbox_card_do_not_honor": _Script(DECLINED, "do_not_honor", "The issuer declined."),
    "sandbox_card_stolen": _Script(DECLINED, "stolen_card", "The card is reported stolen."),
    "sandbox_card_expired": _Script(DECLINED, "expired_card", "The card has expired."),
    "sandbox_card_timeout_taken": _Script(SUCCEEDED, "approved", answer_lost=True),
    "sandbox_card_timeout_not_taken": _NOT_TAKEN,
}

_ACH_SCRIPTS: Final[dict[str, _Script]] = {
    "sandbox_ach_ok": _Script(PROCESSING, "processing"),
}

_ACH_RETURN_PREFIX: Final = "sandbox_ach_return_"
_RETURN_CODE: Final = re.compile(r"R[0-9]{2}")

# The message names the vocabulary, never the token itself (it may be a real one sent by mistake).
_UNKNOWN_CARD: Final = _Script(
    DECLINED,
    UNKNOWN_TOKEN,
    "The sandbox card gateway does not know this token; use a sandbox_card_* token.",
)
_UNKNOWN_ACH: Final = _Script(
    DECLINED,
    UNKNOWN_TOKEN,
    "The sandbox ACH gateway does not know this token; use sandbox_ach_ok or "
    "sandbox_ach_return_Rxx.",
)


def _card_script(token: str) -> _Script:
    return _CARD_SCRIPTS.get(token, _UNKNOWN_CARD)


def _ach_script(token: str) -> _Script:
    script = _ACH_SCRIPTS.get(token)
    if script is not None:
        return script
    if token.startswith(_ACH_RETURN_PREFIX):
        return_code = token[len(_ACH_RETURN_PREFIX) :]
        if _RETURN_CODE.fullmatch(return_code):
            # Accepted now, returned with this code when it would settle (DESIGN.md).
            return _Script(PROCESSING, "processing", return_code=return_code)
    return _UNKNOWN_ACH


def _installment_id(value: str | None) -> int | None:
    # Metadata is free text; only a value that fits the bigint column is kept.
    if value is not None and value.isdecimal() and len(value) <= 18:
        return int(value)
    return None


def gateway_ref_of(idempotency_key: str) -> str:
    """The sandbox's reference for a key: the same key always gets the same reference."""
    return "sbx_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def _outcome_of(status: str, code: str | None, message: str | None, gateway_ref: str) -> Outcome:
    if status == SUCCEEDED:
        return Succeeded(gateway_ref=gateway_ref, code=code or "approved")
    if status == PROCESSING:
        return Processing(gateway_ref=gateway_ref, code=code or "processing")
    decline_code = code or UNKNOWN_TOKEN
    kind = DeclineKind.SOFT if decline_code in _SOFT_DECLINES else DeclineKind.HARD
    return Declined(kind=kind, code=decline_code, message=message or "", gateway_ref=gateway_ref)


ChargeRow = tuple[str, str, int | None, int, str, str, str, str, str | None, date | None]
"""One ``sandbox.charges`` row as the writer sends it, in INSERT_CHARGES's column order."""


class _Batch:
    """One group write: its callers wait on ``done``, then read ``error`` or their record."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None


class _Pending:
    """One caller's row, and where its answer lands once a flush has stored it."""

    __slots__ = ("batch", "fresh", "key", "outcome", "row")

    def __init__(self, row: ChargeRow) -> None:
        self.row = row
        self.key = row[0]
        self.batch: _Batch | None = None
        self.outcome: Outcome | None = None
        self.fresh = False


class GroupWriter:
    """Writes charge rows durably, many concurrent callers to one statement.

    A caller appends its row; if no flush is running it becomes the flusher and writes every
    pending row at once, otherwise it waits for the running flush and tries again (its row may
    have arrived too late for that one). At most one flush runs at a time, so a flush carries
    everything that queued behind the previous one: the busier the sandbox, the larger its
    groups. ``flushes`` counts the statements sent.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._pending: list[_Pending] = []
        self._running: _Batch | None = None
        self.flushes = 0

    async def write(self, row: ChargeRow) -> tuple[Outcome, bool]:
        """Store the row unless its key exists; return the key's first answer and whether this
        row is the one stored; raise GatewayError when the sandbox could not store it."""
        pending = _Pending(row)
        self._pending.append(pending)
        try:
            while True:
                batch = pending.batch
                if batch is not None:
                    # A flush took our row. Event.wait() on a set event still yields, which
                    # would put us behind the next flusher and split its group: don't call it.
                    if not batch.done.is_set():
                        await batch.done.wait()
                    break
                running = self._running
                if running is None:
                    await self._flush()
                    break
                await running.done.wait()
        except BaseException:
            # Cancelled before any flush took the row: it was never sent, so drop it.
            if pending.batch is None:
                self._pending.remove(pending)
            raise
        assert pending.batch is not None
        error = pending.batch.error
        if error is not None:
            raise GatewayError("the sandbox could not record the charge") from error
        assert pending.outcome is not None
        return pending.outcome, pending.fresh

    async def _flush(self) -> None:
        batch = _Batch()
        self._running = batch
        try:
            # Let every task that is ready to run queue its row first. Without this yield the
            # first caller to return from a flush starts the next one alone, and flushes
            # alternate between one row and all the others (measured: half the statements).
            # Shielded from cancellation, so the flusher's own row is always in the batch.
            await anyio.lowlevel.cancel_shielded_checkpoint()
            records, self._pending = self._pending, []
            for record in records:
                record.batch = batch
            self.flushes += 1
            # Shielded: this write answers every caller in the batch, so one caller's timeout
            # must not cancel it (and a cancelled asyncpg query would cost the connection).
            with anyio.fail_after(FLUSH_TIMEOUT_S, shield=True):
                await self._store(records)
        except Exception as exc:
            # Every caller of the batch, the flusher included, raises it from write().
            batch.error = exc
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            # Always wake the batch and whoever queued behind it, or they would wait forever.
            self._running = None
            batch.done.set()

    async def _store(self, records: Sequence[_Pending]) -> None:
        # Two rows with one key in one statement would make ON CONFLICT ambiguous: the first
        # one queued wins, as it would have had it been flushed alone.
        first: dict[str, _Pending] = {}
        for record in records:
            first.setdefault(record.key, record)
        columns = list(zip(*(record.row for record in first.values()), strict=True))
        rows = await self._pool.fetch(INSERT_CHARGES, *columns)
        answers = {row[0]: row for row in rows}
        if len(answers) < len(first):
            missing = [key for key in first if key not in answers]
            answers.update({row[0]: row for row in await self._pool.fetch(SELECT_CHARGES, missing)})
        for record in records:
            row = answers.get(record.key)
            if row is None:
                raise GatewayError("the sandbox lost a charge it had just stored")
            record.outcome = _outcome_of(row[1], row[2], row[3], row[4])
            record.fresh = row[5] and first[record.key] is record


class SandboxGateway:
    """A token-driven simulator of one card or ACH gateway, answering from ``sandbox.charges``."""

    def __init__(
        self,
        name: str,
        pool: asyncpg.Pool,
        *,
        ach: bool,
        latency_ms: float = 0.0,
    ) -> None:
        self.name = name
        self.method_kinds = frozenset({MethodKind.ACH if ach else MethodKind.CARD})
        self.writer = GroupWriter(pool)
        self._pool = pool
        self._script = _ach_script if ach else _card_script
        self._latency_s = latency_ms / 1000

    async def charge(self, request: ChargeRequest) -> Outcome:
        """Charge once per idempotency key; a repeated key gets the first stored answer."""
        if self._latency_s:
            await anyio.sleep(self._latency_s)
        script = self._script(request.token)
        if script is _NOT_TAKEN:
            return InDoubt(reason="timeout")
        amount_cents = request.amount_cents
        if not 0 < amount_cents <= _MAX_BIGINT:
            # Refused before it is taken: a value the table cannot hold would fail the whole
            # group write, and with it every other caller's charge.
            return Declined(
                kind=DeclineKind.HARD,
                code=INVALID_AMOUNT,
                message="The amount must be a positive number of cents.",
            )
        key = request.idempotency_key
        row: ChargeRow = (
            key,
            self.name,
            _installment_id(request.metadata.get("installment_id")),
            amount_cents,
            script.status,
            script.code,
            script.message,
            gateway_ref_of(key),
            script.return_code,
            request.effective_on,
        )
        outcome, fresh = await self.writer.write(row)
        if script.answer_lost and fresh:
            # Taken and committed, but the answer never reaches the caller; a retry with the
            # same key (or a lookup) gets the stored one, as at a real gateway.
            return InDoubt(reason="timeout")
        return outcome

    async def lookup(self, idempotency_key: str) -> Outcome | None:
        """The answer stored under this key by this gateway; None when it never took it."""
        if self._latency_s:
            await anyio.sleep(self._latency_s)
        row = await self._pool.fetchrow(LOOKUP_CHARGE, idempotency_key, self.name)
        if row is None:
            return None
        return _outcome_of(row[0], row[1], row[2], row[3])

    async def settlement(self, idempotency_key: str, *, as_of: date) -> Settlement | None:
        """Where a debit stands on ``as_of``: a debit settles, or comes back with its token's
        return code, 2 banking days after its effective entry date (the next banking day on or
        after the business date it was made for)."""
        row = await self._pool.fetchrow(SETTLEMENT_OF, idempotency_key, self.name)
        if row is None:
            return None
        status, code, message, ref, return_code, effective_on, created_on = row
        if status != PROCESSING:
            outcome = _outcome_of(status, code, message, ref)
            return outcome if isinstance(outcome, Succeeded) else None
        settles_on = ach_settles_on(ach_effective_date(effective_on or created_on))
        if as_of < settles_on:
            return Processing(gateway_ref=ref)
        if return_code is not None:
            return Returned(code=return_code, gateway_ref=ref, gateway_code=return_code)
        return Succeeded(gateway_ref=ref, code="settled")


async def _create_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        # Two processes racing on CREATE ... IF NOT EXISTS can both miss the catalog entry
        # and one then fails on a unique violation; the lock makes them take turns.
        await conn.execute(LOCK_SCHEMA, SCHEMA_LOCK_KEY)
        await conn.execute(CREATE_SCHEMA)
        await conn.execute(CREATE_CHARGES)
        # Data directories made before the column existed.
        await conn.execute(ADD_EFFECTIVE_ON)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing to undo (see _open_sandbox)."""


@asynccontextmanager
async def _open_sandbox(ctx: GatewayContext, *, ach: bool) -> AsyncIterator[SandboxGateway]:
    try:
        pool = await asyncpg.create_pool(
            ctx.database_url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            server_settings={
                "application_name": f"collector-{ctx.name}",
                # The table starts empty and grows fast. A generic plan cached while it was
                # small scans it whole for `= ANY($1)`: measured 30 ms a group write at 50k
                # rows, against 1 ms with a plan made for each call's array.
                "plan_cache_mode": "force_custom_plan",
            },
            # asyncpg's reset (advisory unlock, CLOSE ALL, UNLISTEN *, RESET ALL) would be one
            # more round trip on every release: every charge's. The sandbox leaves no session
            # state behind (its one lock is a transaction's), and asyncpg still rolls back an
            # open transaction itself, as in the engine's pool (collector/db/pool.py).
            reset=_keep_session,
            # Its array types' codecs at once, not by the first charges (as the engine's).
            init=learn_array_types,
            timeout=10,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        # The URL may carry a password: name the failure, not the URL.
        raise GatewayError(
            f"gateway {ctx.name!r} cannot reach its database: {type(exc).__name__}"
        ) from exc
    try:
        try:
            await _create_schema(pool)
        except asyncpg.PostgresError as exc:
            raise GatewayError(f"gateway {ctx.name!r} could not create its schema") from exc
        yield SandboxGateway(ctx.name, pool, ach=ach, latency_ms=ctx.latency_ms)
    finally:
        # Shielded so a cancelled exit still says goodbye to the server; bounded, and cut
        # short if a connection is still busy, so shutdown never hangs on the sandbox.
        with anyio.move_on_after(POOL_CLOSE_TIMEOUT_S, shield=True) as closing:
            await pool.close()
        if closing.cancelled_caught:
            pool.terminate()


@asynccontextmanager
async def open_sandbox_card(ctx: GatewayContext) -> AsyncIterator[SandboxGateway]:
    """A ready sandbox card gateway named ``ctx.name``; its pool closes on exit."""
    async with _open_sandbox(ctx, ach=False) as gateway:
        yield gateway


@asynccontextmanager
async def open_sandbox_ach(ctx: GatewayContext) -> AsyncIterator[SandboxGateway]:
    """A ready sandbox ACH gateway named ``ctx.name``; its pool closes on exit."""
    async with _open_sandbox(ctx, ach=True) as gateway:
        yield gateway


async def sandbox_charge_counts(
    conn: asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool,
) -> dict[int, int]:
    """How many charges the sandbox accepted (succeeded or processing) per installment id;
    empty when no sandbox ever opened on this database."""
    if not await conn.fetchval(CHARGES_EXIST):
        return {}
    return {row[0]: row[1] for row in await conn.fetch(COUNT_ACCEPTED)}
