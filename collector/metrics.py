"""Every Prometheus metric of the engine, defined once (prefix ``collector_``).

Labels come from closed sets (gateway names from configuration, method kinds, outcomes, HTTP
status codes), never from ids. A daemon serves these at ``/metrics``; a cron-run pass cannot
be scraped, so ``collector run`` writes them to a node_exporter textfile or pushes them to a
Pushgateway when configured (see :func:`export_pass_metrics`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    push_to_gateway,
    write_to_textfile,
)

from collector.aging import BucketTotal
from collector.db.stats import BusinessDay, Snapshot
from collector.domain import AttemptStatus, RunStatus
from collector.eligibility import REFUSAL_REASONS

REGISTRY = CollectorRegistry(auto_describe=True)

CHARGES = Counter(
    "collector_charges_total",
    "Gateway answers recorded, by gateway, payment method kind and outcome.",
    ["gateway", "method_kind", "outcome"],
    registry=REGISTRY,
)
CHARGED_CENTS = Counter(
    "collector_charged_cents_total",
    "Money taken (succeeded charges), in cents.",
    ["gateway", "method_kind"],
    registry=REGISTRY,
)
GATEWAY_LATENCY = Histogram(
    "collector_gateway_request_duration_seconds",
    "Time a gateway took to answer a charge or lookup.",
    ["gateway", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
CHARGES_IN_FLIGHT = Gauge(
    "collector_charges_in_flight",
    "Charges sent to a gateway and not answered yet.",
    registry=REGISTRY,
)
PASS_DURATION = Histogram(
    "collector_pass_duration_seconds",
    "Wall time of a collection pass.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    registry=REGISTRY,
)
PASSES = Counter(
    "collector_passes_total",
    "Collection passes, by how they ended (completed, failed).",
    ["status"],
    registry=REGISTRY,
)
# Both series exist from the start, so the first failure is an increase from 0 that rate()
# and increase() can see, not a series that appears already at 1.
for _status in ("completed", "failed"):
    PASSES.labels(status=_status)
LAST_SUCCESS = Gauge(
    "collector_last_success_timestamp_seconds",
    "Unix time at which the last collection pass completed.",
    registry=REGISTRY,
)
INSTALLMENTS = Gauge(
    "collector_installments",
    "Installments by state: due_today, overdue, in_doubt, pending_settlement (each pass).",
    ["state"],
    registry=REGISTRY,
)
INSTALLMENTS_CENTS = Gauge(
    "collector_installments_cents",
    "Unpaid amount of the installments in each state, in cents (refreshed each pass).",
    ["state"],
    registry=REGISTRY,
)
# Times, not ages: a gauge holds its value between refreshes (a textfile until the next run),
# so an age would stand still while the rules' time() moves on. The rules compute the ages.
OLDEST_IN_DOUBT_SINCE = Gauge(
    "collector_oldest_in_doubt_since_timestamp_seconds",
    "Unix time at which the oldest attempt whose outcome is unknown was made (0: none).",
    registry=REGISTRY,
)
COLLECTED_RATIO = Gauge(
    "collector_due_today_collected_ratio",
    "Share of the amount due on today's business date (lessor's zone) collected and settled;"
    " NaN until a pass for that date has completed.",
    registry=REGISTRY,
)
PENDING_RATIO = Gauge(
    "collector_due_today_pending_ratio",
    "Share of the amount due on today's business date sent as bank debits not settled yet;"
    " NaN until a pass for that date has completed.",
    registry=REGISTRY,
)
DUE_TODAY_CENTS = Gauge(
    "collector_due_today_cents",
    "Amount due on today's business date, by part: due (all of it), collected (settled),"
    " pending (bank debits in flight). From the database: true for any source, any window.",
    ["part"],
    registry=REGISTRY,
)
PASS_RUNNING_SINCE = Gauge(
    "collector_pass_running_since_timestamp_seconds",
    "Unix time at which the oldest collection pass still running started (0: none running).",
    registry=REGISTRY,
)
PASS_LAST_PROGRESS = Gauge(
    "collector_pass_last_progress_timestamp_seconds",
    "Unix time of the running pass's last progress (a claim, a recorded batch, a step); 0"
    " when no pass runs in this process.",
    registry=REGISTRY,
)
PASS_STALLED = Gauge(
    "collector_pass_stalled",
    "1 while this process's running pass has made no progress for COLLECTOR_WATCHDOG_STALL_S.",
    registry=REGISTRY,
)
LAST_PASS_STARTED = Gauge(
    "collector_last_pass_started_timestamp_seconds",
    "Unix time at which the last collection pass (any outcome, any host) started.",
    registry=REGISTRY,
)
LAST_PASS_FINISHED = Gauge(
    "collector_last_pass_finished_timestamp_seconds",
    "Unix time at which the last collection pass (any outcome, any host) ended.",
    registry=REGISTRY,
)
NEXT_PASS_DUE_BY = Gauge(
    "collector_next_pass_due_by_timestamp_seconds",
    "Unix time by which a pass for the business date after the last completed one must have"
    " completed (that date at COLLECTOR_PASS_DEADLINE_TIME, lessor's zone).",
    registry=REGISTRY,
)
ACH_UNFILED = Gauge(
    "collector_ach_unfiled_entries",
    "Bank debits accepted and due at the bank by the next banking day that are in no NACHA"
    " file written to the outbox yet.",
    registry=REGISTRY,
)
ACH_UNFILED_SINCE = Gauge(
    "collector_ach_unfiled_since_timestamp_seconds",
    "Unix time at which the oldest of those unfiled debits was accepted (0: none).",
    registry=REGISTRY,
)
ACH_OUTBOX_FILES = Gauge(
    "collector_ach_outbox_files",
    "NACHA files in COLLECTOR_NACHA_OUTBOX that the bank has not collected yet.",
    registry=REGISTRY,
)
ACH_OUTBOX_OLDEST = Gauge(
    "collector_ach_outbox_oldest_file_timestamp_seconds",
    "Modification time of the oldest NACHA file still in the outbox (0: the outbox is empty).",
    registry=REGISTRY,
)
IN_DOUBT_RESOLVED = Counter(
    "collector_in_doubt_resolved_total",
    "In-doubt attempts whose outcome a lookup found, by gateway, method kind and the outcome"
    " (collector_charges_total counts each attempt's first answer once).",
    ["gateway", "method_kind", "outcome"],
    registry=REGISTRY,
)
ACH_SETTLED = Counter(
    "collector_ach_settled_total",
    "Bank debits that settled (the money is the lessor's), by gateway.",
    ["gateway"],
    registry=REGISTRY,
)
ACH_SETTLED_CENTS = Counter(
    "collector_ach_settled_cents_total",
    "Money of bank debits that settled, in cents, by gateway.",
    ["gateway"],
    registry=REGISTRY,
)
ACH_RETURNED = Counter(
    "collector_ach_returned_total",
    "Bank debits that came back (a return, or a dispute), by gateway.",
    ["gateway"],
    registry=REGISTRY,
)
ACH_RETURNED_CENTS = Counter(
    "collector_ach_returned_cents_total",
    "Money of bank debits that came back, in cents, by gateway.",
    ["gateway"],
    registry=REGISTRY,
)
SETTLEMENT_FAILURES = Counter(
    "collector_settlement_failures_total",
    "Settlement lookups that failed (the gateway could not be asked where a debit stands),"
    " by gateway; the debit is asked again by the next pass.",
    ["gateway"],
    registry=REGISTRY,
)
API_RESPONSES = Counter(
    "collector_api_responses_total",
    "Answers of the daemon's HTTP application (portal API, webhooks, probes), by status code;"
    " counted outermost, so an unhandled error's 500 is counted too.",
    ["code"],
    registry=REGISTRY,
)
for _code in ("200", "500", "503"):
    API_RESPONSES.labels(code=_code)
MANUAL_PAY_REQUESTS = Counter(
    "collector_manual_pay_requests_total",
    "Manual-pay API requests, by HTTP status code.",
    ["code"],
    registry=REGISTRY,
)

ACH_RETURN_RATE = Gauge(
    "collector_ach_return_rate",
    "ACH returns over debits sent, last 60 days, by category (unauthorized: NACHA threshold"
    " 0.5%; administrative: 3%; overall: 15%).",
    ["category"],
    registry=REGISTRY,
)

STATES = ("due_today", "overdue", "in_doubt", "pending_settlement")


DELINQUENCY_LEASES = Gauge(
    "collector_delinquency_leases",
    "Leases by delinquency bucket (current, 1-30, 31-60, 61-90, 90+ days past due; the"
    " configured edges), from the snapshot of the pass's business date.",
    ["bucket"],
    registry=REGISTRY,
)
DELINQUENCY_CENTS = Gauge(
    "collector_delinquency_cents",
    "Past-due cents by delinquency bucket (neither paid nor in flight), from the snapshot of"
    " the pass's business date.",
    ["bucket"],
    registry=REGISTRY,
)
CHARGED_OFF_LEASES = Counter(
    "collector_charged_off_leases_total",
    "Leases the pass charged off (past the configured days past due).",
    registry=REGISTRY,
)
CHARGED_OFF_CENTS = Counter(
    "collector_charged_off_cents_total",
    "Cents written off by charge-offs (what was neither paid nor in flight).",
    registry=REGISTRY,
)
LATE_FEES_ASSESSED = Counter(
    "collector_late_fees_assessed_total",
    "Late fees the pass assessed (one per installment at most).",
    registry=REGISTRY,
)
LATE_FEES_ASSESSED_CENTS = Counter(
    "collector_late_fees_assessed_cents_total",
    "Cents of late fees the pass assessed.",
    registry=REGISTRY,
)
LATE_FEES_WAIVED_CENTS = Counter(
    "collector_late_fees_waived_cents_total",
    "Cents of late fees waived through the API.",
    registry=REGISTRY,
)

PROMISES_RESOLVED = Counter(
    "collector_promises_resolved_total",
    "Promises to pay the pass resolved, by outcome (kept, broken, cancelled).",
    ["outcome"],
    registry=REGISTRY,
)
PROMISES = Gauge(
    "collector_promises",
    "Promises to pay by status (open, kept, broken, cancelled), from the database: true on a"
    " textfile host too, where counters start again at every run.",
    ["status"],
    registry=REGISTRY,
)
PROMISES_COLLECTED = Counter(
    "collector_promise_collections_total",
    "Automatic collections of promised amounts on their date, by the payment's status"
    " (succeeded, processing, declined, refused, ...; skipped: manual pay would not take it).",
    ["status"],
    registry=REGISTRY,
)
PROMISE_STATUSES = ("open", "kept", "broken", "cancelled")


def set_promise_gauges(counts: Mapping[str, int]) -> None:
    """Show the database's count of promises in each status (0 for a status with none)."""
    for status in PROMISE_STATUSES:
        PROMISES.labels(status=status).set(counts.get(status, 0))


