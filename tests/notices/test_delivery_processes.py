"""``collector deliver`` and the daemon as operators run them: a deliverer SIGKILLed in the
middle of a delivery loses nothing, the daemon delivers continuously, through a receiver's
outage, and the events commands list and redeliver."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import asyncpg

from collector.webhook_signing import verify
from tests.chaos.helpers import child_env, run_collector, start_collector, wait_until
from tests.notices.receiver import OK, Reply, Request, receiver
from tests.notices.test_delivery import SECRET, by_lease, events_on


def hooks_env(database_url: str, url: str, **extra: str) -> dict[str, str]:
    endpoints = [{"name": "portal", "url": url, "secrets": [SECRET]}]
    return child_env(
        database_url,
        COLLECTOR_TIMEZONE="America/New_York",
        COLLECTOR_WEBHOOK_ENDPOINTS=json.dumps(endpoints),
        COLLECTOR_WEBHOOK_BACKOFF_BASE_S="0.05",
        COLLECTOR_WEBHOOK_BACKOFF_MAX_S="0.2",
        **extra,
    )


def delivered_in_order(requests: list[Request], ids: list[int]) -> None:
    """Every event arrived, and per lease the first arrival of each came in event order."""
    assert {r.event["id"] for r in requests} == set(ids)
    for events in by_lease(requests).values():
        firsts = list(dict.fromkeys(events))
        assert firsts == sorted(firsts)


async def test_a_deliverer_killed_mid_delivery_loses_nothing(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    ids = await events_on(pool, leases=2, per_lease=2)
    answering = {"yes": False}

    def script(_: Request) -> Reply:
        return OK if answering["yes"] else Reply(hang=True)

    async with receiver(script) as rec:
        env = hooks_env(database_url, rec.url, COLLECTOR_WEBHOOK_TIMEOUT_S="1")
        child = await start_collector(["deliver"], env, tmp_path)
        try:
            # Both leases' first events are on the wire, unanswered: kill it there.
            await rec.wait_for(2)
        finally:
            await child.kill()
        assert child.returncode == -signal.SIGKILL
        claimed = await pool.fetch(
            "SELECT event_id, attempts, claimed_until > now() AS held FROM event_deliveries"
            " WHERE status = 'pending' ORDER BY event_id"
        )
        assert [r["event_id"] for r in claimed] == ids  # nothing delivered, nothing lost
        assert [r["event_id"] for r in claimed if r["held"]] == sorted(ids[:2])
        answering["yes"] = True
        # While the dead deliverer's claims last, nobody sends those events again.
        early = await run_collector(["deliver"], env, tmp_path)
        assert "delivered: 0," in early.stdout(), early.stderr()

        async def claims_lapsed() -> bool:
            return not await pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM event_deliveries WHERE claimed_until > now())"
            )

        await wait_until(claims_lapsed, what="the killed deliverer's claims to lapse")
        done = await run_collector(["deliver", "--json"], env, tmp_path)
        assert json.loads(done.stdout().splitlines()[-1])["delivered"] == 4, done.stderr()
    delivered_in_order(rec.requests, ids)
    statuses = await pool.fetch("SELECT status FROM event_deliveries")
    assert {r["status"] for r in statuses} == {"delivered"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_daemon_delivers_continuously_through_a_receiver_outage(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    down = {"yes": True}

    def script(_: Request) -> Reply:
        return Reply(status=503) if down["yes"] else OK

    async with receiver(script) as rec:
        env = hooks_env(
            database_url,
            rec.url,
            COLLECTOR_WEBHOOK_POLL_INTERVAL_S="0.1",
            COLLECTOR_WEBHOOK_BREAKER_FAILURES="3",
            COLLECTOR_WEBHOOK_BREAKER_COOLDOWN_S="0.5",
        )
        daemon = await start_collector(
            ["daemon", "--no-schedule", "--port", str(_free_port())], env, tmp_path
        )
        try:
            first = await events_on(pool, leases=3, per_lease=2)
            await rec.wait_for(3)  # it tries, and fails, while the receiver is down
            later = await events_on(pool, leases=2, per_lease=2)
            down["yes"] = False

            async def all_delivered() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) = $1 FROM event_deliveries WHERE status = 'delivered'",
                        len(first) + len(later),
                    )
                )

            await wait_until(all_delivered, what="every event delivered", alive=daemon)
            daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.wait() == 0, daemon.stderr()
        finally:
            await daemon.kill()
    delivered_in_order(rec.requests, first + later)
    now = int(time.time())
    assert all(
        verify(r.body, r.headers["collector-signature"], [SECRET], now=now) for r in rec.requests
    )
    assert '"event_delivery_failed"' in daemon.stderr()


async def test_events_list_and_redeliver_by_hand(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    ids = await events_on(pool, leases=1, per_lease=2)
    async with receiver(lambda _: Reply(status=500)) as rec:
        env = hooks_env(
            database_url,
            rec.url,
            COLLECTOR_WEBHOOK_MAX_ATTEMPTS="1",
            COLLECTOR_METRICS_TEXTFILE=str(tmp_path / "collector.prom"),
        )
        await run_collector(["deliver"], env, tmp_path)
        # Its metrics go beside a pass's textfile, never over it, and hold only its own.
        assert not (tmp_path / "collector.prom").exists()
        samples = [
            line
            for line in (tmp_path / "collector-deliver.prom").read_text().splitlines()
            if not line.startswith("#")
        ]
        assert (
            'collector_event_deliveries_total{endpoint="portal",result="dead_lettered"} 2.0'
            in samples
        )
        assert 'collector_events_pending{endpoint="portal"} 0.0' in samples
        assert all(
            line.startswith(("collector_event", "collector_webhook_circuit_open"))
            for line in samples
        ), samples
        listed = await run_collector(["events", "list", "--status", "dead"], env, tmp_path)
        lines = listed.stdout().splitlines()
        assert [int(line.split()[0]) for line in lines] == ids[::-1], listed.stderr()
        assert all("payment.failed" in line and "HTTP 500" in line for line in lines)
        pending = await run_collector(["events", "list", "--status", "pending"], env, tmp_path)
        assert pending.stdout() == ""
        again = await run_collector(["events", "redeliver", str(ids[0])], env, tmp_path)
        assert f"event {ids[0]} will be sent again to portal" in again.stdout()
        missing = await run_collector(["events", "redeliver", "999999"], env, tmp_path)
        assert missing.returncode == 1
        dead = await run_collector(["events", "redeliver", "--dead"], env, tmp_path)
        assert "1 dead-lettered deliveries will be sent again" in dead.stdout()
        typed = await run_collector(
            ["events", "list", "--type", "payment.failed", "--json"], env, tmp_path
        )
        rows = [json.loads(line) for line in typed.stdout().splitlines()]
        assert [(r["id"], r["status"]) for r in rows] == [(ids[1], "pending"), (ids[0], "pending")]
