from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from collector.api.payment_methods import primary_change_warning
from collector.sensitive import looks_like_account_number
from tests.factories import LeaseRef, make_lease, put_state

# The business date of tests/api/conftest.py's pinned clock (noon in New York).
TODAY = date(2026, 11, 26)


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    """Every row a payment-method request could touch, to show a refused request wrote nothing."""
    async with pool.acquire() as conn:
        return {
            table: [dict(row) for row in await conn.fetch(f"SELECT * FROM {table} ORDER BY id")]
            for table in ("customers", "payment_methods", "leases", "installments")
        }


async def add_method(
    conn: asyncpg.pool.PoolConnectionProxy,
    customer_id: int,
    *,
    token: str = "sandbox_card_ok",
    status: str = "active",
    kind: str = "card",
) -> int:
    method_id: int = await conn.fetchval(
        "INSERT INTO payment_methods (customer_id, kind, gateway, token, last4, status)"
        " VALUES ($1, $2, $3, $4, '1111', $5) RETURNING id",
        customer_id,
        kind,
        f"sandbox_{kind}",
        token,
        status,
    )
    return method_id


async def primary_of(conn: asyncpg.pool.PoolConnectionProxy, customer_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM payment_methods WHERE customer_id = $1 AND is_primary", customer_id
    )
    return [row["id"] for row in rows]


NEW_CARD = {"kind": "card", "gateway": "sandbox_card", "token": "pm_1MqLiJLkdIwHu7ixUEgbFdYF"}


# -- Listing ------------------------------------------------------------------------------------


async def test_methods_are_listed_primary_first_without_tokens(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
        ach = await add_method(conn, lease.customer_id, token="sandbox_ach_ok", kind="ach")
        await conn.execute("UPDATE payment_methods SET bank_name = 'Chase' WHERE id = $1", ach)
        disabled = await add_method(conn, lease.customer_id, status="disabled")

    response = await client.get(f"/v1/customers/{lease.customer_id}/payment-methods")

    assert response.status_code == 200
    body = response.json()
    assert [(m["id"], m["is_primary"], m["status"]) for m in body] == [
        (lease.method_id, True, "active"),
        (ach, False, "active"),
        (disabled, False, "disabled"),
    ]
    assert body[1] == {
        "id": ach,
        "kind": "ach",
        "gateway": "sandbox_ach",
        "brand": None,
        "bank_name": "Chase",
        "last4": "1111",
        "status": "active",
        "is_primary": False,
        "exp_month": None,
        "exp_year": None,
    }
    assert "sandbox_card_ok" not in response.text
    assert "sandbox_ach_ok" not in response.text


async def test_customer_without_methods_has_an_empty_list(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[], with_method=False)

    response = await client.get(f"/v1/customers/{lease.customer_id}/payment-methods")

    assert (response.status_code, response.json()) == (200, [])


async def test_methods_of_an_unknown_customer_are_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/customers/987654/payment-methods")

    assert (response.status_code, response.json()) == (404, {"detail": "no such customer"})


# -- Registering --------------------------------------------------------------------------------


async def test_a_gateway_token_is_registered_not_primary_and_never_sent_back(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={**NEW_CARD, "brand": "visa", "last4": "4242"},
    )

    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": body["id"],
        "kind": "card",
        "gateway": "sandbox_card",
        "brand": "visa",
        "bank_name": None,
        "last4": "4242",
        "status": "active",
        "is_primary": False,
        "exp_month": None,
        "exp_year": None,
    }
    assert NEW_CARD["token"] not in response.text
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM payment_methods WHERE id = $1", body["id"])
        assert row is not None
        assert (row["customer_id"], row["token"]) == (lease.customer_id, NEW_CARD["token"])
        assert await primary_of(conn, lease.customer_id) == [lease.method_id]


async def test_a_method_of_another_kind_than_its_gateway_charges_is_refused(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    # The gateway says what it charges (method_kinds): a bank token under the card gateway
    # would be charged as a card. (tests/api/test_manual_pay_guards.py: nor is one charged.)
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={"kind": "ach", "gateway": "sandbox_card", "token": "sandbox_ach_ok"},
    )

    assert response.status_code == 422
    assert response.json()["detail"].startswith("gateway sandbox_card charges card methods")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM payment_methods") == 1


async def test_a_new_method_made_primary_replaces_the_old_one_and_reopens_retries(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY - timedelta(days=10)])
        await put_state(conn, lease.installment_ids[0], status="overdue", next_attempt_on=None)

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={**NEW_CARD, "make_primary": True},
    )

    assert response.status_code == 201
    assert response.json()["is_primary"] is True
    async with pool.acquire() as conn:
        assert await primary_of(conn, lease.customer_id) == [response.json()["id"]]
        retry_on = await conn.fetchval(
            "SELECT next_attempt_on FROM installments WHERE id = $1", lease.installment_ids[0]
        )
    assert retry_on == TODAY