def set_delinquency_gauges(totals: Sequence[BucketTotal]) -> None:
    """Show a delinquency snapshot's bucket totals on the gauges."""
    for total in totals:
        DELINQUENCY_LEASES.labels(bucket=total.bucket).set(total.leases)
        DELINQUENCY_CENTS.labels(bucket=total.bucket).set(total.cents)


def set_gauges(snapshot: Snapshot) -> None:
    """Show a database snapshot on the gauges."""
    for state in STATES:
        count, cents = snapshot.states.get(state, (0, 0))
        if state == "in_doubt":
            count, cents = snapshot.in_doubt
        INSTALLMENTS.labels(state=state).set(count)
        INSTALLMENTS_CENTS.labels(state=state).set(cents)
    OLDEST_IN_DOUBT_SINCE.set(_stamp(snapshot.oldest_in_doubt_at))
    if snapshot.last_success_at is not None:
        # From the database, so a new process (each cron run, a restarted daemon) reports the
        # true age of the last completed pass, not "never".
        LAST_SUCCESS.set(snapshot.last_success_at.timestamp())
    LAST_PASS_STARTED.set(_stamp(snapshot.last_started_at))
    LAST_PASS_FINISHED.set(_stamp(snapshot.last_finished_at))
    due = snapshot.due_today_cents
    DUE_TODAY_CENTS.labels(part="due").set(due)
    DUE_TODAY_CENTS.labels(part="collected").set(snapshot.collected_today_cents)
    DUE_TODAY_CENTS.labels(part="pending").set(snapshot.pending_today_cents)
    if not snapshot.today_completed:
        # Before the day's pass nothing due today has been asked for: a ratio of 0 would say
        # collection failed (a false ticket after every restart before the daily time).
        COLLECTED_RATIO.set(math.nan)
        PENDING_RATIO.set(math.nan)
    else:
        COLLECTED_RATIO.set(snapshot.collected_today_cents / due if due else 1.0)
        PENDING_RATIO.set(snapshot.pending_today_cents / due if due else 0.0)
    ACH_UNFILED.set(snapshot.ach_unfiled)
    ACH_UNFILED_SINCE.set(_stamp(snapshot.ach_unfiled_since))


