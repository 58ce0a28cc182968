"""What every chaos scenario shares: ``collector`` child processes, waiting on the database's
own state under a deadline, and the two closing checks (the ledger audit, and the gateway's
own record equal to the ledger's)."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import anyio
import asyncpg
import httpx
from anyio.abc import Process

from collector.cli import stripe_options
from collector.config import Settings
from collector.db.audit import SANDBOX_GATEWAYS, run_audit
from collector.gateways.base import GatewayContext
from collector.gateways.registry import open_gateways
from collector.jobs.collect import PassResult, run_pass
from collector.seed import DEMO_MIX

ZONE = ZoneInfo("America/New_York")
# How often a waiting test asks the database again: a poll interval, not a guess at timing.
POLL_S = 0.01
CHILD_TIMEOUT_S = 120

Db = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool


def business_today() -> date:
    """Today in the lessor's zone (the engine's default business date)."""
    return datetime.now(ZONE).date()


def child_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a ``collector`` child: none of ours, the given COLLECTOR_ ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_DATABASE_URL"] = database_url
    env.update(settings)
    return env


@dataclass
class Child:
    """A ``collector`` child process whose output goes to files (a pipe nobody reads would
    block it)."""

    process: Process
    stdout_path: Path
    stderr_path: Path
    _files: tuple[IO[bytes], IO[bytes]]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait(self, timeout_s: float = CHILD_TIMEOUT_S) -> int:
        with anyio.fail_after(timeout_s):
            code = await self.process.wait()
        self.close()
        return code

    def close(self) -> None:
        for f in self._files:
            f.close()

    async def kill(self) -> None:
        """SIGKILL it (if still alive) and reap it."""
        if self.process.returncode is None:
            self.process.kill()
        await self.wait(30)


async def start_collector(args: Sequence[str], env: Mapping[str, str], logs: Path) -> Child:
    """Start ``python -m collector ARGS`` (its pid is the collector's own)."""
    await anyio.Path(logs).mkdir(parents=True, exist_ok=True)
    n = len([p async for p in anyio.Path(logs).glob("*.stderr")])
    name = f"{n:03d}-{args[0]}"
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    out, err = out_path.open("wb"), err_path.open("wb")
    process = await anyio.open_process(
        [sys.executable, "-m", "collector", *args], env=dict(env), stdout=out, stderr=err
    )
    return Child(process, out_path, err_path, (out, err))


async def run_collector(
    args: Sequence[str], env: Mapping[str, str], logs: Path, *, timeout_s: float = CHILD_TIMEOUT_S
) -> Child:
    """Run ``collector ARGS`` to its end."""
    child = await start_collector(args, env, logs)
    try:
        await child.wait(timeout_s)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await child.kill()
        raise
    return child


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    what: str,
    timeout_s: float = 60,
    alive: Child | None = None,
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout_s``, or as soon as ``alive`` (a
    child the condition depends on) has exited."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if alive is not None and alive.returncode is not None:
            raise AssertionError(
                f"the child exited ({alive.returncode}) before {what}: {alive.stderr()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await anyio.sleep(POLL_S)


def chaos_settings(database_url: str, **overrides: Any) -> Settings:
    """Engine settings for an in-process pass (the children read the same from COLLECTOR_)."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "batch_size": 100,
        "concurrency": 32,
        "gateway_timeout_s": 5,
    }
    values.update(overrides)
    return Settings(**values)


async def pass_in_process(
    pool: asyncpg.Pool, settings: Settings, as_of: date, *, sandbox_url: str | None = None
) -> PassResult:
    """One ordinary pass in this process, through the same gateways a child would open."""
    url = sandbox_url or settings.database_url.get_secret_value()  # type: ignore[union-attr]

    def context(name: str) -> GatewayContext:
        if name.startswith("stripe_"):
            return GatewayContext(name=name, database_url=url, options=stripe_options(settings))
        return GatewayContext(name=name, database_url=url, latency_ms=settings.sandbox_latency_ms)

    async with open_gateways(settings.gateways, context) as gateways:
        return await run_pass(pool, gateways, settings, as_of=as_of)


async def passes_until_resolved(
    pool: asyncpg.Pool, run: Callable[[], Awaitable[object]], *, at_most: int = 4
) -> int:
    """Run passes until no attempt is pending or in doubt; return how many ran."""
    for n in range(1, at_most + 1):
        await run()
        if await unresolved(pool) == 0:
            return n
    left = await statuses(pool, "charge_attempts")
    raise AssertionError(f"still unresolved after {at_most} passes: {describe_statuses(left)}")


async def unresolved(db: Db) -> int:
    """Attempts whose outcome the ledger does not know yet (pending or in doubt)."""
    n: int = await db.fetchval(
        "SELECT count(*) FROM charge_attempts WHERE status IN ('pending', 'in_doubt')"
    )
    return n


async def statuses(db: Db, table: str = "installments") -> dict[str, int]:
    return dict(await db.fetch(f"SELECT status, count(*) FROM {table} GROUP BY 1"))  # type: ignore[arg-type]


async def assert_audit_clean(db: Db, *, sandbox_gateways: Sequence[str] = SANDBOX_GATEWAYS) -> None:
    """``collector audit``'s checks over the whole book: every one clean."""
    report = await run_audit(db, sandbox_gateways=sandbox_gateways)  # type: ignore[arg-type]
    assert report.clean, "the ledger audit is not clean: " + "; ".join(
        v.message for found in report.violations.values() for v in found
    )


@dataclass(frozen=True, slots=True)
class GatewayCharge:
    """One charge as the gateway itself keeps it."""

    key: str  # the idempotency key it was made under
    gateway: str
    amount_cents: int
    accepted: bool  # money taken (or, for a bank debit, submitted)
    ref: str


async def sandbox_record(db: Db) -> list[GatewayCharge]:
    """The sandbox gateways' own record (sql/external/sandbox.sql's table)."""
    if not await db.fetchval("SELECT to_regclass('sandbox.charges') IS NOT NULL"):
        return []
    rows = await db.fetch(
        "SELECT idempotency_key, gateway, amount_cents, status IN ('succeeded', 'processing'),"
        " gateway_ref FROM sandbox.charges"
    )
    return [GatewayCharge(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def assert_gateway_matches_ledger(
    ledger: Db, record: Iterable[GatewayCharge], *, gateways: Sequence[str]
) -> None:
    """The gateway's record and the ledger's agree, once nothing is left unresolved:

    - no key was accepted twice (no double charge);
    - every accepted charge is an attempt the ledger counts as taken (succeeded, processing,
      returned), for the same amount, gateway and reference, and every taken attempt is an
      accepted charge;
    - per installment, what the gateway kept (its accepted charges' money, by the ledger's
      allocation of each) is at most the installment's amount and is exactly what the ledger
      counts paid or in flight.
    """
    assert await unresolved(ledger) == 0, "attempts are still pending or in doubt"
    accepted: dict[str, list[GatewayCharge]] = defaultdict(list)
    for charge in record:
        if charge.gateway in gateways and charge.accepted:
            accepted[charge.key].append(charge)
    twice = {key: len(found) for key, found in accepted.items() if len(found) > 1}
    assert not twice, f"keys the gateway accepted more than once: {twice}"

    attempts = {
        r["idempotency_key"]: r
        for r in await ledger.fetch(
            "SELECT id, idempotency_key, gateway, amount_cents, status, gateway_ref"
            " FROM charge_attempts WHERE gateway = ANY($1::text[])",
            list(gateways),
        )
    }
    taken = {
        k for k, a in attempts.items() if a["status"] in ("succeeded", "processing", "returned")
    }
    problems: list[str] = []
    for key in sorted(set(accepted) - taken):
        a = attempts.get(key)
        problems.append(
            f"{key}: the gateway took it; the ledger "
            + ("has no such attempt" if a is None else f"says {a['status']}")
        )
    problems += [
        f"{key}: the ledger says taken; the gateway has no such charge"
        for key in sorted(taken - set(accepted))
    ]
    for key in sorted(taken & set(accepted)):
        a, [c] = attempts[key], accepted[key]
        if (c.amount_cents, c.gateway, c.ref) != (
            a["amount_cents"],
            a["gateway"],
            a["gateway_ref"],
        ):
            problems.append(
                f"{key}: gateway {c.gateway} {c.amount_cents} cents ref {c.ref}; ledger"
                f" {a['gateway']} {a['amount_cents']} cents ref {a['gateway_ref']}"
            )
    assert not problems, "gateway and ledger disagree: " + "; ".join(problems[:20])

    kept_ids = [attempts[k]["id"] for k in accepted if attempts[k]["status"] != "returned"]
    kept: dict[int, int] = defaultdict(int)
    for row in await ledger.fetch(
        "SELECT installment_id, amount_cents FROM money_movements"
        " WHERE kind = 'presented' AND attempt_id = ANY($1::bigint[])",
        kept_ids,
    ):
        kept[row["installment_id"]] += row["amount_cents"]
    wrong = []
    for row in await ledger.fetch(
        "SELECT id, amount_cents, paid_cents, in_flight_cents FROM installments"
    ):
        got = kept.get(row["id"], 0)
        if got > row["amount_cents"] or got != row["paid_cents"] + row["in_flight_cents"]:
            wrong.append(
                f"installment {row['id']} of {row['amount_cents']}: the gateway kept {got},"
                f" the ledger has {row['paid_cents']} paid + {row['in_flight_cents']} in flight"
            )
    assert not wrong, "; ".join(wrong[:20])


# Where each demo token's installment ends once every answer is known, on the day it was due.
FINAL_STATUS = {
    "sandbox_card_ok": "paid",
    "sandbox_card_timeout_taken": "paid",  # the lookup finds it taken
    "sandbox_card_timeout_not_taken": "overdue",  # the lookup finds nothing: failed, retried later
    "sandbox_card_insufficient_funds": "overdue",
    "sandbox_card_do_not_honor": "overdue",
    "sandbox_card_stolen": "overdue",
    "sandbox_card_expired": "overdue",
    "sandbox_ach_ok": "pending_settlement",
    "sandbox_ach_return_R01": "pending_settlement",  # returned days later, not today
    "sandbox_ach_return_R02": "pending_settlement",
    "sandbox_ach_return_R10": "pending_settlement",
}
assert set(FINAL_STATUS) == {token for *_, token in DEMO_MIX}


async def assert_where_tokens_put_them(db: Db, total: int, *, demo_only: bool = False) -> None:
    """Every demo installment (one per lease) is where its token's outcome puts it
    (``demo_only``: leases other than the seed's, tests.factories', are left out)."""
    rows = await db.fetch(
        "SELECT pm.token, i.status, count(*) AS n FROM installments i"
        " JOIN leases l ON l.id = i.lease_id AND l.customer_id = i.customer_id"
        " JOIN payment_methods pm ON pm.customer_id = l.customer_id AND pm.is_primary"
        " WHERE NOT $1 OR l.agreement_ref NOT LIKE 'AGR-T-%'"
        " GROUP BY 1, 2",
        demo_only,
    )
    wrong = {
        (r["token"], r["status"]): r["n"] for r in rows if FINAL_STATUS[r["token"]] != r["status"]
    }
    assert not wrong, f"installments not where their token puts them: {wrong}"
    assert sum(r["n"] for r in rows) == total


def describe_statuses(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_daemon(env: Mapping[str, str], logs: Path, *, port: int, schedule: bool) -> Child:
    """``collector daemon`` on 127.0.0.1:``port``, returned once /healthz answers."""
    args = ["daemon", "--host", "127.0.0.1", "--port", str(port)]
    child = await start_collector(args if schedule else [*args, "--no-schedule"], env, logs)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as http:

        async def healthy() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False  # not listening yet

        try:
            await wait_until(healthy, what="the daemon's /healthz", alive=child, timeout_s=60)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await child.kill()
            raise
    return child
