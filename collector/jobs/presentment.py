"""Presentment: the step between claiming money and sending it, shared by every path.

The batch claim, manual pay and reconciliation's re-sends all come here: the eligibility
check (:mod:`collector.eligibility`) judges each attempt against the history of its money
and its instrument, read in one query per batch; the money is reserved in the journal; a
refused attempt ends unsent with its reason, a reinitiation is labelled so and stays so on
every re-send. Runs inside the caller's transaction, so a claim and its verdicts commit
together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date

import asyncpg

from collector.db import money, prenotes
from collector.db.attempts import ClaimCursor, claim_due, next_candidate
from collector.db.attention import is_row_error, set_aside
from collector.db.history import Subject, histories, mark_verdicts
from collector.db.notices import notice_facts
from collector.db.pool import Executor
from collector.db.preview import SkippedGroup, due_claims
from collector.domain import AttemptSource, ClaimedCharge, MethodKind, MovementKind
from collector.eligibility import Eligible, Presentation, Refused, Verdict, check, combine
from collector.logs import get_logger
from collector.metrics import PRESENTMENTS_REFUSED
from collector.policy import DEFAULT_CARD_RULES, CardRetryRules

log = get_logger()

ELIGIBILITY_SOURCE = "eligibility"


async def judge(
    db: Executor,
    claims: Sequence[ClaimedCharge],
    *,
    as_of: date,
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
) -> dict[int, Verdict]:
    """The verdict on each attempt (by id): may its money be presented on ``as_of``?"""
    subjects = [
        Subject(
            attempt_id=claimed.attempt_id,
            installment_id=installment_id,
            instrument_key=claimed.instrument_key,
            method_kind=claimed.method_kind.value,
            customer_id=claimed.customer_id,
        )
        for claimed in claims
        for installment_id, _ in claimed.presents
    ]
    found = await histories(db, subjects, as_of=as_of, strike_limit=card_rules.two_strike_limit)
    # Regulation E's notice rule is about automatic debits only: a manual payment is the
    # customer's own, made now.
    notices = await notice_facts(
        db,
        [
            (claimed.attempt_id, installment_id, claimed.amount_cents)
            for claimed in claims
            if claimed.payment_id is None
            for installment_id, _ in claimed.presents
        ],
    )
    # NACHA account validation, for bank debits through a gateway that sends prenotes (the
    # rule set names them): manual payments too, a WEB debit all the same.
    validation = await prenotes.facts(
        db,
        [
            (c.attempt_id, c.instrument_key, c.payment_method_id, c.gateway)
            for c in claims
            if c.method_kind is MethodKind.ACH and c.gateway in card_rules.prenote_gateways
        ],
    )
    verdicts: dict[int, Verdict] = {}
    for claimed in claims:
        each = []
        for installment_id, _ in claimed.presents:
            history = found[(claimed.attempt_id, installment_id)]
            each.append(
                check(
                    Presentation(
                        attempt_id=claimed.attempt_id,
                        installment_id=installment_id,
                        method_kind=claimed.method_kind,
                        brand=claimed.brand,
                        # The entry's amount: NACHA compares a reinitiation with the returned
                        # entry, so a debit covering two installments is not reinitiated as
                        # two debits of their shares (nor one share as a larger debit).
                        amount_cents=claimed.amount_cents,
                        as_of=as_of,
                        automatic=claimed.source is not AttemptSource.MANUAL,
                    ),
                    instrument=history.instrument,
                    nsf=history.nsf,
                    card_rules=card_rules,
                    notice=notices.get((claimed.attempt_id, installment_id)),
                    prenote=validation.get(claimed.attempt_id),
                    paused_until=history.paused_until,
                )
            )
        verdicts[claimed.attempt_id] = combine(each)
    return verdicts


async def refuse(
    db: Executor, refused: Sequence[tuple[ClaimedCharge, Refused]], *, as_of: date
) -> None:
    """End these attempts unsent with their reasons and release their money. A batch
    installment gets no automatic attempt (the plan of a manual payment's installments is
    left as it was)."""
    if not refused:
        return
    await mark_verdicts(db, [(c.attempt_id, c.customer_id, False, r.reason) for c, r in refused])
    await money.follow(
        db,
        [
            money.Ending(
                attempt_id=c.attempt_id,
                kind=MovementKind.RELEASED,
                sets_plan=c.payment_id is None,
                retry_on=r.retry_on,
                reason=r.reason,
            )
            for c, r in refused
        ],
        as_of=as_of,
        source=ELIGIBILITY_SOURCE,
        customer_of={c.attempt_id: c.customer_id for c, _ in refused},
    )
    for claimed, verdict in refused:
        PRESENTMENTS_REFUSED.labels(reason=verdict.reason).inc()
        log.warning(
            "presentment_refused",
            attempt_id=claimed.attempt_id,
            installment_id=claimed.installment_id,
            payment_id=claimed.payment_id,
            lease_id=claimed.lease_id,
            gateway=claimed.gateway,
            reason=verdict.reason,
            amount_cents=claimed.amount_cents,
        )


async def screen(
    db: Executor,
    claims: Sequence[ClaimedCharge],
    *,
    as_of: date,
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
) -> tuple[list[ClaimedCharge], list[tuple[ClaimedCharge, Refused]]]:
    """Judge freshly claimed attempts (their money already presented by the claim) and end
    the refused ones; return the attempts to send (reinitiations labelled) and the refused.

    A crash between the claim and this leaves pending attempts, which reconciliation judges
    again before it sends them: nothing is sent unjudged."""
    if not claims:
        return [], []
    verdicts = await judge(db, claims, as_of=as_of, card_rules=card_rules)
    to_send: list[ClaimedCharge] = []
    refused: list[tuple[ClaimedCharge, Refused]] = []
    for claimed in claims:
        verdict = verdicts[claimed.attempt_id]
        if isinstance(verdict, Refused):
            refused.append((claimed, verdict))
        elif isinstance(verdict, Eligible) and verdict.reinitiation:
            to_send.append(dataclasses.replace(claimed, reinitiation=True))
        else:
            to_send.append(claimed)
    await mark_verdicts(
        db, [(c.attempt_id, c.customer_id, True, None) for c in to_send if c.reinitiation]
    )
    await refuse(db, refused, as_of=as_of)
    return to_send, refused


async def claim(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool,
    *,
    as_of: date,
    cursor: ClaimCursor,
    limit: int,
    gateways: Sequence[str],
    run_id: int,
    deadline_s: int,
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
) -> tuple[list[ClaimedCharge], list[tuple[ClaimedCharge, Refused]]]:
    """Claim up to ``limit`` due installments for run ``run_id``, present their money and
    screen them, in one transaction: the attempts to send, and those the eligibility check
    refused."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as held:
            return await claim(
                held,
                as_of=as_of,
                cursor=cursor,
                limit=limit,
                gateways=gateways,
                run_id=run_id,
                deadline_s=deadline_s,
                card_rules=card_rules,
            )
    try:
        async with conn.transaction():
            batch = await claim_due(
                conn,
                as_of=as_of,
                cursor=cursor,
                limit=limit,
                gateways=gateways,
                run_id=run_id,
                deadline_s=deadline_s,
            )
            return await screen(conn, batch, as_of=as_of, card_rules=card_rules)
    except asyncpg.PostgresError as exc:
        if not is_row_error(exc):
            raise
        log.warning("claim_refused_claiming_one_by_one", sqlstate=exc.sqlstate)
    # One row's data made the database refuse the batch: claim one at a time, and set aside
    # the row whose claim is refused, so everyone else is still collected.
    to_send: list[ClaimedCharge] = []
    refused: list[tuple[ClaimedCharge, Refused]] = []
    for _ in range(limit):
        try:
            async with conn.transaction():
                one = await claim_due(
                    conn,
                    as_of=as_of,
                    cursor=cursor,
                    limit=1,
                    gateways=gateways,
                    run_id=run_id,
                    deadline_s=deadline_s,
                )
                if not one:
                    break
                sent, not_sent = await screen(conn, one, as_of=as_of, card_rules=card_rules)
        except asyncpg.PostgresError as exc:
            if not is_row_error(exc):
                raise
            if not await _set_aside_candidate(
                conn, exc, as_of=as_of, cursor=cursor, gateways=gateways
            ):
                break
            continue
        to_send += sent
        refused += not_sent
    return to_send, refused


