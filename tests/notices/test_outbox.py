"""The outbox: each event written once, in the transaction of the change it reports."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, timedelta

import asyncpg
import pytest

from collector.config import Settings
from collector.db.outbox import EventType, SensitiveBody, sensitive_paths, write_event
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from tests.factories import make_lease

DAY = date(2026, 11, 26)  # Thanksgiving: the ACH debit settles Tuesday 12-01


async def events(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """The events of changes (the notices a pass writes ahead are tested on their own)."""
    return await pool.fetch(
        "SELECT * FROM outbox_events WHERE type <> 'debit.upcoming' ORDER BY id"
    )


def types(rows: list[asyncpg.Record]) -> list[str]:
    return [r["type"] for r in rows]


async def test_a_card_payment_is_one_succeeded_event_and_the_lease_paid_off(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[DAY])
    await run_pass(pool, gateways, settings, as_of=DAY)
    await run_pass(pool, gateways, settings, as_of=DAY)  # nothing new: nothing written
    rows = await events(pool)
    assert types(rows) == ["payment.succeeded", "lease.paid_off"]
    body = rows[0]["body"]
    assert rows[0]["lease_id"] == lease.lease_id and rows[0]["customer_id"] == lease.customer_id
    assert rows[0]["ordering_key"] == f"lease:{lease.lease_id}"
    assert body["amount_cents"] == 5_000 and body["installment_ids"] == lease.installment_ids
    assert body["method"] == {"id": lease.method_id, "kind": "card", "last4": "4242"}
    assert rows[0]["as_of"] == DAY
    assert rows[1]["body"] == {"paid_cents": 5_000, "installments": 1}


async def test_a_soft_decline_says_when_the_retry_is(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, token="sandbox_card_insufficient_funds", due_dates=[DAY])
    await run_pass(pool, gateways, settings, as_of=DAY)
    [failed] = await events(pool)
    assert failed["type"] == "payment.failed"
    body = failed["body"]
    assert body["reason_class"] == "soft" and body["code"] == "insufficient_funds"
    assert body["retry_planned"] is True
    assert body["retry_on"] == (DAY + timedelta(days=settings.soft_retry_days[0])).isoformat()
    assert body["method_disabled"] is False


async def test_a_hard_decline_disables_the_method_and_says_so(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, token="sandbox_card_stolen", due_dates=[DAY])
    await run_pass(pool, gateways, settings, as_of=DAY)
    rows = await events(pool)
    assert sorted(types(rows)) == ["method.disabled", "payment.failed"]
    by_type = {r["type"]: r for r in rows}
    failed = by_type["payment.failed"]["body"]
    assert failed["reason_class"] == "hard" and failed["retry_planned"] is False
    assert "retry_on" not in failed
    disabled = by_type["method.disabled"]
    assert disabled["lease_id"] is None
    assert disabled["ordering_key"] == f"customer:{lease.customer_id}"
    assert disabled["body"]["method"]["id"] == lease.method_id
    assert disabled["body"]["was_primary"] is True
    assert disabled["as_of"] == DAY  # the decline's business date, not the server's


async def test_an_ach_debit_is_pending_then_returned(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, token="sandbox_ach_return_R01", due_dates=[DAY])
    await run_pass(pool, gateways, settings, as_of=DAY)
    await run_pass(pool, gateways, settings, as_of=DAY + timedelta(days=7))
    rows = await events(pool)
    assert types(rows)[:2] == ["payment.pending_settlement", "ach.returned"]
    returned = rows[1]["body"]
    assert returned["code"] == "R01" and returned["return_category"] == "nsf"
    assert returned["reversed_paid"] is False and returned["retry_planned"] is True


async def test_no_event_for_a_change_that_rolled_back(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[DAY])
        await conn.execute(
            "UPDATE payment_methods SET status = 'disabled' WHERE id = $1", lease.method_id
        )
        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                await conn.execute(
                    "UPDATE payment_methods SET status = 'active' WHERE id = $1", lease.method_id
                )
                await conn.execute(
                    "UPDATE payment_methods SET status = 'disabled' WHERE id = $1",
                    lease.method_id,
                )
                raise ZeroDivisionError
    assert types(await events(pool)) == ["method.disabled"]


async def test_bodies_hold_no_token_and_no_number(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    tokens = [
        "sandbox_card_ok",
        "sandbox_card_stolen",
        "sandbox_card_insufficient_funds",
        "sandbox_ach_ok",
        "sandbox_ach_return_R02",
    ]
    async with pool.acquire() as conn:
        for token in tokens:
            await make_lease(conn, token=token, due_dates=[DAY])
    await run_pass(pool, gateways, settings, as_of=DAY)
    await run_pass(pool, gateways, settings, as_of=DAY + timedelta(days=7))
    rows = await events(pool)
    assert {EventType(r["type"]) for r in rows} >= {
        EventType.PAYMENT_SUCCEEDED,
        EventType.PAYMENT_FAILED,
        EventType.PAYMENT_PENDING_SETTLEMENT,
        EventType.ACH_RETURNED,
        EventType.METHOD_DISABLED,
        EventType.LEASE_PAID_OFF,
    }
    for row in rows:
        text = json.dumps(row["body"])
        assert not any(token in text for token in tokens), text
        assert sensitive_paths(row["body"]) == []


async def test_write_event_refuses_a_body_with_a_card_number(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[DAY])
        with pytest.raises(SensitiveBody, match=r"at \.note"):
            await write_event(
                conn,
                type=EventType.PRIMARY_CHANGED,
                customer_id=lease.customer_id,
                lease_id=None,
                as_of=DAY,
                body={"note": "card 4111 1111 1111 1111"},
            )
    assert await events(pool) == []


async def test_a_primary_change_close_to_a_due_date_carries_the_warning(
    pool: asyncpg.Pool,
) -> None:
    from collector.db.portal import NewMethod, add_method, change_primary

    async with pool.acquire() as conn:
        lease = await make_lease(conn, due_dates=[DAY + timedelta(days=1)])
    new = await add_method(
        pool,
        lease.customer_id,
        NewMethod(
            kind="card",
            gateway="sandbox_card",
            token="sandbox_card_ok",
            brand="Visa",
            bank_name=None,
            last4="1881",
            fingerprint=None,
        ),
        make_primary=False,
        today=DAY,
    )
    await change_primary(pool, lease.customer_id, new.id, today=DAY, notice_days=2)
    await change_primary(pool, lease.customer_id, new.id, today=DAY)  # no change: no event
    [changed] = await events(pool)
    assert changed["type"] == "primary.changed" and changed["lease_id"] is None
    body = changed["body"]
    assert body["method"]["id"] == new.id and body["method"]["last4"] == "1881"
    assert body["previous_method_id"] == lease.method_id
    assert body["next_due_on"] == (DAY + timedelta(days=1)).isoformat()
    assert "less than 2 days away" in body["warning"]


async def test_an_answer_recorded_by_any_statement_gets_the_batch_paths_event(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    """The batch paths write their events themselves; any other writer of the journal gets
    the same event from the trigger at commit (here a settlement recorded by hand, through
    the journal's own function, as a path added later might)."""
    async with pool.acquire() as conn:
        by_batch = await make_lease(conn, token="sandbox_ach_ok", due_dates=[DAY])
        by_hand = await make_lease(conn, token="sandbox_ach_ok", due_dates=[DAY])
    await run_pass(pool, gateways, settings, as_of=DAY)
    settled_on = DAY + timedelta(days=7)
    async with pool.acquire() as conn, conn.transaction():
        attempt_id = await conn.fetchval(
            "UPDATE charge_attempts SET status = 'succeeded', resolved_at = now()"
            " WHERE installment_id = $1 RETURNING id",
            by_hand.installment_ids[0],
        )
        await conn.execute(
            "SELECT money_follow_v1(ARRAY[$1::bigint], ARRAY['settled'], ARRAY[false],"
            " ARRAY[NULL::date], ARRAY[NULL::text], $2, 'settlement')",
            attempt_id,
            settled_on,
        )
        # Not yet: the trigger writes it when the transaction commits.
        assert not await conn.fetchval(
            "SELECT count(*) FROM outbox_events WHERE dedupe_key = $1",
            f"payment.succeeded:{attempt_id}",
        )
    await run_pass(pool, gateways, settings, as_of=settled_on)  # settles the other one

    def shape(lease_id: int) -> list[tuple[str, dict[str, object]]]:
        ids = {"attempt_id", "installment_ids", "method"}
        return [
            (r["type"], {k: v for k, v in r["body"].items() if k not in ids})
            for r in rows
            if r["lease_id"] == lease_id
        ]

    rows = await events(pool)
    assert [t for t, _ in shape(by_batch.lease_id)] == [
        "payment.pending_settlement",
        "payment.succeeded",
        "lease.paid_off",
    ]
    assert shape(by_hand.lease_id) == shape(by_batch.lease_id)
