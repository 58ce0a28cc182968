"""Manual pay through the HTTP API, on a real database and the sandbox gateway."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import anyio
import asyncpg
import httpx

from collector.config import Settings
from collector.db.attempts import ClaimCursor
from collector.db.runs import start_run
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.jobs.presentment import claim
from tests.factories import installment, make_lease, put_state

TODAY = date(2026, 11, 26)
LAST_MONTH = TODAY - timedelta(days=31)
LAST_WEEK = TODAY - timedelta(days=7)


async def _sandbox_taken(conn: asyncpg.pool.PoolConnectionProxy) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(amount_cents), 0) AS cents FROM sandbox.charges"
        " WHERE status IN ('succeeded', 'processing')"
    )
    return row["n"], row["cents"]


async def _overdue_lease(pool: asyncpg.Pool, token: str = "sandbox_card_ok"):  # type: ignore[no-untyped-def]
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, token=token, due_dates=[LAST_MONTH, LAST_WEEK, TODAY], amount_cents=5_000
        )
        # The older one was attempted and declined; the newer one was never attempted: both
        # are overdue to the customer.
        await put_state(
            conn,
            lease.installment_ids[0],
            status="overdue",
            attempts=1,
            next_attempt_on=TODAY + timedelta(days=3),
        )
    return lease


def _pay(client: httpx.AsyncClient, lease_id: int, key: str, body: dict | None = None):  # type: ignore[no-untyped-def]
    return client.post(
        f"/v1/leases/{lease_id}/payments", json=body or {}, headers={"Idempotency-Key": key}
    )


async def test_paying_the_whole_overdue_amount_pays_the_oldest_installments(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await _overdue_lease(pool)
    response = await _pay(client, lease.lease_id, "pay-1")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["amount_cents"] == 10_000
    assert body["status"] == "succeeded"
    assert body["allocations"] == [
        {"installment_id": lease.installment_ids[0], "amount_cents": 5_000},
        {"installment_id": lease.installment_ids[1], "amount_cents": 5_000},
    ]
    async with pool.acquire() as conn:
        for iid in lease.installment_ids[:2]:
            row = await installment(conn, iid)
            assert (row["status"], row["paid_cents"], row["next_attempt_on"]) == (
                "paid",
                5_000,
                None,
            )
        today = await installment(conn, lease.installment_ids[2])
        assert (today["status"], today["paid_cents"]) == ("scheduled", 0)
        attempt = await conn.fetchrow(
            "SELECT * FROM charge_attempts WHERE payment_id = $1", body["payment_id"]
        )
        assert (attempt["source"], attempt["status"], attempt["amount_cents"]) == (
            "manual",
            "succeeded",
            10_000,
        )
        assert await _sandbox_taken(conn) == (1, 10_000)


async def test_a_partial_payment_leaves_the_rest_overdue(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await _overdue_lease(pool)
    response = await _pay(client, lease.lease_id, "pay-part", {"amount_cents": 7_000})
    assert response.status_code == 201, response.text
    async with pool.acquire() as conn:
        first = await installment(conn, lease.installment_ids[0])
        second = await installment(conn, lease.installment_ids[1])
    assert (first["status"], first["paid_cents"]) == ("paid", 5_000)
    # Restored to its state before the payment: never attempted, so still collectable.
    assert (second["status"], second["paid_cents"], second["next_attempt_on"]) == (
        "scheduled",
        2_000,
        LAST_WEEK,
    )
    detail = await client.get(f"/v1/leases/{lease.lease_id}")
    if detail.status_code == 200:  # the read API may be built separately
        assert detail.json()["overdue_cents"] == 3_000


async def test_a_replay_returns_the_first_answer_without_charging_again(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await _overdue_lease(pool)
    first = await _pay(client, lease.lease_id, "same-key", {"amount_cents": 5_000})
    again = await _pay(client, lease.lease_id, "same-key", {"amount_cents": 5_000})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other_body = await _pay(client, lease.lease_id, "same-key", {"amount_cents": 4_000})
    assert other_body.status_code == 422
    assert "different request body" in other_body.json()["detail"]
    async with pool.acquire() as conn:
        assert await _sandbox_taken(conn) == (1, 5_000)
        assert await conn.fetchval("SELECT count(*) FROM payments") == 1


async def test_a_soft_decline_is_402_and_restores_the_installments(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await _overdue_lease(pool, token="sandbox_card_insufficient_funds")
    async with pool.acquire() as conn:
        before = [dict(await installment(conn, iid)) for iid in lease.installment_ids]
    response = await _pay(client, lease.lease_id, "declined")
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_funds"
    async with pool.acquire() as conn:
        after = [dict(await installment(conn, iid)) for iid in lease.installment_ids]
        method = await conn.fetchval(
            "SELECT status FROM payment_methods WHERE id = $1", lease.method_id
        )
        payment = await conn.fetchval("SELECT status FROM payments")
    for b, a in zip(before, after, strict=True):
        assert (a["status"], a["paid_cents"], a["next_attempt_on"]) == (
            b["status"],
            b["paid_cents"],
            b["next_attempt_on"],
        )
    assert (method, payment) == ("active", "declined")
    # The replay answers the same decline, and charges nothing.
    replay = await _pay(client, lease.lease_id, "declined")
    assert (replay.status_code, replay.json()) == (402, response.json())


async def test_a_hard_decline_disables_the_method(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await _overdue_lease(pool, token="sandbox_card_stolen")
    response = await _pay(client, lease.lease_id, "stolen")
    assert (response.status_code, response.json()["code"]) == (402, "stolen_card")
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT status FROM payment_methods WHERE id = $1", lease.method_id)
            == "disabled"
        )


async def test_requests_that_cannot_be_done_are_4xx_and_charge_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await _overdue_lease(pool)
    async with pool.acquire() as conn:
        other = await make_lease(conn, due_dates=[TODAY])
        nothing_due = await make_lease(conn, due_dates=[TODAY + timedelta(days=5)])
    cases = [
        (
            _pay(client, lease.lease_id, "k1", {"amount_cents": 10_001}),
            422,
            "more than the overdue",
        ),
        (_pay(client, lease.lease_id, "k2", {"amount_cents": 0}), 422, None),
        (_pay(client, lease.lease_id, "k3", {"amount_cents": -5}), 422, None),
        (_pay(client, lease.lease_id, "k4", {"amount_cents": "lots"}), 422, None),
        (
            _pay(client, lease.lease_id, "k5", {"payment_method_id": other.method_id}),
            422,
            "cannot be used",
        ),
        (_pay(client, lease.lease_id, "k6", {"surprise": 1}), 422, None),
        (_pay(client, nothing_due.lease_id, "k7"), 422, "nothing is overdue"),
        (_pay(client, 999_999, "k8"), 404, "does not exist"),
        (client.post(f"/v1/leases/{lease.lease_id}/payments", json={}), 422, None),
        (
            client.post(
                f"/v1/leases/{lease.lease_id}/payments",
                json={},
                headers={"Idempotency-Key": "k9", "Authorization": "Bearer wrong-token-xxxxxxxxxx"},
            ),
            401,
            None,
        ),
    ]
    for pending, status, text in cases:
        response = await pending
        assert response.status_code == status, response.text
        if text:
            assert text in response.json()["detail"]
    async with pool.acquire() as conn:
        assert await _sandbox_taken(conn) == (0, 0)
        assert await conn.fetchval("SELECT count(*) FROM payments") == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM charge_attempts WHERE source = 'manual'") == 0
        )


async def test_a_batch_charging_the_installment_now_is_409(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await _overdue_lease(pool)
    # A pass has claimed the installments due for retry/collection and not answered yet.
    run_id = await start_run(pool, as_of=TODAY, host="batch", pid=1)
    claimed, _ = await claim(
        pool,
        as_of=TODAY,
        cursor=ClaimCursor(),
        limit=10,
        gateways=["sandbox_card"],
        run_id=run_id,
        deadline_s=600,
    )
    assert {c.installment_id for c in claimed} >= {lease.installment_ids[1]}
    response = await _pay(client, lease.lease_id, "during-batch")
    assert response.status_code == 409
    assert "in progress" in response.json()["detail"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM payments") == 0
        assert await _sandbox_taken(conn) == (0, 0)


async def test_two_requests_with_one_key_at_once_charge_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease = await _overdue_lease(pool)
    statuses: list[int] = []

    async def pay() -> None:
        statuses.append((await _pay(client, lease.lease_id, "double-click")).status_code)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(pay)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    async with pool.acquire() as conn:
        assert await _sandbox_taken(conn) == (1, 10_000)


async def test_manual_pay_racing_a_batch_pass_never_charges_twice(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
) -> None:
    leases = [await _overdue_lease(pool) for _ in range(60)]
    statuses: list[int] = []

    async def pay(lease_id: int) -> None:
        statuses.append((await _pay(client, lease_id, f"race-{lease_id}")).status_code)

    async def batch() -> None:
        await run_pass(pool, gateways, settings, as_of=TODAY)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(batch)
            for lease in leases:
                tg.start_soon(pay, lease.lease_id)
    assert set(statuses) <= {201, 409}
    async with pool.acquire() as conn:
        taken_n, taken_cents = await _sandbox_taken(conn)
        paid = await conn.fetchval("SELECT sum(paid_cents) FROM installments")
        attempts = await conn.fetchval(
            "SELECT count(*) FROM charge_attempts WHERE status = 'succeeded'"
        )
    # Every cent the gateway took is paid on exactly one installment (paid_cents can never
    # exceed the amount due: a CHECK), and every charge is one succeeded attempt.
    assert taken_cents == paid
    assert taken_n == attempts


async def test_an_in_doubt_manual_payment_is_settled_by_reconciliation(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    gateways: Mapping[str, Gateway],
    settings: Settings,
) -> None:
    lease = await _overdue_lease(pool, token="sandbox_card_timeout_taken")
    response = await _pay(client, lease.lease_id, "lost-answer")
    assert response.status_code == 202
    assert response.json()["status"] == "in_doubt"
    async with pool.acquire() as conn:
        assert (await installment(conn, lease.installment_ids[0]))["status"] == "processing"
    # The batch must not charge these installments while the payment is in doubt, and its
    # reconciliation resolves the payment by looking the key up.
    result = await run_pass(pool, gateways, settings, as_of=TODAY)
    assert result.counts.reconciled == 1
    async with pool.acquire() as conn:
        for iid in lease.installment_ids[:2]:
            assert (await installment(conn, iid))["status"] == "paid"
        assert await conn.fetchval("SELECT status FROM payments") == "succeeded"
        taken = await _sandbox_taken(conn)
    # One manual charge of 10,000 (the lost answer, found) and the batch's charge of today's.
    assert taken == (2, 15_000)


async def test_the_daemon_paths_share_one_rate_limit_per_gateway(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], database_url: str
) -> None:
    from collector.api.app import create_app
    from collector.jobs.charging import Charger
    from tests.api.conftest import API_TOKEN, NOW

    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        api_tokens=[API_TOKEN],  # type: ignore[list-item]
        rate_limits={"sandbox_card": 10},
    )
    overdue = []
    async with pool.acquire() as conn:
        for _ in range(10):
            await make_lease(conn, due_dates=[TODAY])
        for _ in range(5):
            # Overdue, its next automatic attempt days away: only manual pay charges it.
            lease = await make_lease(conn, due_dates=[LAST_MONTH])
            await put_state(
                conn,
                lease.installment_ids[0],
                status="overdue",
                attempts=1,
                next_attempt_on=TODAY + timedelta(days=3),
            )
            overdue.append(lease)
    charger = Charger.for_settings(gateways, settings)
    app = create_app(settings, pool, gateways, clock=lambda: NOW, charger=charger)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://portal.test",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as http:
        started = anyio.current_time()
        result = await run_pass(pool, gateways, settings, as_of=TODAY, charger=charger)
        for lease in overdue:
            assert (await _pay(http, lease.lease_id, f"k-{lease.lease_id}")).status_code == 201
        elapsed = anyio.current_time() - started
    # The pass used the whole burst of 10; each manual payment then waits for the shared
    # bucket (10 a second): with a bucket per path, nothing would wait at all.
    assert result.counts.succeeded == 10
    assert elapsed >= 0.4
