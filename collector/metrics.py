"""Every Prometheus metric of the engine, defined once (prefix ``collector_``).

Labels come from closed sets (gateway names from configuration, method kinds, outcomes, HTTP
status codes), never from ids. A daemon serves these at ``/metrics``; a cron-run pass cannot
be scraped, so ``collector run`` writes them to a node_exporter textfile or pushes them to a
Pushgateway when configured (see :func:`export_pass_metrics`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    push_to_gateway,
    write_to_textfile,
)

from collector.aging import BucketTotal
from collector.db.stats import Snapshot
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
OLDEST_IN_DOUBT = Gauge(
    "collector_oldest_in_doubt_age_seconds",
    "Age of the oldest attempt whose outcome is unknown (0 when there is none).",
    registry=REGISTRY,
)
COLLECTED_RATIO = Gauge(
    "collector_due_today_collected_ratio",
    "Share of today's due amount collected so far (the collection service level).",
    registry=REGISTRY,
)
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
    OLDEST_IN_DOUBT.set(snapshot.oldest_in_doubt_age_s)
    if snapshot.last_success_at is not None:
        # From the database, so a new process (each cron run, a restarted daemon) reports the
        # true age of the last completed pass, not "never".
        LAST_SUCCESS.set(snapshot.last_success_at.timestamp())
    due = snapshot.due_today_cents
    COLLECTED_RATIO.set(snapshot.collected_today_cents / due if due else 1.0)


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
