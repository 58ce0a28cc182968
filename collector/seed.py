"""Demo data: customers with leases and schedules, a deterministic mix of sandbox tokens so a
pass shows every kind of outcome (approvals, soft and hard declines, a lost answer, ACH debits
that will settle or be returned)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import asyncpg

from collector.db.seed import DemoCustomer, analyze_seeded, insert_customers
from collector.fees.rules import valid_state

CHUNK = 5_000
INSTALLMENTS_PER_LEASE = 12

# (weight, kind, gateway, token): out of 100 customers.
DEMO_MIX: tuple[tuple[int, str, str, str], ...] = (
    (55, "card", "sandbox_card", "sandbox_card_ok"),
    (20, "ach", "sandbox_ach", "sandbox_ach_ok"),
    (6, "card", "sandbox_card", "sandbox_card_insufficient_funds"),
    (3, "card", "sandbox_card", "sandbox_card_do_not_honor"),
    (3, "card", "sandbox_card", "sandbox_card_stolen"),
    (3, "card", "sandbox_card", "sandbox_card_expired"),
    (2, "card", "sandbox_card", "sandbox_card_timeout_taken"),
    (1, "card", "sandbox_card", "sandbox_card_timeout_not_taken"),
    (3, "ach", "sandbox_ach", "sandbox_ach_return_R01"),
    (2, "ach", "sandbox_ach", "sandbox_ach_return_R02"),
    (2, "ach", "sandbox_ach", "sandbox_ach_return_R10"),
)
ALL_OK: tuple[tuple[int, str, str, str], ...] = ((1, "card", "sandbox_card", "sandbox_card_ok"),)

_SLOTS = [entry for entry in DEMO_MIX for _ in range(entry[0])]
# The demo leases' jurisdictions: the states of the late-fee table and one without a rule of
# its own (TX: the default rule applies).
DEMO_STATES: tuple[str, ...] = ("CA", "NY", "CT", "WV", "TX")
_STORES = ("Main St Furniture", "Lakeside Electronics", "Northgate Appliances", "Eastside Tires")
_GOODS = ("sofa", "55in television", "refrigerator", "laptop", "washer and dryer", "tire set")


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedResult:
    customers: int
    installments: int
    batch: str


def _customer(i: int, batch: str, due_on: date, mix: str, state: str | None) -> DemoCustomer:
    slots = _SLOTS if mix == "demo" else [ALL_OK[0]]
    # A stride coprime to 100 spreads every outcome over any run of customers, small or large.
    _, kind, gateway, token = slots[(i * 37) % len(slots)]
    good = _GOODS[i % len(_GOODS)]
    return DemoCustomer(
        email=f"demo-{batch}-{i}@example.com",
        name=f"Demo Customer {i}",
        kind=kind,
        gateway=gateway,
        token=token,
        brand="Visa" if kind == "card" else None,
        bank_name="First Demo Bank" if kind == "ach" else None,
        last4=f"{(i * 7919) % 10_000:04d}",
        store=_STORES[i % len(_STORES)],
        order_details={"item": good, "sku": f"SKU-{i % 997:04d}", "quantity": 1},
        agreement_ref=f"AGR-{batch}-{i:07d}",
        # $25.00 to $124.99 an installment, in whole cents.
        installment_cents=2_500 + (i * 3_331) % 10_000,
        first_due_on=due_on,
        state=state or DEMO_STATES[i % len(DEMO_STATES)],
    )


async def seed_demo(
    pool: asyncpg.Pool,
    *,
    customers: int,
    due_on: date,
    mix: str = "demo",
    installments: int = INSTALLMENTS_PER_LEASE,
    progress: Callable[[int], None] | None = None,
    state: str | None = None,
) -> SeedResult:
    """Insert ``customers`` customers, each with a lease whose first installment is due on
    ``due_on``; ``mix`` is "demo" (every outcome) or "ok" (approvals only); ``state``: every
    lease's jurisdiction (None: a mix of DEMO_STATES)."""
    if mix not in ("demo", "ok"):
        raise ValueError(f"unknown seed mix {mix!r}")
    if state is not None and not valid_state(state):
        raise ValueError(f"{state!r} is not a two-letter US state or territory code")
    # A fresh batch id keeps emails and agreement references unique across repeated seeds.
    batch = secrets.token_hex(4)
    for start in range(0, customers, CHUNK):
        chunk = [
            _customer(i, batch, due_on, mix, state)
            for i in range(start, min(start + CHUNK, customers))
        ]
        async with pool.acquire() as conn:
            await insert_customers(conn, chunk, installments=installments)
        if progress is not None:
            progress(len(chunk))
    await analyze_seeded(pool)
    return SeedResult(customers=customers, installments=customers * installments, batch=batch)