async def _set_aside_candidate(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    exc: asyncpg.PostgresError,
    *,
    as_of: date,
    cursor: ClaimCursor,
    gateways: Sequence[str],
) -> bool:
    """Set aside the installment whose claim the database refused and take it out of the
    collectable set (a plan line with no date); False when there is none left."""
    async with conn.transaction():
        candidate = await next_candidate(conn, as_of=as_of, cursor=cursor, gateways=gateways)
        if candidate is None:
            return False
        cursor.skipped.add(candidate.installment_id)
        await set_aside(
            conn,
            subject="installment",
            subject_id=candidate.installment_id,
            customer_id=candidate.customer_id,
            reason="claim_refused_by_database",
            detail={
                "sqlstate": exc.sqlstate,
                "constraint": getattr(exc, "constraint_name", None),
            },
        )
    try:
        async with conn.transaction():
            await money.replan(
                conn,
                [candidate.installment_id],
                retry_on=None,
                as_of=as_of,
                source="attention",
                reason="claim_refused_by_database",
                customer_of={candidate.installment_id: candidate.customer_id},
            )
    except asyncpg.PostgresError as replan_exc:
        if not is_row_error(replan_exc):
            raise
        # Passed over for this pass all the same (cursor.skipped); the row stays set aside.
    return True