# The business date's totals, read from the database (collector/db/stats.py, business_day):
# cumulative for the lessor's current business date, refreshed with the other gauges (each
# pass's end, the daemon's timer), so they are true for a scraped daemon and for a textfile
# that a new process writes each pass, where a counter restarts at 0 and rate()/increase()
# of it mean nothing. They start again from 0 at the next business date.
BUSINESS_DAY_START = Gauge(
    "collector_business_day_start_timestamp_seconds",
    "Unix time of the midnight (lessor's zone) that starts the business date the"
    " collector_business_day_* gauges describe.",
    registry=REGISTRY,
)
BUSINESS_DAY_ATTEMPTS = Gauge(
    "collector_business_day_attempts",
    "Charge attempts made on the current business date, by gateway, method kind and their"
    " outcome as it stands (each attempt once, under its latest outcome), from the database.",
    ["gateway", "method_kind", "outcome"],
    registry=REGISTRY,
)
BUSINESS_DAY_ATTEMPTS_CENTS = Gauge(
    "collector_business_day_attempts_cents",
    "Cents of those attempts, by gateway, method kind and outcome (succeeded: money taken).",
    ["gateway", "method_kind", "outcome"],
    registry=REGISTRY,
)
BUSINESS_DAY_REFUSED = Gauge(
    "collector_business_day_refused",
    "Attempts of the current business date the eligibility check refused, by reason.",
    ["reason"],
    registry=REGISTRY,
)
BUSINESS_DAY_PASSES = Gauge(
    "collector_business_day_passes",
    "Collection passes for the current business date (any host), by status: running,"
    " completed, failed, abandoned.",
    ["status"],
    registry=REGISTRY,
)
BUSINESS_DAY_PASS_SECONDS = Gauge(
    "collector_business_day_pass_seconds",
    "Wall seconds of the passes for the current business date that ended, by status.",
    ["status"],
    registry=REGISTRY,
)
BUSINESS_DAY_ACH_DEBITS = Gauge(
    "collector_business_day_ach_debits",
    "Bank debits whose money settled, or came back (returned, or reversed after settling), on"
    " the current business date, by gateway and result (settled, returned), from the journal.",
    ["gateway", "result"],
    registry=REGISTRY,
)
BUSINESS_DAY_ACH_CENTS = Gauge(
    "collector_business_day_ach_cents",
    "Cents of those bank debits, by gateway and result (settled, returned).",
    ["gateway", "result"],
    registry=REGISTRY,
)
BUSINESS_DAY_CHARGED_OFF_LEASES = Gauge(
    "collector_business_day_charged_off_leases",
    "Leases charged off on the current business date, from the journal.",
    registry=REGISTRY,
)
BUSINESS_DAY_CHARGED_OFF_CENTS = Gauge(
    "collector_business_day_charged_off_cents",
    "Cents written off by the current business date's charge-offs, from the journal.",
    registry=REGISTRY,
)
BUSINESS_DAY_LATE_FEES = Gauge(
    "collector_business_day_late_fees",
    "Late fees assessed (by the pass) and waived (through the API) on the current business"
    " date, from the journal.",
    ["kind"],
    registry=REGISTRY,
)
BUSINESS_DAY_LATE_FEES_CENTS = Gauge(
    "collector_business_day_late_fees_cents",
    "Cents of the late fees assessed and waived on the current business date, from the journal.",
    ["kind"],
    registry=REGISTRY,
)
BUSINESS_DAY_SET_ASIDE = Gauge(
    "collector_business_day_set_aside",
    "Rows set aside for an operator (needs_attention) during the current business date,"
    " resolved since or not, by subject and reason.",
    ["subject", "reason"],
    registry=REGISTRY,
)
RUN_STATUSES = tuple(status.value for status in RunStatus)
ACH_RESULTS = ("settled", "returned")

