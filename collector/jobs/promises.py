"""Promises to pay in a pass (issue 9, part 4).

- Before the claim, the promises asked to be collected automatically on the pass's business
  date are collected: the missing part of the promised amount (at most what is overdue), from
  the primary method, through manual pay (the same claim, eligibility check, journal and
  reconciliation as a payment the customer makes in the portal) under the idempotency key
  ``promise-<id>``, so a second pass of the same date replays the first answer and never
  charges twice. It is the customer's payment of a specific amount on a specific date they
  authorized, not an automatic presentment: the promise's pause does not hold it back (and
  the two-strike stop, which only ends automatic presentments, does not either).
- After the claim's charges are recorded, every open promise is resolved in one statement
  (:func:`collector.db.promises.resolve`): kept, broken or cancelled.

Meanwhile the claim passes over a lease with a promise (open, or kept before its date) until
its ``resume_on``, and the eligibility check refuses an automatic presentment of it
(``promise_open``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date

import asyncpg

from collector.config import Settings
from collector.db import promises
from collector.db.payments import PaymentRequest
from collector.exceptions import Conflict, Unprocessable
from collector.gateways.base import Gateway, method_kinds
from collector.jobs.charging import Charger
from collector.jobs.manual_pay import pay_now
from collector.logs import get_logger
from collector.metrics import PROMISES_COLLECTED, PROMISES_RESOLVED

log = get_logger()

# How long a promise's payment claim lasts before reconciliation may take it over: the
# gateway timeout plus time to record the answer (as for the portal's manual payments).
_CLAIM_MARGIN_S = 60
_STATUS_OF_CODE = {402: "declined", 422: "refused"}


def request_key(promise_id: int) -> str:
    """The manual-pay Idempotency-Key of a promise's automatic collection."""
    return f"promise-{promise_id}"


async def collect_promised(
    pool: asyncpg.Pool,
    charger: Charger,
    gateways: Mapping[str, Gateway],
    settings: Settings,
    *,
    as_of: date,
) -> int:
    """Collect the promises due for automatic collection on ``as_of``; how many were sent."""
    sent = 0
    for due in await promises.due_collections(pool, as_of=as_of):
        key = request_key(due.id)
        if due.collect_cents <= 0:
            PROMISES_COLLECTED.labels(status="skipped").inc()
            log.warning(
                "promise_collection_skipped",
                promise_id=due.id,
                lease_id=due.lease_id,
                reason="nothing is overdue on this lease",
            )
            continue
        try:
            answer = await pay_now(
                pool,
                charger,
                PaymentRequest(
                    lease_id=due.lease_id,
                    request_key=key,
                    # One ask per promise: a repeat of the key (a second pass of the date)
                    # replays the first answer, whatever is missing by then.
                    request_hash=hashlib.sha256(key.encode()).hexdigest(),
                    amount_cents=due.collect_cents,
                    payment_method_id=None,
                    as_of=as_of,
                    gateways=list(gateways),
                    gateway_kinds={name: method_kinds(g) for name, g in gateways.items()},
                    deadline_s=int(settings.gateway_timeout_s) + _CLAIM_MARGIN_S,
                ),
                retry_days=settings.soft_retry_days,
                card_rules=settings.card_rules,
            )
        except (Unprocessable, Conflict) as exc:
            # No primary method, nothing overdue, a payment already in progress: nothing
            # was charged; the promise is resolved like any other.
            PROMISES_COLLECTED.labels(status="skipped").inc()
            log.warning(
                "promise_collection_skipped",
                promise_id=due.id,
                lease_id=due.lease_id,
                reason=str(exc),
            )
            continue
        await promises.link_payment(
            pool,
            promise_id=due.id,
            customer_id=due.customer_id,
            lease_id=due.lease_id,
            request_key=key,
        )
        status = str(answer.body.get("status") or _STATUS_OF_CODE.get(answer.status_code, "other"))
        PROMISES_COLLECTED.labels(status=status).inc()
        sent += 1
        log.info(
            "promise_collected",
            promise_id=due.id,
            lease_id=due.lease_id,
            payment_id=answer.body.get("payment_id"),
            outcome=status,
            amount_cents=due.collect_cents,
        )
    return sent


async def resolve_promises(pool: asyncpg.Pool, *, as_of: date) -> list[promises.Resolved]:
    """Resolve the open promises on ``as_of`` (one statement) and count the outcomes."""
    async with pool.acquire() as conn, conn.transaction():
        done = await promises.resolve(conn, as_of=as_of)
    for promise in done:
        PROMISES_RESOLVED.labels(outcome=promise.status).inc()
        log.info(
            "promise_resolved",
            promise_id=promise.id,
            lease_id=promise.lease_id,
            outcome=promise.status,
            amount_cents=promise.amount_cents,
            paid_cents=promise.paid_cents,
        )
    return done
