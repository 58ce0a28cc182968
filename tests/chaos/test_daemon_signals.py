"""``collector daemon`` signalled in the middle of its work.

- SIGTERM in the middle of a scheduled pass, at a moment drawn from the seed: the daemon
  stops claiming, sends and records what it had claimed, and exits 0 within its grace;
  nothing it claimed is left pending, and the next pass collects the rest exactly once.
- SIGKILL while manual payments are in flight through its portal API: after a restart the
  payments it held are still unknown (a repeat of their key is 409) until their claim
  deadline passes; then a pass resolves every one of them, by lookup or by a re-send under
  the same key, exactly once, and each key's repeat answers its final outcome.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest

from collector.seed import seed_demo
from tests.chaos.conftest import Scale
from tests.chaos.helpers import (
    assert_audit_clean,
    assert_gateway_matches_ledger,
    assert_where_tokens_put_them,
    business_today,
    chaos_settings,
    child_env,
    describe_statuses,
    free_port,
    pass_in_process,
    passes_until_resolved,
    sandbox_record,
    start_daemon,
    statuses,
    wait_until,
)
from tests.chaos.storm import (
    API_TOKEN,
    STORM_ATTEMPTS,
    Sent,
    Storm,
    assert_replays_hold,
    blow,
    make_leases,
    make_overdue_leases,
    plan,
    send,
)

pytestmark = pytest.mark.chaos

GRACE_S = 15
SANDBOX = ["sandbox_card", "sandbox_ach"]


async def test_sigterm_mid_pass_exits_cleanly_within_the_grace_and_loses_nothing(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, scale: Scale, rng: random.Random
) -> None:
    today = business_today()
    total = scale(600, 8_000)
    # The long form's pass ends with the post-pass audit of a larger book, which took 10 s
    # on a loaded machine: its grace is the default, 30 s.
    grace = scale(GRACE_S, 30)
    await seed_demo(pool, customers=total, due_on=today, mix="demo", installments=1)
    # Leases with overdue installments the batch leaves alone today, for manual payments
    # sent while the pass runs and in flight when SIGTERM comes.
    leases = await make_overdue_leases(pool, scale(30, 200), rng, today)
    # More than the pass's time can take: the storm is still sending when SIGTERM comes.
    planned = plan(leases, scale(300, 2_000), rng, tag="sigterm")
    port = free_port()
    env = child_env(
        database_url,
        COLLECTOR_API_TOKENS=API_TOKEN,
        COLLECTOR_MANUAL_PAY_MAX_ATTEMPTS=STORM_ATTEMPTS,
        # The day's time has passed (00:00): the daemon starts a pass at once.
        COLLECTOR_SCHEDULE_TIME="00:00",
        COLLECTOR_SANDBOX_LATENCY_MS="10",
        COLLECTOR_CONCURRENCY="16",
        COLLECTOR_BATCH_SIZE="50",
        COLLECTOR_SHUTDOWN_GRACE_S=str(grace),
    )
    daemon = await start_daemon(env, tmp_path / "logs", port=port, schedule=True)
    stop_at = int(total * rng.uniform(0.1, 0.6))
    try:
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                timeout=30,
            ) as http,
            anyio.create_task_group() as tg,
        ):
            sent: list[Storm] = []

            async def storm() -> None:
                sent.append(await blow(http, planned, in_flight=8))

            tg.start_soon(storm)

            async def under_way() -> bool:
                # The pass has recorded its share, and a manual payment is in flight.
                row = await pool.fetchrow(
                    "SELECT (SELECT count(*) FROM charge_attempts WHERE status <> 'pending'"
                    " AND payment_id IS NULL) AS recorded,"
                    " (SELECT count(*) FROM payments WHERE status = 'pending') AS paying"
                )
                assert row is not None
                return row["recorded"] >= stop_at and row["paying"] > 0

            await wait_until(
                under_way, what=f"{stop_at} answers and a manual payment", alive=daemon
            )
            stopping = time.monotonic()
            daemon.process.send_signal(signal.SIGTERM)
            code = await daemon.wait(grace + 10)
            took = time.monotonic() - stopping
    finally:
        await daemon.kill()
    answered = sent[0].by_status()
    print(
        f"SIGTERM after {stop_at} of {total} answers; exited {code} in {took:.1f} s;"
        f" manual payments answered {answered}"
    )
    assert code == 0, daemon.stderr()[-3000:]
    assert took < grace, f"took {took:.1f} s to stop, past its grace of {grace} s"
    # Everything it claimed was sent and recorded, the manual payments in flight included:
    # nothing pending, the run row closed.
    attempts = await statuses(pool, "charge_attempts")
    assert "pending" not in attempts, describe_statuses(attempts)
    payments = await statuses(pool, "payments")
    assert "pending" not in payments, describe_statuses(payments)
    assert [r["status"] for r in await pool.fetch("SELECT status FROM collection_runs")] == [
        "completed"
    ]
    demo_left = await pool.fetchval(
        "SELECT count(*) FROM installments i JOIN leases l ON l.id = i.lease_id"
        " WHERE i.status = 'scheduled' AND l.agreement_ref NOT LIKE 'AGR-T-%'"
    )
    assert demo_left > 0, "the pass was over before SIGTERM"

    settings = chaos_settings(database_url, sandbox_latency_ms=10)
    await passes_until_resolved(pool, lambda: pass_in_process(pool, settings, as_of=today))
    await assert_where_tokens_put_them(pool, total, demo_only=True)
    await assert_audit_clean(pool)
    await assert_gateway_matches_ledger(pool, await sandbox_record(pool), gateways=SANDBOX)


async def test_sigkill_with_manual_payments_in_flight_resolves_each_exactly_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, scale: Scale, rng: random.Random
) -> None:
    today = business_today()
    leases = await make_leases(pool, scale(40, 300), rng, today)
    planned = plan(leases, scale(60, 400), rng, tag="inflight")
    # 300 ms at the sandbox: every manual payment is in flight a while, claimed and not
    # answered; the kill catches some before the sandbox took them and some after.
    env = child_env(
        database_url,
        COLLECTOR_API_TOKENS=API_TOKEN,
        COLLECTOR_MANUAL_PAY_MAX_ATTEMPTS=STORM_ATTEMPTS,
        COLLECTOR_SANDBOX_LATENCY_MS="300",
        COLLECTOR_GATEWAY_TIMEOUT_S="2",
    )
    logs = tmp_path / "logs"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    daemon = await start_daemon(env, logs, port=port, schedule=False)
    held = rng.randint(1, 12)
    try:
        async with (
            httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http,
            anyio.create_task_group() as tg,
        ):
            storm_done = anyio.Event()
            result: list[list[Sent]] = []

            async def storm() -> None:
                result.append((await blow(http, planned, in_flight=24)).sent)
                storm_done.set()

            tg.start_soon(storm)

            async def in_flight() -> bool:
                n: int = await pool.fetchval(
                    "SELECT count(*) FROM payments WHERE status = 'pending'"
                )
                return n >= held

            await wait_until(in_flight, what=f"{held} manual payments in flight", alive=daemon)
            # Hold their answers back: with payments locked, a payment the sandbox has
            # answered cannot be recorded (nor a new one claimed). Kill the daemon once the
            # sandbox took at least one of those it holds, the others still on their way.
            blocker = await asyncpg.connect(database_url)
            try:
                await blocker.execute("BEGIN; LOCK TABLE payments IN EXCLUSIVE MODE")

                async def taken_not_recorded() -> bool:
                    n: int = await pool.fetchval(
                        "SELECT count(*) FROM charge_attempts a"
                        " JOIN sandbox.charges c ON c.idempotency_key = a.idempotency_key"
                        " WHERE a.status = 'pending' AND a.payment_id IS NOT NULL"
                    )
                    return n >= 1

                await wait_until(
                    taken_not_recorded, what="an answered payment not recorded", alive=daemon
                )
                daemon.process.send_signal(signal.SIGKILL)
                await daemon.wait(30)
                killed_at = await pool.fetchval("SELECT clock_timestamp()")
            finally:
                await blocker.close()
            with anyio.fail_after(60):
                await storm_done.wait()
    finally:
        await daemon.kill()
    # The dead daemon's server sessions can still run the statement they had received (one
    # that waited for the blocker's lock) and commit it; what is pending is known once none
    # of them runs any more.
    await wait_until(
        lambda: _no_statement_started_before(pool, killed_at),
        what="the killed daemon's last statements",
        timeout_s=30,
    )
    sent = result[0]
    lost = [s for s in sent if s.status == -1]
    pending = {
        r["request_key"]
        for r in await pool.fetch("SELECT request_key FROM payments WHERE status = 'pending'")
    }
    taken = await pool.fetchval(
        "SELECT count(*) FROM payments p JOIN charge_attempts a ON a.payment_id = p.id"
        " JOIN sandbox.charges c ON c.idempotency_key = a.idempotency_key"
        " WHERE p.status = 'pending'"
    )
    print(
        f"SIGKILL with {len(pending)} payments pending; {len(lost)} requests lost their answer;"
        f" the sandbox took {taken} of them"
    )
    assert pending, "no manual payment was in flight at the kill: nothing tested"

    daemon = await start_daemon(env, logs, port=port, schedule=False)
    try:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
            # Nobody knows yet what became of them: a repeat of their key says so.
            by_key = {s.key: s for s in sent}
            for key in sorted(pending):
                again = Sent(by_key[key].lease_id, key, by_key[key].body)
                await send(http, again)
                assert again.status == 409, f"{key}: {again.status} {again.answer}"
            # Their claims run out (the backstop of a payment no pass holds: gateway timeout
            # plus a minute). The long form waits for it; the short form moves the clock.
            if scale.long:
                await wait_until(
                    lambda: pool.fetchval(
                        "SELECT coalesce(max(claimed_until) < now(), true) FROM charge_attempts"
                        " WHERE status = 'pending' AND payment_id IS NOT NULL"
                    ),
                    what="the manual payments' claim deadline",
                    timeout_s=120,
                )
            else:
                await pool.execute(
                    "UPDATE charge_attempts SET claimed_until = now() - interval '1 second'"
                    " WHERE status = 'pending' AND payment_id IS NOT NULL"
                )
            settings = chaos_settings(database_url, sandbox_latency_ms=0, gateway_timeout_s=2)
            await passes_until_resolved(pool, lambda: pass_in_process(pool, settings, as_of=today))
            # Every key that made a payment now replays its final answer.
            recovered = [Sent(s.lease_id, s.key, s.body) for s in sent if s.key in pending]
            for s in recovered:
                await send(http, s)
            unsettled = [(s.key, s.status) for s in recovered if s.status not in (201, 402, 422)]
            assert not unsettled, f"repeats of resolved payments: {unsettled}"
            answered = [s for s in sent if s.status != -1]
            await assert_replays_hold(http, Storm(sent=answered))
        daemon.process.send_signal(signal.SIGTERM)
        assert await daemon.wait(GRACE_S + 10) == 0, daemon.stderr()[-3000:]
    finally:
        await daemon.kill()
    payments = await statuses(pool, "payments")
    assert "pending" not in payments and "in_doubt" not in payments, payments
    await assert_audit_clean(pool)
    await assert_gateway_matches_ledger(pool, await sandbox_record(pool), gateways=SANDBOX)


async def test_after_sigterm_the_portal_takes_no_new_manual_payment(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path, rng: random.Random
) -> None:
    today = business_today()
    await seed_demo(pool, customers=20, due_on=today, mix="ok", installments=1)
    [lease] = await make_overdue_leases(pool, 1, rng, today)
    port = free_port()
    # 5 s a charge: once the pass has claimed, it drains for seconds after SIGTERM, and the
    # probe is sent in that time.
    env = child_env(
        database_url,
        COLLECTOR_API_TOKENS=API_TOKEN,
        COLLECTOR_SCHEDULE_TIME="00:00",
        COLLECTOR_SANDBOX_LATENCY_MS="5000",
        COLLECTOR_GATEWAY_TIMEOUT_S="10",
        COLLECTOR_SHUTDOWN_GRACE_S=str(GRACE_S),
    )
    probe = Sent(lease.lease_id, "after-sigterm", {})
    daemon = await start_daemon(env, tmp_path / "logs", port=port, schedule=True)
    try:
        await wait_until(
            lambda: pool.fetchval(
                "SELECT count(*) > 0 FROM charge_attempts WHERE status = 'pending'"
            ),
            what="the daemon's pass charging",
            alive=daemon,
        )
        daemon.process.send_signal(signal.SIGTERM)
        await wait_until(
            lambda: anyio.to_thread.run_sync(lambda: "daemon_stopping" in daemon.stderr()),
            what="the daemon stopping",
            alive=daemon,
        )
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=30,
        ) as http:
            await send(http, probe)
        assert await daemon.wait(GRACE_S + 10) == 0, daemon.stderr()[-3000:]
    finally:
        await daemon.kill()
    taken = await pool.fetchval("SELECT count(*) FROM payments WHERE request_key = $1", probe.key)
    print(f"probe after SIGTERM: {probe.status} {probe.answer}")
    assert taken == 0, f"a manual payment taken after SIGTERM: {probe.status} {probe.answer}"


async def _no_statement_started_before(pool: asyncpg.Pool, moment: object) -> bool:
    running: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND state <> 'idle' AND query_start < $1",
        moment,
    )
    return running == 0