# The label sets each labelled business-day gauge has shown: one the new date does not have
# goes back to 0 (the series stays, so a panel shows the new date's 0, not yesterday's value).
_SHOWN: dict[int, set[tuple[str, ...]]] = {}
_Labels = TypeVar("_Labels", bound=tuple[str, ...])


def _show(gauge: Gauge, values: Mapping[_Labels, float]) -> None:
    shown = _SHOWN.setdefault(id(gauge), set())
    for key in shown - values.keys():
        gauge.labels(*key).set(0)
    for key, value in values.items():
        gauge.labels(*key).set(value)
    shown.update(values)


def set_business_day_gauges(day: BusinessDay, *, start: datetime) -> None:
    """Show a business date's totals on the collector_business_day_* gauges."""
    BUSINESS_DAY_START.set(start.timestamp())
    # Every outcome of each gateway and method kind seen today, 0 when none: a ratio of two
    # outcomes (the decline rate) then has both sides.
    pairs = {(gateway, kind) for gateway, kind, _outcome in day.attempts}
    keys = [(g, k, status.value) for g, k in sorted(pairs) for status in AttemptStatus]
    _show(BUSINESS_DAY_ATTEMPTS, {key: day.attempts.get(key, (0, 0))[0] for key in keys})
    _show(BUSINESS_DAY_ATTEMPTS_CENTS, {key: day.attempts.get(key, (0, 0))[1] for key in keys})
    refused = {(reason,): day.refused.get(reason, 0) for reason in REFUSAL_REASONS}
    _show(BUSINESS_DAY_REFUSED, refused | {(r,): count for r, count in day.refused.items()})
    _show(BUSINESS_DAY_PASSES, {(s,): day.passes.get(s, (0, 0.0))[0] for s in RUN_STATUSES})
    _show(BUSINESS_DAY_PASS_SECONDS, {(s,): day.passes.get(s, (0, 0.0))[1] for s in RUN_STATUSES})
    gateways = sorted({gateway for gateway, _result in day.ach})
    ach = {(g, r): day.ach.get((g, r), (0, 0)) for g in gateways for r in ACH_RESULTS}
    _show(BUSINESS_DAY_ACH_DEBITS, {key: debits for key, (debits, _cents) in ach.items()})
    _show(BUSINESS_DAY_ACH_CENTS, {key: cents for key, (_debits, cents) in ach.items()})
    BUSINESS_DAY_CHARGED_OFF_LEASES.set(day.charged_off_leases)
    BUSINESS_DAY_CHARGED_OFF_CENTS.set(day.charged_off_cents)
    for kind in ("assessed", "waived"):
        fees, cents = day.late_fees.get(kind, (0, 0))
        BUSINESS_DAY_LATE_FEES.labels(kind=kind).set(fees)
        BUSINESS_DAY_LATE_FEES_CENTS.labels(kind=kind).set(cents)
    _show(BUSINESS_DAY_SET_ASIDE, day.set_aside)