async def would_refuse(
    db: Executor,
    *,
    as_of: date,
    gateways: Sequence[str],
    batch_size: int,
    card_rules: CardRetryRules = DEFAULT_CARD_RULES,
    charge_off_days: int = 0,
) -> list[SkippedGroup]:
    """What the eligibility check would refuse of a pass for ``as_of``, by reason (the dry
    run's view; reads only). Each would-be presentment is judged alone: several on one card
    in one pass are not counted against each other here."""
    by_reason: dict[str, list[tuple[int, int]]] = {}
    async for batch in due_claims(
        db,
        as_of=as_of,
        gateways=gateways,
        batch_size=batch_size,
        charge_off_days=charge_off_days,
    ):
        verdicts = await _judge_each(db, batch, as_of=as_of, card_rules=card_rules)
        for claimed, verdict in verdicts:
            if isinstance(verdict, Refused):
                assert claimed.installment_id is not None
                by_reason.setdefault(verdict.reason, []).append(
                    (claimed.installment_id, claimed.amount_cents)
                )
    return [
        SkippedGroup(
            reason=reason,
            installments=len(rows),
            amount_cents=sum(cents for _, cents in rows),
            sample_ids=[iid for iid, _ in rows[:10]],
        )
        for reason, rows in sorted(by_reason.items())
    ]


async def _judge_each(
    db: Executor,
    batch: Sequence[ClaimedCharge],
    *,
    as_of: date,
    card_rules: CardRetryRules,
) -> list[tuple[ClaimedCharge, Verdict]]:
    # judge() keys verdicts by attempt id; the would-be charges share one, so give each its
    # own for the call (all above every real attempt).
    numbered = [dataclasses.replace(c, attempt_id=c.attempt_id + n) for n, c in enumerate(batch)]
    verdicts = await judge(db, numbered, as_of=as_of, card_rules=card_rules)
    return [(c, verdicts[n.attempt_id]) for c, n in zip(batch, numbered, strict=True)]
