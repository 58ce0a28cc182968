"""How Citus plans each statement of the portal and manual pay (issue 12), on a seeded database.

    COLLECTOR_DATABASE_URL=postgresql://postgres@127.0.0.1:9700/<db> \\
        uv run python bench/portal_routing.py --customer 201 --lease 201

Runs each named query of the portal, manual pay, promises, fees and the payoff once, with
the arguments the engine gives it for one lease of one customer, in a transaction that is
rolled back (nothing stays), under ``client_min_messages = debug2``, and prints per
statement what Citus said: ``router`` (one shard), ``multi-shard`` (a read of every shard;
fine only where named so), a subplan that pulled a table to the coordinator (``WHERE
true``), or the error. Functions are followed into: the debug lines of their statements
are counted too. The last line is machine-readable: ``router=<n> multi=<n> pulled=<n>
errors=<n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import date, timedelta
from typing import Any

import asyncpg

from collector.db.queries import QUERIES


def _statements(
    customer: int, lease: int, today: date, method: int, installments: list[int]
) -> list[tuple[str, tuple[Any, ...]]]:
    held = ["prenote_pending", "debit_notice_required"]
    return [
        ("portal.lease_customer", (lease,)),
        ("portal.customer_exists", (customer,)),
        ("portal.customer_leases", (customer, today)),
        ("portal.lease_detail", (customer, lease, today)),
        ("portal.lease_schedule", (lease, today, held, customer)),
        ("portal.customer_methods", (customer,)),
        ("portal.lock_customer", (customer,)),
        ("portal.lock_customer_methods", (customer,)),
        ("portal.waiting_for_authorization", (customer,)),
        ("portal.waiting_for_method", (customer,)),
        ("portal.customer_next_due", (customer, today)),
        ("portal.clear_primary", (customer,)),
        ("portal.set_primary", (customer, method)),
        ("portal.authorize", (customer, method, "primary")),
        (
            "portal.insert_method",
            (
                customer,
                "card",
                "sandbox_card",
                "sandbox_card_ok",
                "Visa",
                None,
                "4242",
                None,
                None,
                None,
            ),
        ),
        ("payments.lock_lease", (lease, customer)),
        ("payments.claim_view", (lease, "routing-check", today, customer, None, 5, 60)),
        ("payments.lock_open_installments", (lease, customer)),
        ("payments.payoff_quote", (lease, today, 10, customer)),
        (
            "payments.insert_payment",
            (
                lease,
                customer,
                method,
                1,
                "routing-check",
                "h",
                today,
                "sandbox_card",
                40,
                installments[:1],
                [1],
                False,
            ),
        ),
        (
            "payments.record_outcome",
            (
                0,
                0,
                "succeeded",
                "succeeded",
                None,
                None,
                None,
                False,
                None,
                None,
                None,
                None,
                today,
                "manual",
                customer,
            ),
        ),
        ("payments.cancel_remaining", (0, 0, lease, today, "manual", customer)),
        ("payments.refuse", (0, 422, {}, customer)),
        ("payments.save_response", (0, 201, {}, customer)),
        ("payments.allocations", (0, customer)),
        ("promises.lock_lease", (lease, today, customer)),
        ("promises.open_promise", (lease, customer)),
        ("promises.insert", (lease, customer, 100, today, today + timedelta(days=7), False)),
        ("promises.list", (lease, customer)),
        ("fees.lease_fees", (lease, customer)),
        ("fees.waive", (lease, 0, today, "portal", "routing check", customer)),
        ("fees.lease_state", (lease, "CA", customer)),
    ]


def _classify(lines: list[str]) -> str:
    # A function's statements each leave their lines: any multi-shard one makes it so.
    text = "\n".join(lines)
    if "WHERE true" in text:
        return "PULLED A TABLE"
    if "cannot handle multi-shard" in text or "generating subplan" in text:
        return "multi-shard"
    if "Creating router plan" in text or "fast-path router" in text:
        return "router"
    return "multi-shard" if "distributed statement" in text else "local"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customer", type=int, required=True)
    parser.add_argument("--lease", type=int, required=True)
    parser.add_argument("--date", type=date.fromisoformat, default=date.today())
    args = parser.parse_args()
    conn = await asyncpg.connect(os.environ["COLLECTOR_DATABASE_URL"])
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    lines: list[str] = []
    conn.add_log_listener(lambda _c, msg: lines.append(str(msg.message)))
    counts = {"router": 0, "multi": 0, "pulled": 0, "errors": 0}
    try:
        # The lease's unpaid installments and the customer's primary method, read plainly.
        installments = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM installments WHERE customer_id = $1 AND lease_id = $2"
                " AND status IN ('scheduled', 'overdue') ORDER BY due_on, id",
                args.customer,
                args.lease,
            )
        ]
        method = await conn.fetchval(
            "SELECT id FROM payment_methods WHERE customer_id = $1 AND is_primary", args.customer
        )
        statements = _statements(args.customer, args.lease, args.date, method, installments)
        for name, values in statements:
            lines.clear()
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute("SET LOCAL client_min_messages = debug2")
                await conn.fetch(QUERIES[name], *values)
                kind = _classify(lines)
            except asyncpg.PostgresError as exc:
                kind = f"ERROR {type(exc).__name__}: {exc}".splitlines()[0]
            finally:
                await tx.rollback()
            if kind.startswith("ERROR"):
                counts["errors"] += 1
            elif kind == "router":
                counts["router"] += 1
            elif kind == "PULLED A TABLE":
                counts["pulled"] += 1
            else:
                counts["multi"] += 1
            print(f"{name:36} {kind}")
    finally:
        await conn.close()
    print(" ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    asyncio.run(main())