def _stamp(at: datetime | None) -> float:
    return at.timestamp() if at is not None else 0.0


def export_pass_metrics(*, textfile: Path | None, pushgateway: str | None, job: str) -> None:
    """Write the registry to a node_exporter textfile and/or push it to a Pushgateway."""
    if textfile is not None:
        # write_to_textfile writes a temporary file and renames it: a scrape never sees half.
        write_to_textfile(os.fspath(textfile), REGISTRY)
    if pushgateway is not None:
        push_to_gateway(pushgateway, job=job, registry=REGISTRY)


NEEDS_ATTENTION = Counter(
    "collector_needs_attention_total",
    "Rows set aside for an operator because a batch statement could not apply them, by"
    " subject and reason; the rest of the batch went on (collector audit lists them).",
    ["subject", "reason"],
    registry=REGISTRY,
)

AUDIT_VIOLATIONS = Gauge(
    "collector_audit_violations",
    "Invariant violations found by the last ledger audit, by check (0 when clean).",
    ["check"],
    registry=REGISTRY,
)

PRESENTMENTS_REFUSED = Counter(
    "collector_presentments_refused_total",
    "Presentments the eligibility check refused before any gateway call, by reason.",
    ["reason"],
    registry=REGISTRY,
)
# Every reason's series exists from the start at 0, so that increase() sees the first one.
for _reason in sorted(REFUSAL_REASONS):
    PRESENTMENTS_REFUSED.labels(reason=_reason)

