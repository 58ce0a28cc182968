"""The ``collector`` command: parse, build settings, open the database, call a job, print,
exit. No business logic lives here.

Exit codes: 0 the command did its work (declines are normal); 1 it could not (bad settings,
database unreachable, a failed migration); 2 the command line was wrong. ``collector audit``
differs: 0 the ledger is clean, 1 violations were found, 2 the audit could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import structlog

from collector import __version__
from collector.business_dates import (
    MAX_DAYS_AHEAD,
    SEED_MAX_DAYS_AHEAD,
    check_business_date,
    check_in_range,
)
from collector.config import Settings, load_settings
from collector.db.embedded import DATABASE_NAME, database_url_of, start_embedded
from collector.db.migrate import migrate
from collector.db.pool import CANNOT_CONNECT, connect, describe, open_pool
from collector.db.preview import Preview, preview
from collector.db.runs import mark_failed, record_failed_start
from collector.domain import PassCounts, format_cents
from collector.exceptions import CollectorError, ConfigError, DatabaseError, DateOutOfRange
from collector.failures import describe_failure, is_interrupt
from collector.fees.rules import valid_state
from collector.gateways.base import GatewayContext
from collector.gateways.registry import open_gateways
from collector.jobs.collect import PassResult, run_pass
from collector.jobs.presentment import would_refuse
from collector.logs import configure_logging
from collector.metrics import PASSES, export_pass_metrics
from collector.seed import seed_demo


def _date(text: str) -> date:
    # The syntax only: whether the engine may work for the date depends on today in the
    # lessor's zone, a setting, and is checked by _check_dates once the settings are read.
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


_FUTURE_HELP = (
    f"allow a --date after today, at most {MAX_DAYS_AHEAD} days ahead (what falls due by then"
    " is collected early)"
)


def _state(text: str) -> str:
    if not valid_state(text):
        raise argparse.ArgumentTypeError(f"not a two-letter US state or territory code: {text!r}")
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collector", description="Collect lease installments through card and ACH gateways."
    )
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on a failure, print the full traceback after the one-line error (for a bug report)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="apply pending database migrations")

    run = commands.add_parser("run", help="run one collection pass and exit")
    run.add_argument("--date", type=_date, help="business date (default: today, lessor's zone)")
    run.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    run.add_argument(
        "--dry-run", action="store_true", help="show what a pass would charge; change nothing"
    )
    run.add_argument("--allow-future-date", action="store_true", help=_FUTURE_HELP)

    seed = commands.add_parser("seed", help="insert demo customers, leases and schedules")
    seed.add_argument("--customers", type=_positive, required=True)
    seed.add_argument("--due-date", type=_date, help="first due date (default: today)")
    seed.add_argument("--mix", choices=("demo", "ok"), default="demo", help=argparse.SUPPRESS)
    seed.add_argument(
        "--state",
        type=_state,
        help="every lease's jurisdiction, a two-letter US code (default: a mix of states)",
    )

    daemon = commands.add_parser(
        "daemon", help="serve the portal API and /metrics, and collect on a schedule"
    )
    daemon.add_argument("--host", help="address to listen on (default: COLLECTOR_API_HOST)")
    daemon.add_argument(
        "--port", type=_port, help="port to listen on (default: COLLECTOR_API_PORT, 8080)"
    )
    daemon.add_argument(
        "--no-schedule", action="store_true", help="serve only; run no collection passes"
    )

    demo = commands.add_parser("demo", help="seed demo data and run one pass against the sandbox")
    demo.add_argument("--customers", type=_positive, default=200)
    demo.add_argument("--json", action="store_true", help="print a JSON summary as the last line")

    ach = commands.add_parser("ach", help="NACHA files: export bank debits, import returns")
    ach_commands = ach.add_subparsers(dest="ach_command", required=True, metavar="ACTION")
    export = ach_commands.add_parser(
        "export", help="write the debits due at the bank as NACHA files to the outbox"
    )
    export.add_argument("--date", type=_date, help="business date (default: today, lessor's zone)")
    export.add_argument("--allow-future-date", action="store_true", help=_FUTURE_HELP)
    returns = ach_commands.add_parser("import-returns", help="apply a return file from the bank")
    returns.add_argument("file", type=Path, help="the NACHA return file")
    returns.add_argument("--date", type=_date, help="business date (default: today, lessor's zone)")
    returns.add_argument("--allow-future-date", action="store_true", help=_FUTURE_HELP)

    audit = commands.add_parser(
        "audit",
        help="check the ledger's invariants; exit 0 clean, 1 violations found, 2 could not run",
    )
    audit.add_argument("--json", action="store_true", help="print a JSON report as the last line")
    _add_event_commands(commands)

    report = commands.add_parser("report", help="collections reports")
    reports = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    delinquency = reports.add_parser(
        "delinquency", help="past-due buckets and the roll-rate matrix, from the snapshots"
    )
    delinquency.add_argument(
        "--date",
        type=_date,
        help="business date (default: today): the latest snapshot on or before it",
    )
    delinquency.add_argument("--json", action="store_true", help="print JSON as the last line")
    delinquency.add_argument("--allow-future-date", action="store_true", help=_FUTURE_HELP)
    return parser


def _add_event_commands(commands: Any) -> None:
    # The outbox (issue 10): deliver once for cron, list, redeliver.
    from collector.db.outbox import EventStatus, EventType

    deliver = commands.add_parser(
        "deliver", help="deliver the outbox's events due now to the webhook endpoints, once"
    )
    deliver.add_argument("--json", action="store_true", help="print a JSON summary last")
    events = commands.add_parser("events", help="the outbox's events: list, redeliver")
    actions = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="events, newest first, with their delivery status")
    listing.add_argument("--status", choices=[s.value for s in EventStatus])
    listing.add_argument("--type", choices=[t.value for t in EventType])
    listing.add_argument("--limit", type=_positive, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    again = actions.add_parser("redeliver", help="send an event again, or every dead one")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=_positive, help="the event's id")
    which.add_argument("--dead", action="store_true", help="every dead-lettered delivery")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``collector`` console script; returns the exit code.

    The one error boundary of every command: whatever fails, at start or mid-pass (an
    exception group of a pass's task group included), ends as one line on stderr naming the
    cause, without secrets, and exit 1 (``collector audit``: 2).
    """
    args = build_parser().parse_args(argv)
    # The demo is read by a person: its summary says what happened, per-charge lines would
    # drown it. Every other command logs JSON lines for machines.
    configure_logging(json=True, level=logging.ERROR if args.command == "demo" else logging.INFO)
    try:
        try:
            settings = load_settings()
        except ConfigError:
            if args.command == "run" and not args.dry_run:
                _count_unconfigured_run()
            raise
        now = check_in_range(today(settings), what="today's date")  # a clock decades off
        try:
            _check_dates(args, now, settings.timezone)
        except DateOutOfRange as exc:
            # A date given on the command line: a bad command line, refused before any work.
            print(f"collector: error: {exc}", file=sys.stderr)
            return 2
        return anyio.run(
            _dispatch, args, settings, backend="asyncio", backend_options=_loop_options()
        )
    except KeyboardInterrupt:
        print("collector: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        # Not argparse's (parsed above): a library ending the process, as uvicorn does when
        # it cannot bind its port.
        if exc.code in (0, None):
            return 0
        _print_error(exc)
        return AUDIT_COULD_NOT_RUN if args.command == "audit" else 1
    except (Exception, BaseExceptionGroup) as exc:
        if is_interrupt(exc):
            print("collector: interrupted", file=sys.stderr)
            return 130
        _print_error(exc)
        if args.traceback:
            traceback.print_exception(exc, file=sys.stderr)
        # The audit's 1 means "violations found"; it could not run is 2.
        return AUDIT_COULD_NOT_RUN if args.command == "audit" else 1


def _count_unconfigured_run() -> None:
    """A run refused for its settings is a failed pass too: count it and leave it in the
    textfile when that one setting is usable, or the alerts see the last good run's file."""
    PASSES.labels(status="failed").inc()
    textfile = os.environ.get("COLLECTOR_METRICS_TEXTFILE", "")
    if textfile.endswith(".prom"):
        try:
            export_pass_metrics(textfile=Path(textfile), pushgateway=None, job="collector")
        except OSError as exc:
            structlog.get_logger().error("metrics_export_failed", error=describe(exc))


def _check_dates(args: argparse.Namespace, local_today: date, zone: str) -> None:
    """Refuse, with DateOutOfRange, a date argument the engine may not work for, and resolve
    every command's business date (``args.as_of``; ``args.due_date`` for seed)."""
    if args.command == "seed":
        if args.due_date is not None:
            check_business_date(
                args.due_date,
                today=local_today,
                days_ahead=SEED_MAX_DAYS_AHEAD,
                what="--due-date",
                zone=zone,
            )
        args.due_date = args.due_date or local_today
        return
    if getattr(args, "date", None) is None:
        args.as_of = local_today  # demo, daemon, migrate, audit, and a pass for today
        return
    days_ahead, hint = 0, f"give --allow-future-date to run up to {MAX_DAYS_AHEAD} days ahead"
    if args.allow_future_date:
        days_ahead, hint = MAX_DAYS_AHEAD, "--allow-future-date allows no more"
    args.as_of = check_business_date(
        args.date, today=local_today, days_ahead=days_ahead, what="--date", zone=zone, hint=hint
    )


def _loop_options() -> dict[str, bool]:
    # uvloop (installed with uvicorn[standard]) runs the same asyncio code with a loop written
    # in C: the pass's process is the bottleneck of a pass, and its event loop a large part.
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it, but not on Windows
        return {}
    return {"use_uvloop": True}


def _print_error(exc: BaseException) -> None:
    print(f"collector: error: {describe_failure(exc)}", file=sys.stderr)


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command: Callable[[argparse.Namespace, Settings], Any] = {
        "migrate": _migrate,
        "run": _run,
        "seed": _seed,
        "demo": _demo,
        "daemon": _daemon,
        "ach": _ach,
        "audit": _audit,
        "deliver": _deliver,
        "events": _events,
        "report": _report,
    }[args.command]
    result: int = await command(args, settings)
    return result


def database_url(settings: Settings) -> str:
    """The configured database, or the embedded server's ``collector`` database."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return database_url_of(start_embedded(settings.data_dir), DATABASE_NAME)


async def _ensure_database(url: str) -> None:
    """Create the embedded server's database on first use."""
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        async with connect(database_url_of(url, "postgres")) as admin:
            await admin.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        return
    except CANNOT_CONNECT as exc:
        raise DatabaseError(f"cannot connect to the database: {describe(exc)}") from exc
    await conn.close()


@asynccontextmanager
async def _database(
    settings: Settings, *, keep_open: bool = False
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """Migrate, then open the pool (``keep_open``: every connection at once, kept; see
    open_pool)."""
    url = database_url(settings)
    if settings.database_url is None:
        await _ensure_database(url)
    async with connect(url) as conn:
        await migrate(conn)  # cheap when nothing is pending
    async with open_pool(
        url,
        size=settings.pool_size,
        keep_open=keep_open,
        statement_timeout_s=settings.statement_timeout_s,
        lock_timeout_s=settings.lock_timeout_s,
    ) as pool:
        yield url, pool


def today(settings: Settings) -> date:
    """Today in the lessor's time zone: business dates are local dates."""
    return datetime.now(settings.zone).date()


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = database_url(settings)
    if settings.database_url is None:
        await _ensure_database(url)
    async with connect(url) as conn:
        applied = await migrate(conn)
    for migration in applied:
        print(f"applied {migration.name}")
    print(f"schema is up to date ({len(applied)} migration(s) applied)")
    return 0


def _gateway_context(settings: Settings, url: str) -> Callable[[str], GatewayContext]:
    sandbox_url = (
        settings.sandbox_database_url.get_secret_value()
        if settings.sandbox_database_url is not None
        else url
    )

    def make(name: str) -> GatewayContext:
        if name in ("stripe_card", "stripe_ach"):
            return GatewayContext(name=name, database_url=url, options=stripe_options(settings))
        if name == "nacha":
            # Its debits live in the engine's own database (ach_entries), never the sandbox's.
            return GatewayContext(name=name, database_url=url, options=nacha_options(settings))
        return GatewayContext(
            name=name, database_url=sandbox_url, latency_ms=settings.sandbox_latency_ms
        )

    return make


def stripe_options(settings: Settings) -> dict[str, str]:
    """The Stripe gateways' options from the COLLECTOR_STRIPE_* settings (the adapter refuses
    to open without an API key, naming COLLECTOR_STRIPE_API_KEY)."""
    options = {"base_url": settings.stripe_base_url}
    if settings.stripe_api_key is not None:
        options["api_key"] = settings.stripe_api_key.get_secret_value()
    options["timeout_s"] = str(settings.gateway_timeout_s)
    options["settlement_poll_after_s"] = str(settings.stripe_settlement_poll_after_s)
    return options


def nacha_options(settings: Settings) -> dict[str, str]:
    """The nacha gateway's options (GatewayContext.options) from the COLLECTOR_NACHA_* settings."""
    options = {
        "immediate_destination": settings.nacha_immediate_destination,
        "immediate_origin": settings.nacha_immediate_origin,
        "destination_name": settings.nacha_destination_name,
        "origin_name": settings.nacha_origin_name,
        "company_name": settings.nacha_company_name,
        "company_id": settings.nacha_company_id,
        "odfi_id": settings.nacha_odfi_id,
        "sec_code": settings.nacha_sec_code,
        "entry_description": settings.nacha_entry_description,
        "timezone": settings.timezone,
        "prenotes": "true" if settings.prenotes else "false",
    }
    if settings.nacha_fingerprint_key is not None:
        options["fingerprint_key"] = settings.nacha_fingerprint_key.get_secret_value()
    if settings.nacha_vault_file is not None:
        options["vault_file"] = str(settings.nacha_vault_file)
    if settings.nacha_outbox is not None:
        options["outbox"] = str(settings.nacha_outbox)
    return options


async def _ach(args: argparse.Namespace, settings: Settings) -> int:
    if args.ach_command == "export":
        return await _ach_export(args, settings)
    return await _ach_import_returns(args, settings)


async def _ach_export(args: argparse.Namespace, settings: Settings) -> int:
    from collector.gateways.nacha_files import AccountVault, NachaConfig
    from collector.jobs.ach_files import export_files

    as_of: date = args.as_of
    config = NachaConfig.from_options(nacha_options(settings))
    if config.outbox is None:
        raise ConfigError("COLLECTOR_NACHA_OUTBOX: is required to export NACHA files")
    vault = await AccountVault.open(config.vault_file)
    async with _database(settings) as (_url, pool):
        written = await export_files(
            pool, config, vault, config.outbox, as_of=as_of, now=datetime.now(UTC)
        )
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} NACHA file(s) written for {as_of.isoformat()}")
    return 0


async def _ach_import_returns(args: argparse.Namespace, settings: Settings) -> int:
    from collector.ach.nacha import NachaError, read_returns
    from collector.jobs.ach_files import import_returns

    as_of: date = args.as_of
    path: Path = args.file
    try:
        # NACHA files are ASCII; anything else is not a return file.
        text = await anyio.Path(path).read_text(encoding="ascii")
        read_returns(text)  # refuse an unreadable file before touching the database
    except (OSError, UnicodeDecodeError, NachaError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            reason = "holds characters outside ASCII"
        elif isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
        else:
            reason = str(exc)
        print(f"collector: error: cannot import {path}: {reason}", file=sys.stderr)
        print("nothing was applied", file=sys.stderr)
        return 1
    from collector.gateways.nacha_files import AccountVault

    # Notifications of change correct the account in the vault, when there is one.
    vault = (
        await AccountVault.open(settings.nacha_vault_file)
        if settings.nacha_vault_file is not None
        else None
    )
    async with _database(settings) as (_url, pool):
        result = await import_returns(
            pool, text, as_of=as_of, retry_days=settings.soft_retry_days, vault=vault
        )
    print(
        f"returns applied: {result.applied}, already applied: {result.already_applied},"
        f" unknown: {result.unknown}, deferred: {result.deferred},"
        f" changes recorded: {result.changes}, set aside: {result.set_aside}"
    )
    return 0


async def _deliver(args: argparse.Namespace, settings: Settings) -> int:
    from collector.jobs.deliver import Deliverer, open_client

    if not settings.webhook_endpoints:
        raise ConfigError("COLLECTOR_WEBHOOK_ENDPOINTS: no endpoint to deliver to")
    async with _database(settings) as (_url, pool), open_client(settings) as client:
        try:
            counts = await Deliverer(pool, settings, client=client).deliver_once()
        finally:
            _export_delivery_metrics(settings)
    print(
        f"delivered: {counts.delivered}, failed (to retry): {counts.failed},"
        f" dead-lettered: {counts.dead_lettered}, still pending: {counts.pending},"
        f" oldest undelivered: {counts.oldest_age_s:.0f}s"
    )
    for name in counts.circuits_open:
        print(f"circuit open for endpoint {name}: its deliveries wait")
    if args.json:
        print(json.dumps(asdict(counts), sort_keys=True))
    return 0


def _export_delivery_metrics(settings: Settings) -> None:
    from collector.metrics import export_delivery_metrics

    try:
        export_delivery_metrics(
            textfile=settings.metrics_textfile, pushgateway=settings.pushgateway_url
        )
    except OSError as exc:
        structlog.get_logger().error("metrics_export_failed", error=describe(exc))


async def _events(args: argparse.Namespace, settings: Settings) -> int:
    from collector.db import outbox

    async with _database(settings) as (_url, pool):
        if args.events_command == "list":
            lines = await outbox.list_events(
                pool,
                status=outbox.EventStatus(args.status) if args.status else None,
                type=outbox.EventType(args.type) if args.type else None,
                limit=args.limit,
            )
            for line in lines:
                if args.json:
                    print(json.dumps(asdict(line), sort_keys=True, default=str))
                    continue
                lease = f"lease {line.lease_id}" if line.lease_id else "-"
                error = f"  last error: {line.last_error}" if line.last_error else ""
                print(
                    f"{line.id:>8}  {line.type:<27} {line.status:<9}"
                    f" customer {line.customer_id}  {lease}  {line.as_of.isoformat()}"
                    f"  delivered {line.delivered}/{line.endpoints}"
                    f"  attempts {line.attempts}{error}"
                )
            return 0
        if args.dead:
            count = await outbox.redeliver_dead(pool)
            print(f"{count} dead-lettered deliveries will be sent again")
            return 0
        endpoints = await outbox.redeliver(pool, args.id)
        if not endpoints:
            print(
                f"collector: error: event {args.id} has no delivery (no such event,"
                " or not fanned out to an endpoint yet)",
                file=sys.stderr,
            )
            return 1
        print(f"event {args.id} will be sent again to {', '.join(sorted(endpoints))}")
    return 0


AUDIT_COULD_NOT_RUN = 2


async def _audit(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, like the daemon's: only this command renders audits.
    from collector.audit_report import render_text, report_dict
    from collector.db.audit import run_audit

    try:
        async with _database(settings) as (_url, pool):
            report = await run_audit(
                pool, card_rules=settings.card_rules, fee_table=settings.fee_table
            )
    except CollectorError as exc:
        _print_error(exc)
        return AUDIT_COULD_NOT_RUN
    for line in render_text(report):
        print(line)
    if args.json:
        print(json.dumps(report_dict(report), sort_keys=True, default=str))
    return 0 if report.clean else 1


async def _report(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, like the audit's: only this command renders reports.
    from collector.delinquency_report import render_text, report_dict
    from collector.jobs.aging import report

    async with _database(settings) as (_url, pool):
        found = await report(pool, settings, day=args.as_of)
    for line in render_text(found):
        print(line)
    if args.json:
        print(json.dumps(report_dict(found), sort_keys=True))
    return 0


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    as_of: date = args.as_of
    if args.dry_run:
        async with _database(settings) as (_url, pool):
            await _dry_run(args, settings, pool)
        return 0
    # Whatever fails, at start or mid-pass, is counted and left in the textfile: a run that
    # fails before its pass begins (database unreachable, a gateway that will not open) is a
    # failed pass to the alerts, not a textfile of zeros.
    state = _RunState()
    try:
        result = await _collect_once(settings, as_of, state)
    except BaseException as exc:
        if not state.pass_entered and isinstance(exc, Exception):
            PASSES.labels(status="failed").inc()
            structlog.get_logger().error(
                "pass_failed", step="start", as_of=as_of.isoformat(), error=describe_failure(exc)
            )
        await anyio.to_thread.run_sync(_export_metrics, settings)
        raise
    for path in state.written:
        print(f"wrote {path}")
    if state.export_error is not None:
        # The pass is recorded, but monitoring cannot see it: that is a failure too.
        print(f"collector: error: {state.export_error}", file=sys.stderr)
        return 1
    _print_summary(result, as_json=args.json)
    return 0


@dataclasses.dataclass(slots=True)
class _RunState:
    """What ``collector run`` knows of its pass while it runs."""

    pass_entered: bool = False
    written: list[Path] = dataclasses.field(default_factory=list)
    export_error: str | None = None


async def _collect_once(settings: Settings, as_of: date, state: _RunState) -> PassResult:
    async with _database(settings) as (url, pool):
        try:
            async with open_gateways(
                settings.gateways, _gateway_context(settings, url)
            ) as gateways:

                async def export_files() -> None:
                    if "nacha" in gateways:
                        # Imported only where the NACHA gateway is in use.
                        from collector.jobs.ach_files import export_after_pass

                        state.written += await export_after_pass(
                            pool, gateways, as_of=as_of, now=datetime.now(UTC)
                        )

                async def started(_run_id: int) -> None:
                    # The textfile says a pass is running (and since when) while it runs: a
                    # pass that hangs or is killed shows, not only one that finishes.
                    await anyio.to_thread.run_sync(_export_metrics, settings)

                state.pass_entered = True
                with _progress("charging") as progress:
                    result = await run_pass(
                        pool,
                        gateways,
                        settings,
                        as_of=as_of,
                        progress=progress,
                        on_started=started,
                        finish=[export_files],
                    )
        except Exception as exc:
            if not state.pass_entered:
                await _record_failed_start(pool, as_of, exc)
            raise
        error = await anyio.to_thread.run_sync(_try_export_metrics, settings)
        if error is not None:
            state.export_error = f"metrics export failed: {error}"
            PASSES.labels(status="failed").inc()
            structlog.get_logger().error(
                "pass_failed", step="metrics_export", error=state.export_error
            )
            await mark_failed(pool, result.run_id, error=state.export_error)
        return result


async def _record_failed_start(pool: asyncpg.Pool, as_of: date, exc: Exception) -> None:
    """Leave a failed run row for a pass that never began (its gateways would not open)."""
    try:
        await record_failed_start(
            pool,
            as_of=as_of,
            host=socket.gethostname(),
            pid=os.getpid(),
            error=describe_failure(exc),
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as record_exc:
        structlog.get_logger().error("run_record_failed", error=describe_failure(record_exc))


async def _dry_run(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool) -> None:
    as_of: date = args.as_of
    report = await preview(
        pool,
        as_of=as_of,
        gateways=settings.gateways,
        charge_off_days=settings.charge_off_days,
        fee_table=settings.fee_table if settings.late_fees else None,
    )
    report = dataclasses.replace(
        report,
        refused=await would_refuse(
            pool,
            as_of=as_of,
            gateways=settings.gateways,
            batch_size=settings.batch_size,
            card_rules=settings.card_rules,
            charge_off_days=settings.charge_off_days,
        ),
    )
    _print_preview(report, as_json=args.json)


def _try_export_metrics(settings: Settings) -> str | None:
    """Export the metrics; the reason when the textfile could not be written, else None.

    A textfile that cannot be written fails the run: node_exporter keeps serving the old one,
    and only CollectorTextfileStale would tell, a day later. A Pushgateway that cannot be
    reached is logged only: it is a service of its own, whose push_time_seconds shows it.
    """
    try:
        export_pass_metrics(textfile=settings.metrics_textfile, pushgateway=None, job="collector")
    except OSError as exc:
        return describe(exc)
    if settings.pushgateway_url is not None:
        try:
            export_pass_metrics(
                textfile=None, pushgateway=settings.pushgateway_url, job="collector"
            )
        except OSError as exc:
            structlog.get_logger().error("metrics_export_failed", error=describe(exc))
    return None


def _export_metrics(settings: Settings) -> None:
    error = _try_export_metrics(settings)
    if error is not None:
        # Logged; at the end of a completed pass, _collect_once fails the run for it.
        structlog.get_logger().error("metrics_export_failed", error=error)


async def _seed(args: argparse.Namespace, settings: Settings) -> int:
    due_on: date = args.due_date
    async with _database(settings) as (_url, pool):
        with _progress("seeding", total=args.customers) as progress:
            seeded = await seed_demo(
                pool,
                customers=args.customers,
                due_on=due_on,
                mix=args.mix,
                progress=progress,
                state=args.state,
            )
    print(
        f"seeded {seeded.customers} customers, {seeded.installments} installments"
        f" (first due {due_on.isoformat()})"
    )
    return 0


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    as_of: date = args.as_of
    async with _database(settings) as (url, pool):
        with _progress("seeding", total=args.customers) as progress:
            await seed_demo(pool, customers=args.customers, due_on=as_of, progress=progress)
        async with open_gateways(settings.gateways, _gateway_context(settings, url)) as gateways:
            with _progress("charging") as progress:
                result = await run_pass(pool, gateways, settings, as_of=as_of, progress=progress)
    _print_summary(result, as_json=args.json)
    return 0


async def _daemon(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the web stack is the daemon's alone, and a cron pass starts faster
    # and smaller without it.
    from collector.daemon import serve
    from collector.startup import wait_for_database

    host, port = args.host or settings.api_host, args.port or settings.api_port

    async def ready() -> None:
        url = database_url(settings)
        if settings.database_url is None:
            await _ensure_database(url)
        async with connect(url) as conn:
            await migrate(conn)

    # A database that is not there yet (rebooting, upgraded) is waited for, not a failure:
    # systemd would stop restarting a daemon that exits for it after a few tries.
    if not await wait_for_database(ready, settings, host=host, port=port):
        return 0
    async with (
        _database(settings, keep_open=True) as (url, pool),
        open_gateways(settings.gateways, _gateway_context(settings, url)) as gateways,
    ):
        await serve(
            pool,
            gateways,
            settings,
            host=host,
            port=port,
            schedule=not args.no_schedule,
            clock=lambda: datetime.now(UTC),
        )
    return 0


class _Progress:
    """A one-line progress indicator on stderr, shown only on a terminal."""

    def __init__(self, label: str, total: int | None) -> None:
        self._label = label
        self._total = total
        self._done = 0
        self._shown_at = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if self._tty and now - self._shown_at >= 0.1:
            self._shown_at = now
            self._draw()

    def _draw(self) -> None:
        if self._total:
            width = 30
            filled = min(width, width * self._done // self._total)
            bar = "#" * filled + "-" * (width - filled)
            text = f"{self._label} [{bar}] {self._done}/{self._total}"
        else:
            text = f"{self._label}: {self._done}"
        print(f"\r{text}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._tty and self._done:
            self._draw()
            print(file=sys.stderr)


class _progress:
    def __init__(self, label: str, total: int | None = None) -> None:
        self._bar = _Progress(label, total)

    def __enter__(self) -> _Progress:
        return self._bar

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


def summary_dict(result: PassResult) -> dict[str, Any]:
    """The JSON summary of a pass: stable keys scripts rely on."""
    counts: PassCounts = result.counts
    data: dict[str, Any] = {"run_id": result.run_id, "as_of": result.as_of.isoformat()}
    data.update(asdict(counts))
    data["duration_s"] = round(result.duration_s, 3)
    return data


def _print_summary(result: PassResult, *, as_json: bool) -> None:
    c = result.counts
    rows = [
        ("due (claimed this pass)", str(c.due), ""),
        ("succeeded", str(c.succeeded), format_cents(c.charged_cents)),
        ("processing (ACH, not settled)", str(c.processing), format_cents(c.processing_cents)),
        ("declined", str(c.declined), ""),
        ("in doubt (to be looked up)", str(c.in_doubt), ""),
        ("failed (not taken)", str(c.failed), ""),
        ("reconciled from earlier passes", str(c.reconciled), ""),
        ("ACH debits settled / returned", f"{c.settled} / {c.returned}", ""),
    ]
    print(
        f"collection pass {result.run_id} for {result.as_of.isoformat()}"
        f" in {result.duration_s:.2f}s"
    )
    width = max(len(label) for label, _, _ in rows)
    for label, count, amount in rows:
        print(f"  {label:<{width}}  {count:>8}  {amount:>14}".rstrip())
    if as_json:
        print(json.dumps(summary_dict(result), sort_keys=True))


def _print_preview(report: Preview, *, as_json: bool) -> None:
    due_total = sum(g.installments for g in report.due)
    amount_total = sum(g.amount_cents for g in report.due)
    print(f"dry run for {report.as_of.isoformat()}: nothing was charged or written")
    print(f"  would charge {due_total} installment(s), {format_cents(amount_total)}")
    for g in report.due:
        amount = format_cents(g.amount_cents)
        print(f"    {g.gateway:<16} {g.kind:<5} {g.installments:>8}  {amount:>14}")
    fee_total = sum(g.fee_cents for g in report.due)
    if fee_total:
        print(f"  of which late fees assessed before: {format_cents(fee_total)}")
    for f in report.fees:
        print(
            f"  would first assess {f.fees} late fee(s) ({f.rule}), {format_cents(f.cents)},"
            " collected with the overdue amount"
        )
    for s in report.skipped:
        sample = ", ".join(str(i) for i in s.sample_ids)
        print(f"  would skip {s.installments} ({s.reason}), e.g. installment(s) {sample}")
    for r in report.refused:
        sample = ", ".join(str(i) for i in r.sample_ids)
        print(
            f"  of which the eligibility check would refuse {r.installments}"
            f" ({r.reason}, {format_cents(r.amount_cents)}), e.g. installment(s) {sample}"
        )
    for u in report.unresolved:
        print(f"  would reconcile {u.attempts} {u.status} attempt(s) first")
    if report.charge_offs:
        cents = sum(c.amount_cents for c in report.charge_offs)
        sample = ", ".join(str(c.lease_id) for c in report.charge_offs[:10])
        print(
            f"  would charge off {len(report.charge_offs)} lease(s) first"
            f" ({format_cents(cents)} written off), e.g. lease(s) {sample}"
        )
    if as_json:
        data = {
            "as_of": report.as_of.isoformat(),
            "dry_run": True,
            "due": due_total,
            "amount_cents": amount_total,
            "by_gateway": [asdict(g) for g in report.due],
            "skipped": [asdict(s) for s in report.skipped],
            "refused": [asdict(r) for r in report.refused],
            "unresolved": [asdict(u) for u in report.unresolved],
            "charge_offs": [asdict(c) for c in report.charge_offs],
            "fee_cents": fee_total,
            "fees_to_assess": [asdict(f) for f in report.fees],
        }
        print(json.dumps(data, sort_keys=True))
