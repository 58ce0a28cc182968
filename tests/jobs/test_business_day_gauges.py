"""The business date's gauges (collector_business_day_*) equal the database after passes over
two business dates, and start again from 0 on the next one; the unfiled-debits gauge leaves
out debits set aside for an operator."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from collector.config import Settings
from collector.db.stats import snapshot
from collector.gateways.base import Gateway
from collector.jobs.collect import run_pass
from collector.jobs.gauges import refresh_gauges
from collector.metrics import REGISTRY
from tests.factories import make_lease

# Thanksgiving: no banking day. Its bank debits take effect Friday 11-27 and settle (or come
# back) two banking days later, Tuesday 12-01.
DAY_1 = date(2026, 11, 26)
DAY_2 = date(2026, 12, 1)
PREFIX = "collector_business_day_"


def business_day_samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every non-zero sample of the business-day gauges, but the date's start."""
    found = {}
    for family in REGISTRY.collect():
        if not family.name.startswith(PREFIX) or family.name.endswith("start_timestamp_seconds"):
            continue
        for sample in family.samples:
            if sample.value != 0:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (PREFIX + name, tuple(sorted(labels.items())))


async def from_the_database(
    pool: asyncpg.Pool, day: date, settings: Settings
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The same figures, counted here row by row from the tables."""
    want: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for a in await pool.fetch(
        "SELECT a.id, a.gateway, pm.kind, a.status, a.amount_cents, a.outcome_code"
        " FROM charge_attempts a JOIN payment_methods pm ON pm.id = a.payment_method_id"
        " WHERE a.as_of = $1",
        day,
    ):
        labels = {"gateway": a["gateway"], "method_kind": a["kind"], "outcome": a["status"]}
        want[_key("attempts", **labels)] += 1
        want[_key("attempts_cents", **labels)] += a["amount_cents"]
        if a["status"] == "refused":
            want[_key("refused", reason=a["outcome_code"])] += 1
    for r in await pool.fetch(
        "SELECT status, started_at, finished_at FROM collection_runs WHERE as_of = $1", day
    ):
        want[_key("passes", status=r["status"])] += 1
        if r["finished_at"] is not None:
            seconds = (r["finished_at"] - r["started_at"]).total_seconds()
            want[_key("pass_seconds", status=r["status"])] += seconds
    debits: Counter[tuple[str, str]] = Counter()
    seen: set[tuple[str, str, int]] = set()
    for m in await pool.fetch(
        "SELECT m.kind, m.amount_cents, m.attempt_id, a.gateway, pm.kind AS method_kind,"
        " i.lease_id FROM money_movements m JOIN installments i ON i.id = m.installment_id"
        " LEFT JOIN charge_attempts a ON a.id = m.attempt_id"
        " LEFT JOIN payment_methods pm ON pm.id = a.payment_method_id WHERE m.as_of = $1",
        day,
    ):
        if m["kind"] == "charged_off":
            want[_key("charged_off_cents")] += m["amount_cents"]
            seen.add(("charged_off", "", m["lease_id"]))
        elif m["kind"] in ("settled", "returned", "reversed") and m["method_kind"] == "ach":
            result = "settled" if m["kind"] == "settled" else "returned"
            want[_key("ach_cents", gateway=m["gateway"], result=result)] += m["amount_cents"]
            if (result, m["gateway"], m["attempt_id"]) not in seen:
                seen.add((result, m["gateway"], m["attempt_id"]))
                debits[(m["gateway"], result)] += 1
    for (gateway, result), count in debits.items():
        want[_key("ach_debits", gateway=gateway, result=result)] = count
    leases = sum(1 for s in seen if s[0] == "charged_off")
    if leases:
        want[_key("charged_off_leases")] = leases
    start = datetime.combine(day, time(0), settings.zone)
    for n in await pool.fetch(
        "SELECT subject, reason FROM needs_attention WHERE created_at >= $1 AND created_at < $2",
        start,
        start + timedelta(days=1),
    ):
        want[_key("set_aside", subject=n["subject"], reason=n["reason"])] += 1
    return {key: value for key, value in want.items() if value != 0}


def _noon(day: date, settings: Settings) -> datetime:
    return datetime.combine(day, time(12), settings.zone).astimezone(UTC)


async def _set_aside_at(pool: asyncpg.Pool, at: datetime, reason: str) -> None:
    await pool.execute(
        "INSERT INTO needs_attention (subject, subject_id, reason, created_at, resolved_at)"
        " VALUES ('settlement', 'test', $1, $2, $2)",
        reason,
        at,
    )


async def test_the_business_day_gauges_equal_the_database_over_two_business_dates(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        await make_lease(conn, due_dates=[DAY_1])
        await make_lease(conn, token="sandbox_card_do_not_honor", due_dates=[DAY_1])
        await make_lease(conn, token="sandbox_ach_ok", due_dates=[DAY_1], amount_cents=6_000)
        await make_lease(conn, token="sandbox_ach_return_R01", due_dates=[DAY_1])
        # Far past due: charged off by the first pass, never presented.
        await make_lease(
            conn,
            token="sandbox_card_insufficient_funds",
            due_dates=[DAY_1 - timedelta(days=130)],
            amount_cents=7_000,
        )
    await _set_aside_at(pool, _noon(DAY_1, settings), "test_day_1")
    await _set_aside_at(pool, _noon(DAY_2, settings), "test_day_2")

    await run_pass(pool, gateways, settings, as_of=DAY_1, clock=lambda: _noon(DAY_1, settings))
    day_1 = business_day_samples()
    assert day_1 == await from_the_database(pool, DAY_1, settings)
    assert (
        day_1[_key("attempts", gateway="sandbox_card", method_kind="card", outcome="succeeded")]
        == 1
    )
    assert (
        day_1[
            _key("attempts_cents", gateway="sandbox_card", method_kind="card", outcome="succeeded")
        ]
        == 5_000
    )
    assert (
        day_1[_key("attempts", gateway="sandbox_card", method_kind="card", outcome="declined")] == 1
    )
    assert (
        day_1[
            _key("attempts_cents", gateway="sandbox_ach", method_kind="ach", outcome="processing")
        ]
        == 11_000
    )
    assert day_1[_key("passes", status="completed")] == 1
    assert day_1[_key("charged_off_leases")] == 1
    assert day_1[_key("charged_off_cents")] == 7_000
    assert day_1[_key("set_aside", subject="settlement", reason="test_day_1")] == 1
    assert REGISTRY.get_sample_value(PREFIX + "start_timestamp_seconds") == (
        datetime.combine(DAY_1, time(0), settings.zone).timestamp()
    )

    # The next business date's pass: the debits settle and come back; the first date's
    # figures go back to 0 (the series stay, showing the new date's 0).
    await run_pass(pool, gateways, settings, as_of=DAY_2, clock=lambda: _noon(DAY_2, settings))
    day_2 = business_day_samples()
    assert day_2 == await from_the_database(pool, DAY_2, settings)
    assert day_2[_key("ach_debits", gateway="sandbox_ach", result="settled")] == 1
    assert day_2[_key("ach_cents", gateway="sandbox_ach", result="settled")] == 6_000
    assert day_2[_key("ach_debits", gateway="sandbox_ach", result="returned")] == 1
    assert day_2[_key("ach_cents", gateway="sandbox_ach", result="returned")] == 5_000
    assert _key("charged_off_cents") not in day_2
    assert _key("set_aside", subject="settlement", reason="test_day_1") not in day_2
    assert (
        REGISTRY.get_sample_value(
            PREFIX + "set_aside", {"subject": "settlement", "reason": "test_day_1"}
        )
        == 0
    )

    # A refresh between passes (the daemon's timer) reads the same; after midnight, the new
    # date's (nothing yet) for every series.
    await refresh_gauges(pool, settings, now=_noon(DAY_2, settings) + timedelta(hours=3))
    assert business_day_samples() == day_2
    await refresh_gauges(pool, settings, now=_noon(DAY_2, settings) + timedelta(days=1))
    assert business_day_samples() == await from_the_database(
        pool, DAY_2 + timedelta(days=1), settings
    )


async def test_a_bank_debit_set_aside_is_not_counted_as_unfiled(
    pool: asyncpg.Pool, gateways: Mapping[str, Gateway], settings: Settings
) -> None:
    async with pool.acquire() as conn:
        for _ in range(3):
            await make_lease(conn, token="sandbox_ach_ok", due_dates=[DAY_1])
    await run_pass(pool, gateways, settings, as_of=DAY_1)
    keys = [
        r["idempotency_key"]
        for r in await pool.fetch("SELECT idempotency_key, id FROM charge_attempts ORDER BY id")
    ]
    assert len(keys) == 3
    # Stand-ins for what the gateway's file writes: three accepted debits in no file.
    for key in keys:
        await pool.execute(
            "INSERT INTO ach_entries (idempotency_key, customer_id, gateway, trace_number,"
            " effective_on, amount_cents, token, sec_code, entry_description)"
            " SELECT $1, customer_id, 'nacha', lpad(nextval('ach_trace_seq')::text, 15, '0'),"
            " $2, 5000, 'tok', 'PPD', 'LEASE PYMT' FROM charge_attempts WHERE idempotency_key = $1",
            key,
            DAY_1,
        )
    assert (await snapshot(pool, as_of=DAY_1)).ach_unfiled == 3
    # The file cannot render the first (set aside on the entry), the second's attempt is set
    # aside; a resolved row no longer holds the third back.
    await pool.execute(
        "INSERT INTO needs_attention (subject, subject_id, reason) VALUES"
        " ('ach_entry', $1, 'unrenderable_entry'), ('attempt', $2, 'test')",
        keys[0],
        str(
            await pool.fetchval(
                "SELECT id FROM charge_attempts WHERE idempotency_key = $1", keys[1]
            )
        ),
    )
    await pool.execute(
        "INSERT INTO needs_attention (subject, subject_id, reason, resolved_at)"
        " VALUES ('ach_entry', $1, 'vault_token_missing', now())",
        keys[2],
    )
    snap = await snapshot(pool, as_of=DAY_1)
    assert snap.ach_unfiled == 1
    created = await pool.fetchval(
        "SELECT created_at FROM ach_entries WHERE idempotency_key = $1", keys[2]
    )
    assert snap.ach_unfiled_since == created
    # Resolved (the operator fixed the account): counted as unfiled again until it is filed.
    await pool.execute("UPDATE needs_attention SET resolved_at = now() WHERE resolved_at IS NULL")
    assert (await snapshot(pool, as_of=DAY_1)).ach_unfiled == 3