HTTP_REFUSED_REASONS = (
    "header_timeout",  # the request's headers did not arrive in time (slowloris)
    "header_too_large",  # 431
    "bad_request",  # 400: not valid HTTP
    "body_too_large",  # 413, by Content-Length or counted while streaming
    "body_timeout",  # 408: the body did not arrive in time
    "write_timeout",  # the client stopped reading its response
    "evicted_idle",  # an idle connection closed to make room for a new one
    "over_capacity",  # every connection busy with a request: the new one refused (503)
)
HTTP_REFUSED = Counter(
    "collector_http_refused_total",
    "HTTP connections closed or requests refused by the daemon's limits, by reason.",
    ["reason"],
    registry=REGISTRY,
)
for _reason in HTTP_REFUSED_REASONS:
    HTTP_REFUSED.labels(reason=_reason)
HTTP_CONNECTIONS = Gauge(
    "collector_http_connections",
    "HTTP connections the daemon holds open.",
    registry=REGISTRY,
)
HTTP_ACCEPT_ERRORS = Counter(
    "collector_http_accept_errors_total",
    "Failed accept() calls on the daemon's listening socket (EMFILE: out of file"
    " descriptors), by errno name; logged once per COLLECTOR_HTTP_ACCEPT_ERROR_LOG_INTERVAL_S.",
    ["errno"],
    registry=REGISTRY,
)

WEBHOOKS_REJECTED = Counter(
    "collector_webhooks_rejected_total",
    "Webhook deliveries refused with nothing applied (bad signature, malformed event, an event"
    " that does not match the attempt it names), by gateway and reason.",
    ["gateway", "reason"],
    registry=REGISTRY,
)

# The outbox's deliveries (collector/jobs/deliver.py). Endpoint names come from
# COLLECTOR_WEBHOOK_ENDPOINTS: a closed set. Every one is labelled by endpoint, so a process
# that delivers nothing (`collector run`) exports none of their samples, and the textfile
# `collector deliver` writes beside the pass's holds only these (no series in two files).
DELIVERY_RESULTS = ("delivered", "failed", "timeout", "dead_lettered")
EVENTS_PENDING = Gauge(
    "collector_events_pending",
    "Event deliveries waiting to be made to each endpoint (events not fanned out yet count"
    " for every endpoint).",
    ["endpoint"],
    registry=REGISTRY,
)
EVENTS_OLDEST_UNDELIVERED = Gauge(
    "collector_events_oldest_undelivered_age_seconds",
    "Age of the oldest event not yet delivered to the endpoint (0 when none waits).",
    ["endpoint"],
    registry=REGISTRY,
)
EVENT_DELIVERIES = Counter(
    "collector_event_deliveries_total",
    "Webhook delivery attempts, by endpoint and result (delivered: a 2xx answer; failed:"
    " another answer or a network error; timeout; dead_lettered: the last one allowed failed,"
    " or the body was refused).",
    ["endpoint", "result"],
    registry=REGISTRY,
)
WEBHOOK_CIRCUIT_OPEN = Gauge(
    "collector_webhook_circuit_open",
    "1 while an endpoint's circuit breaker holds its deliveries back, else 0.",
    ["endpoint"],
    registry=REGISTRY,
)
DELIVERY_SAMPLES = (
    "collector_events_pending",
    "collector_events_oldest_undelivered_age_seconds",
    "collector_event_deliveries_total",
    "collector_event_deliveries_created",
    "collector_webhook_circuit_open",
)


def delivery_textfile(pass_textfile: Path) -> Path:
    """Where `collector deliver` leaves its metrics: beside the pass's textfile."""
    return pass_textfile.with_name(f"{pass_textfile.stem}-deliver.prom")


def export_delivery_metrics(*, textfile: Path | None, pushgateway: str | None) -> None:
    """Write the delivery metrics alone beside the pass's textfile (``<name>-deliver.prom``)
    and/or push them to a Pushgateway under their own job, so that neither replaces what a
    pass left."""
    only = cast(CollectorRegistry, REGISTRY.restricted_registry(DELIVERY_SAMPLES))
    if textfile is not None:
        write_to_textfile(os.fspath(delivery_textfile(textfile)), only)
    if pushgateway is not None:
        push_to_gateway(pushgateway, job="collector-deliver", registry=only)
