"""Replay tests/test_audit.py's scenarios with the audit running on another database (Citus).

The suite clones a template database per test, which a Citus cluster cannot do (a clone of
the coordinator's catalog names shards it does not own), and the scenarios build their book
through the journal's functions, which do not all run on Citus yet (issue 12). So each test
runs as in the suite on a fresh plain PostgreSQL database, and each time it calls
``run_audit`` the book as it stands is copied (pg_dump --data-only, the sandbox's schema
with it) into the target database, emptied first, and the audit runs THERE: the test's own
assertions then judge the target's report.

    uv run python -m bench.audit_replay --plain postgresql://postgres@127.0.0.1:5499/postgres \\
        postgresql://postgres@127.0.0.1:9700/<db> [-k word]

The target must be migrated (``collector migrate``). It is emptied: never point it at a
database that matters. Not a benchmark; kept beside them because, like them, it drives real
databases from the outside.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import os
import traceback
from collections.abc import Callable
from typing import Any

import asyncpg

from collector.config import Settings
from collector.db import audit
from collector.db.embedded import database_url_of
from collector.db.migrate import migrate
from collector.db.pool import open_pool
from collector.gateways.registry import open_gateways
from tests import test_audit
from tests.conftest import gateway_context

# Every table of the engine and the sandbox on one node, shards included, but the
# migrations' ledger.
_TABLES = """
SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' AND c.relname <> 'schema_migrations'
"""


async def empty(url: str) -> None:
    """Empty every table of the target, on the coordinator and, on Citus, on each node that
    holds shards, and drop the sandbox's schema: the journal's guard against TRUNCATE is a
    trigger, skipped (with every other trigger) under the replica role, in which Citus
    propagates nothing, so each node is emptied on its own."""
    urls = [url]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS sandbox CASCADE")
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
        ):
            database = await conn.fetchval("SELECT current_database()")
            nodes = await conn.fetch(
                "SELECT nodename, nodeport FROM pg_dist_node WHERE noderole = 'primary'"
                " AND isactive AND (nodename, nodeport) <> ('127.0.0.1', inet_server_port())"
            )
            base = url.rsplit("@", 1)[0]
            urls += [f"{base}@{n['nodename']}:{n['nodeport']}/{database}" for n in nodes]
    finally:
        await conn.close()
    for node in urls:
        conn = await asyncpg.connect(node)
        try:
            # The workers hide their shards from pg_class unless told not to.
            await conn.execute("SET citus.override_table_visibility = off")
            tables = await conn.fetchval(_TABLES)
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                # Citus guards shards against direct writes (a placeholder elsewhere).
                await conn.execute("SET LOCAL citus.enable_manual_changes_to_shards = on")
                await conn.execute(f"TRUNCATE {tables}")
        finally:
            await conn.close()


async def _run(*args: str, stdin: bytes | None = None) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    if proc.returncode:
        raise RuntimeError(f"{args[0]} failed: {err.decode()[-500:]}")
    return out


async def copy_book(source: str, target: str) -> None:
    """The source's rows into the emptied target, triggers off (they ran on the source)."""
    await empty(target)
    conn = await asyncpg.connect(source)
    has_sandbox = await conn.fetchval("SELECT to_regnamespace('sandbox') IS NOT NULL")
    await conn.close()
    schema = b""
    if has_sandbox:
        schema = await _run("pg_dump", "--schema-only", "-n", "sandbox", "-d", source)
    data = await _run("pg_dump", "--data-only", "-T", "public.schema_migrations", "-d", source)
    script = (
        b"\\set ON_ERROR_STOP 1\n"
        + schema
        + b"SET citus.propagate_set_commands = 'local';\nBEGIN;\n"
        b"SET LOCAL session_replication_role = replica;\n"
        b"SET LOCAL citus.multi_shard_modify_mode = 'sequential';\n"
        + data.replace(b"SELECT pg_catalog.set_config('search_path', '', false);", b"")
        + b"COMMIT;\n"
    )
    await _run("psql", "-X", "-q", "-d", target, stdin=script)


def _unwrap(fixture: Any) -> Callable[..., Any]:
    getter = getattr(fixture, "_get_wrapped_function", None)
    return getter() if getter else getattr(fixture, "__wrapped__", fixture)


_counter = itertools.count()


async def run_one(plain_server: str, template: str, target: str, test: Callable[..., Any]) -> str:
    name = f"audit_replay_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(plain_server)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    await admin.close()
    source = database_url_of(plain_server, name)
    real_run_audit = audit.run_audit

    async with open_pool(target, size=4) as target_pool:

        async def run_on_target(db: Any, **kwargs: Any) -> audit.AuditReport:
            await copy_book(source, target)
            return await real_run_audit(target_pool, **kwargs)

        test_audit.run_audit = run_on_target  # type: ignore[assignment]
        try:
            settings = Settings(database_url=source, sandbox_latency_ms=0, gateway_timeout_s=5)  # type: ignore[arg-type]
            params = inspect.signature(test).parameters
            async with open_pool(source, size=10) as pool:
                args: dict[str, Any] = {"pool": pool}
                if "book" in params:
                    async with pool.acquire() as conn:
                        args["book"] = await test_audit.build_book(conn)
                if "gateways" in params or "charged" in params:
                    async with open_gateways(settings.gateways, gateway_context(source)) as gws:
                        args["gateways"] = gws
                        if "charged" in params:
                            args["charged"] = await _unwrap(test_audit.charged)(pool, gws)
                        await test(**{p: args[p] for p in params})
                else:
                    await test(**{p: args[p] for p in params})
        finally:
            test_audit.run_audit = real_run_audit
            admin = await asyncpg.connect(plain_server)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return "passed"


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plain", required=True, help="a plain PostgreSQL server's URL")
    parser.add_argument("target", help="the migrated database the audit runs on")
    parser.add_argument("-k", default="")
    opts = parser.parse_args()
    template = f"audit_replay_template_{os.getpid()}"
    admin = await asyncpg.connect(opts.plain)
    await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{template}"')
    await admin.close()
    conn = await asyncpg.connect(database_url_of(opts.plain, template))
    await migrate(conn)
    await conn.close()
    tests = [
        (name, fn)
        for name, fn in inspect.getmembers(test_audit, inspect.iscoroutinefunction)
        if name.startswith("test_") and opts.k in name
    ]
    tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
    failed = 0
    try:
        for name, fn in tests:
            try:
                outcome = await run_one(opts.plain, template, opts.target, fn)
            except AssertionError as exc:
                outcome = f"FAILED {exc!r}"[:600]
            except Exception as exc:
                outcome = "ERROR " + "".join(traceback.format_exception_only(exc)).strip()[:600]
            failed += outcome != "passed"
            print(f"{name}: {outcome}")
    finally:
        admin = await asyncpg.connect(opts.plain)
        await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        await admin.close()
    print(f"{len(tests) - failed} passed, {failed} failed or errored")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
