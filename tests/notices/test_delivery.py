"""Delivery of the outbox to a real HTTP receiver on loopback: signed, in order per lease, at
least once, with backoff, dead letters and a circuit breaker."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from typing import Any

import anyio
import asyncpg
import pytest
from pydantic import SecretStr

from collector.config import Settings, WebhookEndpoint
from collector.db import outbox
from collector.db.outbox import EventType
from collector.jobs.deliver import (
    CircuitBreaker,
    Deliverer,
    DeliveryCounts,
    backoff_s,
    open_client,
)
from collector.webhook_signing import verify
from tests.factories import make_lease
from tests.notices.receiver import OK, Receiver, Reply, Request, receiver

DAY = date(2026, 11, 26)
SECRET = "whsec_test_0123456789abcdef"
OLD_SECRET = "whsec_old_0123456789abcdef"


def hook_settings(settings: Settings, rec: Receiver, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_endpoints": [
            WebhookEndpoint(name="portal", url=rec.url, secrets=[SecretStr(SECRET)])
        ],
        "webhook_timeout_s": 2.0,
        "webhook_backoff_base_s": 0.001,
        "webhook_backoff_max_s": 0.001,
        "webhook_breaker_failures": 1000,
        "webhook_max_attempts": 5,
    }
    values.update(extra)
    return settings.model_copy(update=values)


async def deliver(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    until_nothing_pending: bool = False,
) -> tuple[DeliveryCounts, Deliverer]:
    """One round of delivery; or, ``until_nothing_pending``, rounds until every event is
    delivered or dead (within a deadline), their counts added up. A round ends when nothing
    is due: a retry planned a millisecond ahead (the tests' backoff) may not be due yet when
    its round looks again, so a test of retries must not depend on one round taking it."""
    async with open_client(settings) as client:
        deliverer = Deliverer(
            pool, settings, client=client, rng=random.Random(7), monotonic=monotonic
        )
        total = await deliverer.deliver_once()
        with anyio.fail_after(20):
            while until_nothing_pending and total.pending:
                more = await deliverer.deliver_once()
                total.delivered += more.delivered
                total.failed += more.failed
                total.dead_lettered += more.dead_lettered
                total.pending, total.oldest_age_s = more.pending, more.oldest_age_s
        return total, deliverer


async def events_on(pool: asyncpg.Pool, leases: int, per_lease: int) -> list[int]:
    """``per_lease`` events on each of ``leases`` leases, interleaved; their ids."""
    ids: list[int] = []
    async with pool.acquire() as conn:
        refs = [await make_lease(conn, due_dates=[DAY]) for _ in range(leases)]
        for n in range(per_lease):
            for ref in refs:
                event_id = await outbox.write_event(
                    conn,
                    type=EventType.PAYMENT_FAILED,
                    customer_id=ref.customer_id,
                    lease_id=ref.lease_id,
                    as_of=DAY,
                    body={"n": n},
                    dedupe_key=f"test:{ref.lease_id}:{n}",
                )
                assert event_id is not None
                ids.append(event_id)
    return ids


async def deliveries(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM event_deliveries ORDER BY event_id")


def by_lease(requests: list[Request]) -> dict[str, list[int]]:
    """Event ids as sent, per ordering key: the lease, or the customer for events of none."""
    seen: dict[str, list[int]] = defaultdict(list)
    for r in requests:
        e = r.event
        key = f"lease:{e['lease_id']}" if e["lease_id"] else f"customer:{e['customer_id']}"
        seen[key].append(e["id"])
    return seen


async def test_every_event_is_delivered_signed_once_in_order_per_lease(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    ids = await events_on(pool, leases=3, per_lease=4)
    async with receiver() as rec:
        counts, _ = await deliver(pool, hook_settings(settings, rec))
    assert counts.delivered == len(ids) and counts.pending == 0 and counts.oldest_age_s == 0
    assert sorted(r.event["id"] for r in rec.requests) == ids
    now = int(time.time())
    for r in rec.requests:
        assert verify(r.body, r.headers["collector-signature"], [SECRET], now=now)
        assert r.headers["collector-event-id"] == str(r.event["id"])
        assert r.headers["collector-event-type"] == "payment.failed"
        assert r.event["data"]["portal_url"] == (
            f"https://portal.example.com/leases/{r.event['lease_id']}/pay"
        )
    for sent in by_lease(rec.requests).values():
        assert sent == sorted(sent)
    assert {d["status"] for d in await deliveries(pool)} == {"delivered"}


async def test_a_failing_head_holds_back_its_lease_not_the_others(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    ids = await events_on(pool, leases=2, per_lease=3)
    first_of_a = ids[0]
    failures = {"left": 3}

    def script(request: Request) -> Reply:
        if request.event["id"] == first_of_a and failures["left"] > 0:
            failures["left"] -= 1
            return Reply(status=503)
        return OK

    async with receiver(script) as rec:
        counts, _ = await deliver(pool, hook_settings(settings, rec), until_nothing_pending=True)
    assert counts.delivered == len(ids) and counts.failed == 3
    sent = by_lease(rec.requests)
    for lease_events in sent.values():
        # Each event of a lease is sent only after all before it were delivered: the one
        # that failed three times comes back three times before the next is sent.
        firsts = list(dict.fromkeys(lease_events))
        assert firsts == sorted(firsts)
    [row] = [d for d in await deliveries(pool) if d["event_id"] == first_of_a]
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 4, 200)


async def test_a_receiver_that_always_fails_dead_letters_after_the_limit_then_redelivery(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    ids = await events_on(pool, leases=1, per_lease=2)
    async with receiver(lambda _: Reply(status=500)) as rec:
        counts, _ = await deliver(
            pool,
            hook_settings(settings, rec, webhook_max_attempts=3),
            until_nothing_pending=True,
        )
        # Both events died after three tries each; the dead first one did not hold the second.
        assert (counts.delivered, counts.failed, counts.dead_lettered) == (0, 4, 2)
        assert [r.event["id"] for r in rec.requests] == [ids[0]] * 3 + [ids[1]] * 3
    rows = await deliveries(pool)
    assert [(d["status"], d["attempts"], d["last_error"]) for d in rows] == [
        ("dead", 3, "HTTP 500")
    ] * 2
    lines = await outbox.list_events(pool, status=outbox.EventStatus.DEAD, type=None, limit=10)
    assert [line.id for line in lines] == ids[::-1]
    assert await outbox.redeliver_dead(pool) == 2
    async with receiver() as rec:
        counts, _ = await deliver(pool, hook_settings(settings, rec))
    assert counts.delivered == 2
    assert [r.event["id"] for r in rec.requests] == ids


async def test_a_timeout_is_a_failure_and_the_event_comes_again(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    [event_id] = await events_on(pool, leases=1, per_lease=1)
    replies = iter([Reply(hang=True), OK])
    async with receiver(lambda _: next(replies)) as rec:
        counts, _ = await deliver(
            pool, hook_settings(settings, rec, webhook_timeout_s=0.3), until_nothing_pending=True
        )
    assert (counts.delivered, counts.failed) == (1, 1)
    assert [r.event["id"] for r in rec.requests] == [event_id, event_id]
    [row] = await deliveries(pool)
    assert (row["status"], row["attempts"]) == ("delivered", 2)


async def test_a_slow_receiver_within_the_timeout_is_delivered_once(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    ids = await events_on(pool, leases=4, per_lease=1)
    async with receiver(lambda _: Reply(delay_s=0.2)) as rec:
        counts, _ = await deliver(pool, hook_settings(settings, rec, webhook_timeout_s=2.0))
    assert counts.delivered == 4 and counts.failed == 0
    assert sorted(r.event["id"] for r in rec.requests) == ids


async def test_the_circuit_opens_after_failures_in_a_row_then_a_probe_closes_it(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    ids = await events_on(pool, leases=6, per_lease=1)
    clock = {"now": 1000.0}
    healthy = {"yes": False}
    async with receiver(lambda _: OK if healthy["yes"] else Reply(status=502)) as rec:
        hooked = hook_settings(
            settings,
            rec,
            webhook_breaker_failures=2,
            webhook_breaker_cooldown_s=60,
            webhook_concurrency=1,
            webhook_batch_size=1,
            webhook_backoff_base_s=3600,
            webhook_backoff_max_s=3600,
        )
        async with open_client(hooked) as client:
            deliverer = Deliverer(pool, hooked, client=client, monotonic=lambda: clock["now"])
            counts = await deliverer.deliver_once()
            assert counts.circuits_open == ["portal"] and len(rec.requests) == 2
            counts = await deliverer.deliver_once()
            assert counts.circuits_open == ["portal"] and len(rec.requests) == 2  # held back
            healthy["yes"] = True
            clock["now"] += 61
            counts = await deliverer.deliver_once()
    # The probe succeeded and closed the circuit; the four never tried went at once (the two
    # that failed wait for their backoff).
    assert counts.circuits_open == [] and counts.delivered == 4
    assert sorted(r.event["id"] for r in rec.requests[2:]) == ids[2:]


async def test_two_secrets_during_rotation_each_verify(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    await events_on(pool, leases=1, per_lease=1)
    async with receiver() as rec:
        rotating = hook_settings(settings, rec)
        rotating = rotating.model_copy(
            update={
                "webhook_endpoints": [
                    WebhookEndpoint(
                        name="portal",
                        url=rec.url,
                        secrets=[SecretStr(SECRET), SecretStr(OLD_SECRET)],
                    )
                ]
            }
        )
        await deliver(pool, rotating)
    [r] = rec.requests
    header = r.headers["collector-signature"]
    assert header.count("v1=") == 2
    now = int(time.time())
    assert verify(r.body, header, [OLD_SECRET], now=now)
    assert verify(r.body, header, [SECRET], now=now)
    assert not verify(r.body, header, ["whsec_someone_else_0123"], now=now)
    assert not verify(r.body + b" ", header, [SECRET], now=now)
    assert not verify(r.body, header, [SECRET], now=now + 301)


async def test_a_body_holding_a_card_number_is_never_sent(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    async with pool.acquire() as conn:
        ref = await make_lease(conn, due_dates=[DAY])
        # Written around write_event's own check, as a faulty writer could.
        await conn.execute(
            "INSERT INTO outbox_events (customer_id, lease_id, ordering_key, type, as_of, body,"
            " dedupe_key) VALUES ($1, $2, $3, 'payment.failed', $4, $5, 'bad')",
            ref.customer_id,
            ref.lease_id,
            f"lease:{ref.lease_id}",
            DAY,
            {"note": "4111-1111-1111-1111"},
        )
    async with receiver() as rec:
        counts, _ = await deliver(pool, hook_settings(settings, rec))
    assert rec.requests == [] and counts.dead_lettered == 1
    [row] = await deliveries(pool)
    assert row["status"] == "dead" and row["last_error"].startswith("refused: ")
    assert "4111" not in row["last_error"]


def test_backoff_doubles_up_to_its_ceiling_with_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(1, 30):
        ceiling = min(3600, 10 * 2 ** (attempt - 1))
        waits = [backoff_s(attempt, base_s=10, max_s=3600, rng=rng) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jitter: not all at once


def test_the_breaker_opens_at_the_threshold_and_a_failed_probe_reopens_it() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, cooldown_s=10, clock=lambda: now[0])
    breaker.failed()
    breaker.failed()
    assert breaker.allowance(50) == 50
    breaker.failed()
    assert breaker.allowance(50) == 0 and breaker.is_open
    now[0] = 10.5
    assert breaker.allowance(50) == 1  # half-open: one probe
    breaker.failed()
    assert breaker.allowance(50) == 0
    now[0] = 21
    breaker.succeeded()
    assert breaker.allowance(50) == 50 and not breaker.is_open


@pytest.mark.parametrize("status", [301, 400, 404])
async def test_any_answer_but_2xx_is_a_failure(
    pool: asyncpg.Pool, settings: Settings, status: int
) -> None:
    await events_on(pool, leases=1, per_lease=1)
    async with receiver(lambda _: Reply(status=status)) as rec:
        counts, _ = await deliver(pool, hook_settings(settings, rec, webhook_max_attempts=1))
    assert counts.dead_lettered == 1 and len(rec.requests) == 1