async def test_first_method_of_a_customer_can_be_made_primary(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[], with_method=False)

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={**NEW_CARD, "make_primary": True},
    )

    assert response.status_code == 201
    async with pool.acquire() as conn:
        assert await primary_of(conn, lease.customer_id) == [response.json()["id"]]


@pytest.mark.parametrize(
    "token",
    [
        "4242424242424242",  # a test Visa number
        "tok 4242-4242-4242-4242",  # the same, typed with separators inside a longer string
        "4242 4242 4242 4242",
        "4000056655665557",
        "378282246310005",  # Amex, 15 digits
        "4242424242424241",  # fails Luhn: refused all the same
        "000123456789",  # 12 digits: a bank account number
        "0001-2345-6789",
        "acct_9876543210987",  # 13 digits inside a token
        "x" * 10 + "1234567890123456789012",  # longer than any card: still refused
    ],
)
async def test_a_card_or_account_number_is_refused_and_nothing_stored(
    client: httpx.AsyncClient, pool: asyncpg.Pool, token: str
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    before = await snapshot(pool)

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={**NEW_CARD, "token": token, "make_primary": True},
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "card or bank account number" in detail
    assert token not in detail
    assert await snapshot(pool) == before


@pytest.mark.parametrize(
    "token",
    [
        "sandbox_card_ok",
        "sandbox_ach_return_R01",
        "pm_1MqLiJLkdIwHu7ixUEgbFdYF",
        "tok_visa",
        "cus_12345678901x",  # 11 digits and letters: an ordinary reference
        "ref 1234-5678-9012 x",  # 12 digits in a longer string: short of a card number
        "12345678901",  # 11 digits: too short for either
    ],
)
def test_gateway_tokens_do_not_look_like_account_numbers(token: str) -> None:
    assert not looks_like_account_number(token)


async def test_an_unknown_gateway_is_refused_naming_the_known_ones(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    before = await snapshot(pool)

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        json={**NEW_CARD, "gateway": "stripe_card"},
    )

    assert response.status_code == 422
    assert response.json() == {
        "detail": "unknown gateway; known gateways: sandbox_ach, sandbox_card"
    }
    assert await snapshot(pool) == before


@pytest.mark.parametrize(
    "change",
    [
        {"last4": "42a2"},
        {"last4": "12345"},
        {"last4": "424"},
        {"kind": "paypal"},
        {"token": ""},
        {"gateway": ""},
        {"token": "x" * 256},
        {"is_primary": True},  # not a field: refused, never ignored
        {"token": "tok\x00en"},  # PostgreSQL text cannot hold NUL
        {"brand": "vi\nsa"},
    ],
)
async def test_an_invalid_new_method_is_422_and_nothing_stored(
    client: httpx.AsyncClient, pool: asyncpg.Pool, change: dict[str, object]
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    before = await snapshot(pool)

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods", json={**NEW_CARD, **change}
    )

    assert response.status_code == 422
    assert await snapshot(pool) == before


async def test_a_token_with_a_lone_surrogate_is_422(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    before = await snapshot(pool)

    response = await client.post(
        f"/v1/customers/{lease.customer_id}/payment-methods",
        content=b'{"kind": "card", "gateway": "sandbox_card", "token": "tok\\ud800"}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert await snapshot(pool) == before


async def test_a_method_for_an_unknown_customer_is_404_and_nothing_stored(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    before = await snapshot(pool)

    response = await client.post(
        "/v1/customers/987654/payment-methods", json={**NEW_CARD, "make_primary": True}
    )

    assert (response.status_code, response.json()) == (404, {"detail": "no such customer"})
    assert await snapshot(pool) == before


# -- Changing the primary method ----------------------------------------------------------------


async def customer_with_second_method(
    pool: asyncpg.Pool, due_dates: list[date]
) -> tuple[LeaseRef, int]:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=due_dates)
        other = await add_method(conn, lease.customer_id, token="sandbox_ach_ok", kind="ach")
    return lease, other


async def test_primary_change_the_day_before_a_due_date_warns(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease, new = await customer_with_second_method(pool, [TODAY + timedelta(days=1)])

    response = await client.put(
        f"/v1/customers/{lease.customer_id}/primary-payment-method",
        json={"payment_method_id": new},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["customer_id"] == lease.customer_id
    assert body["next_due_on"] == "2026-11-27"
    assert body["warning"] is not None
    assert "2026-11-27" in body["warning"]
    assert "previous payment method" in body["warning"]
    assert body["primary_payment_method"] == {
        "id": new,
        "kind": "ach",
        "gateway": "sandbox_ach",
        "brand": None,
        "bank_name": None,
        "last4": "1111",
        "status": "active",
        "is_primary": True,
        "exp_month": None,
        "exp_year": None,
    }
    async with pool.acquire() as conn:
        assert await primary_of(conn, lease.customer_id) == [new]


async def test_primary_change_ten_days_before_a_due_date_does_not_warn(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease, new = await customer_with_second_method(pool, [TODAY + timedelta(days=10)])

    response = await client.put(
        f"/v1/customers/{lease.customer_id}/primary-payment-method",
        json={"payment_method_id": new},
    )

    assert response.status_code == 200
    assert (response.json()["warning"], response.json()["next_due_on"]) == (None, "2026-12-06")
    async with pool.acquire() as conn:
        assert await primary_of(conn, lease.customer_id) == [new]


async def test_the_warning_looks_at_scheduled_installments_of_active_leases_only(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease, new = await customer_with_second_method(
        pool, [TODAY - timedelta(days=5), TODAY + timedelta(days=20)]
    )
    async with pool.acquire() as conn:
        closed = await conn.fetchval(
            "INSERT INTO leases (customer_id, store, agreement_ref, status)"
            " VALUES ($1, 'S', 'AGR-CLOSED', 'closed') RETURNING id",
            lease.customer_id,
        )
        # Due tomorrow, but on a closed lease: nobody will collect it.
        await conn.execute(
            "INSERT INTO installments"
            " (lease_id, customer_id, seq, due_on, next_attempt_on, amount_cents)"
            " SELECT id, customer_id, 1, $2::date, $2::date, 100 FROM leases WHERE id = $1",
            closed,
            TODAY + timedelta(days=1),
        )

    body = (
        await client.put(
            f"/v1/customers/{lease.customer_id}/primary-payment-method",
            json={"payment_method_id": new},
        )
    ).json()

    assert (body["warning"], body["next_due_on"]) == (None, "2026-12-16")


def test_warning_threshold_counts_whole_days() -> None:
    assert primary_change_warning(TODAY, today=TODAY, notice_days=2) is not None
    assert primary_change_warning(TODAY + timedelta(days=1), today=TODAY, notice_days=2)
    assert primary_change_warning(TODAY + timedelta(days=2), today=TODAY, notice_days=2) is None
    assert primary_change_warning(None, today=TODAY, notice_days=2) is None
    assert primary_change_warning(TODAY, today=TODAY, notice_days=0) is None


async def test_primary_change_gives_waiting_overdue_installments_a_retry_today(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease, new = await customer_with_second_method(
        pool,
        [
            TODAY - timedelta(days=40),  # hard declined: no retry planned
            TODAY - timedelta(days=10),  # soft declined: retry already planned
            TODAY + timedelta(days=20),  # scheduled
        ],
    )
    hard, soft, scheduled = lease.installment_ids
    async with pool.acquire() as conn:
        await put_state(conn, hard, status="overdue", next_attempt_on=None, attempts=1)
        await put_state(
            conn, soft, status="overdue", next_attempt_on=TODAY + timedelta(days=3), attempts=1
        )
        await conn.execute(
            "UPDATE payment_methods SET status = 'disabled' WHERE id = $1", lease.method_id
        )
        # Another lease of the same customer, charged off: its overdue installment stays as is.
        charged_off = await conn.fetchval(
            "INSERT INTO leases (customer_id, store, agreement_ref, status)"
            " VALUES ($1, 'S', 'AGR-CO', 'charged_off') RETURNING id",
            lease.customer_id,
        )
        written_off = await conn.fetchval(
            "INSERT INTO installments"
            " (lease_id, customer_id, seq, due_on, next_attempt_on, amount_cents)"
            " SELECT id, customer_id, 1, $2::date, $2::date, 100 FROM leases WHERE id = $1 RETURNING id",
            charged_off,
            TODAY - timedelta(days=90),
        )
        await put_state(conn, written_off, status="overdue", next_attempt_on=None)

    response = await client.put(
        f"/v1/customers/{lease.customer_id}/primary-payment-method",
        json={"payment_method_id": new},
    )

    assert response.status_code == 200
    async with pool.acquire() as conn:
        rows = {
            row["id"]: (row["status"], row["next_attempt_on"])
            for row in await conn.fetch("SELECT id, status, next_attempt_on FROM installments")
        }
        assert await primary_of(conn, lease.customer_id) == [new]
    assert rows == {
        hard: ("overdue", TODAY),
        soft: ("overdue", TODAY + timedelta(days=3)),
        scheduled: ("scheduled", TODAY + timedelta(days=20)),
        written_off: ("overdue", None),
    }


async def test_choosing_the_current_primary_again_is_the_same_answer_and_reopens_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(
            conn, due_dates=[TODAY - timedelta(days=30), TODAY + timedelta(days=1)]
        )
        # Retries exhausted on the primary method, which is still active.
        await put_state(
            conn, lease.installment_ids[0], status="overdue", next_attempt_on=None, attempts=4
        )
    url = f"/v1/customers/{lease.customer_id}/primary-payment-method"
    before = await snapshot(pool)

    first = await client.put(url, json={"payment_method_id": lease.method_id})
    second = await client.put(url, json={"payment_method_id": lease.method_id})

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["primary_payment_method"]["id"] == lease.method_id
    # Presenting the same card again would go past the reattempt limits that stopped the engine.
    assert await snapshot(pool) == before


async def test_another_customers_method_is_422_and_says_no_more_than_a_missing_one(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        mine = await make_lease(conn, due_dates=[TODAY - timedelta(days=10)])
        theirs = await make_lease(conn, due_dates=[])
        await put_state(conn, mine.installment_ids[0], status="overdue", next_attempt_on=None)
    assert theirs.method_id is not None
    missing = theirs.method_id + 1000
    url = f"/v1/customers/{mine.customer_id}/primary-payment-method"
    before = await snapshot(pool)

    foreign = await client.put(url, json={"payment_method_id": theirs.method_id})
    absent = await client.put(url, json={"payment_method_id": missing})

    assert foreign.status_code == absent.status_code == 422
    assert foreign.json()["detail"] == absent.json()["detail"].replace(
        str(missing), str(theirs.method_id)
    )
    assert "not a method of this customer" in foreign.json()["detail"]
    assert await snapshot(pool) == before


async def test_a_disabled_method_cannot_become_primary(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[TODAY + timedelta(days=5)])
        disabled = await add_method(conn, lease.customer_id, status="disabled")
    before = await snapshot(pool)

    response = await client.put(
        f"/v1/customers/{lease.customer_id}/primary-payment-method",
        json={"payment_method_id": disabled},
    )

    assert response.status_code == 422
    assert "disabled" in response.json()["detail"]
    assert await snapshot(pool) == before


async def test_primary_change_of_an_unknown_customer_is_404(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    before = await snapshot(pool)

    response = await client.put(
        "/v1/customers/987654/primary-payment-method",
        json={"payment_method_id": lease.method_id},
    )

    assert (response.status_code, response.json()) == (404, {"detail": "no such customer"})
    assert await snapshot(pool) == before


@pytest.mark.parametrize(
    "body",
    [{}, {"payment_method_id": 0}, {"payment_method_id": "one"}, {"payment_method_id": 1, "x": 1}],
)
async def test_an_invalid_primary_change_is_422(
    client: httpx.AsyncClient, pool: asyncpg.Pool, body: dict[str, object]
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[])
    before = await snapshot(pool)

    response = await client.put(
        f"/v1/customers/{lease.customer_id}/primary-payment-method", json=body
    )

    assert response.status_code == 422
    assert await snapshot(pool) == before


# -- Concurrency --------------------------------------------------------------------------------


async def test_concurrent_primary_changes_leave_exactly_one_primary(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    lease, other = await customer_with_second_method(pool, [TODAY + timedelta(days=5)])
    assert lease.method_id is not None
    choices = [lease.method_id, other] * 6
    statuses: list[int] = []

    async def change(method_id: int) -> None:
        response = await client.put(
            f"/v1/customers/{lease.customer_id}/primary-payment-method",
            json={"payment_method_id": method_id},
        )
        statuses.append(response.status_code)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for method_id in choices:
                tg.start_soon(change, method_id)

    assert statuses == [200] * len(choices)
    async with pool.acquire() as conn:
        assert len(await primary_of(conn, lease.customer_id)) == 1


async def test_concurrent_first_methods_made_primary_do_not_collide(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    # No method rows to lock yet: the customer row is what makes these queue.
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[], with_method=False)
    statuses: list[int] = []

    async def register(n: int) -> None:
        response = await client.post(
            f"/v1/customers/{lease.customer_id}/payment-methods",
            json={**NEW_CARD, "token": f"tok_{n}", "make_primary": True},
        )
        statuses.append(response.status_code)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(register, n)

    assert statuses == [201] * 6
    async with pool.acquire() as conn:
        assert len(await primary_of(conn, lease.customer_id)) == 1
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM payment_methods WHERE customer_id = $1", lease.customer_id
            )
            == 6
        )
