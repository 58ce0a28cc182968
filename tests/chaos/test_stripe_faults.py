"""Gateway faults at the HTTP boundary: passes through the real Stripe adapters and SDK against
a fake Stripe API that injects bursts of 5xx and 429s, connection resets before and after the
charge was taken, timeouts after it was taken, answers that arrive after the client's timeout,
and a search index that lags (tests/chaos/faulty_stripe.py).

While the faults last, passes charge and reconcile through them. Then the fake heals, and
passes run until nothing the fake took is left in doubt; what is still in doubt then was never
taken, and stays in doubt (the engine does not believe Stripe's "not found" before its search
can lag, an hour) until that hour is over: the test moves those attempts' last send an hour
and a bit into the past, as the clock would, and one more pass settles them as not taken.
No key is ever charged twice, and the fake's PaymentIntents are the ledger's.
"""

from __future__ import annotations

import random

import anyio
import asyncpg
import pytest

from collector.db.seed import DemoCustomer, insert_customers
from tests.chaos.conftest import Scale
from tests.chaos.faulty_stripe import serve_faulty_stripe
from tests.chaos.helpers import (
    assert_audit_clean,
    assert_gateway_matches_ledger,
    business_today,
    chaos_settings,
    describe_statuses,
    pass_in_process,
    statuses,
    unresolved,
    wait_until,
)
from tests.gateways.fake_stripe import API_KEY

pytestmark = [
    pytest.mark.chaos,
    # The SDK's HTTPXClient hands httpx the encoded form as `data=`, which httpx deprecates.
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

GATEWAYS = ["stripe_card", "stripe_ach"]
# The fake's test payment methods (tests/gateways/fake_stripe.py), with how often each is met.
METHODS = (
    (70, "card", "pm_card_ok"),
    (8, "card", "pm_card_insufficient_funds"),
    (4, "card", "pm_card_stolen"),
    (18, "ach", "pm_ach_ok"),
)
CLIENT_TIMEOUT_S = 1.0


async def _seed(pool: asyncpg.Pool, n: int, rng: random.Random) -> None:
    today = business_today()
    customers = []
    for i in range(n):
        _, kind, method = rng.choices(METHODS, weights=[m[0] for m in METHODS])[0]
        customers.append(
            DemoCustomer(
                email=f"chaos-stripe-{i}@example.com",
                name=f"Chaos Customer {i}",
                kind=kind,
                gateway=f"stripe_{kind}",
                token=f"cus_chaos{i}:{method}",
                brand="Visa" if kind == "card" else None,
                bank_name="First Chaos Bank" if kind == "ach" else None,
                last4=f"{i % 10_000:04d}",
                store="Chaos Store",
                order_details={"item": "sofa"},
                agreement_ref=f"AGR-CHAOS-{i:06d}",
                installment_cents=rng.randint(2_500, 12_500),
                first_due_on=today,
            )
        )
    async with pool.acquire() as conn:
        await insert_customers(conn, customers, installments=1)


async def test_stripe_faults_never_charge_twice_and_every_doubt_is_resolved(
    pool: asyncpg.Pool,
    database_url: str,
    scale: Scale,
    chaos_seed: int,
    rng: random.Random,
) -> None:
    await _seed(pool, scale(80, 1_500), rng)
    today = business_today()
    async with serve_faulty_stripe(chaos_seed, client_timeout_s=CLIENT_TIMEOUT_S) as stripe:
        settings = chaos_settings(
            database_url,
            gateways=GATEWAYS,
            stripe_api_key=API_KEY,
            stripe_base_url=stripe.base_url,
            gateway_timeout_s=CLIENT_TIMEOUT_S,
            batch_size=50,
        )

        # Under faults: the first pass is cancelled in the middle (as a stop past its grace
        # would), leaving claims never answered; the next passes re-send those under their
        # keys and look the rest up, through the same faults.
        total = await pool.fetchval("SELECT count(*) FROM installments")
        cut_at = int(total * rng.uniform(0.2, 0.7))
        async with anyio.create_task_group() as tg:
            tg.start_soon(pass_in_process, pool, settings, today)

            async def claimed() -> bool:
                n: int = await pool.fetchval("SELECT count(*) FROM charge_attempts")
                return n >= cut_at

            await wait_until(claimed, what=f"{cut_at} claims")
            tg.cancel_scope.cancel()
        cut = await statuses(pool, "charge_attempts")
        print(f"first pass cancelled after {cut_at} claims: {describe_statuses(cut)}")
        for _ in range(scale(2, 4)):
            await pass_in_process(pool, settings, as_of=today)
        faulty = await statuses(pool, "charge_attempts")
        print(f"under faults: {describe_statuses(faulty)}; injected {dict(stripe.injected)}")
        assert faulty.get("in_doubt", 0) > 0, "no fault left anything in doubt: nothing tested"

        await stripe.heal()
        # Stripe answers again, promptly: every attempt whose charge it took is resolved by
        # lookup (the client's usual timeout again, so a busy machine is not a fault).
        settings = chaos_settings(
            database_url,
            gateways=GATEWAYS,
            stripe_api_key=API_KEY,
            stripe_base_url=stripe.base_url,
        )
        for _ in range(3):
            await pass_in_process(pool, settings, as_of=today)
            open_keys = {
                r[0]
                for r in await pool.fetch(
                    "SELECT idempotency_key FROM charge_attempts"
                    " WHERE status IN ('pending', 'in_doubt')"
                )
            }
            if not open_keys & stripe.keys_taken():
                break
        assert not open_keys & stripe.keys_taken(), "charges Stripe took are still in doubt"
        left = await pool.fetch(
            "SELECT status, outcome_code FROM charge_attempts WHERE status IN ('pending', 'in_doubt')"
        )
        assert {r["status"] for r in left} <= {"in_doubt"}, left

        # What is left was never taken; once Stripe's search can no longer be behind (an
        # hour after the last send), the lookup's "not found" is believed.
        await pool.execute(
            "UPDATE charge_attempts SET last_sent_at = last_sent_at - interval '61 minutes'"
            " WHERE status = 'in_doubt'"
        )
        await pass_in_process(pool, settings, as_of=today)
        assert await unresolved(pool) == 0, describe_statuses(
            await statuses(pool, "charge_attempts")
        )
        final = await statuses(pool, "charge_attempts")
        print(f"resolved: {describe_statuses(final)}; requests {dict(stripe.requests)}")

        await assert_audit_clean(pool)
        await assert_gateway_matches_ledger(pool, stripe.record(), gateways=GATEWAYS)
        # Every key was created at Stripe at most once (its replays answered from the store).
        assert max(stripe.fake.created_per_key.values(), default=0) <= 1
