"""Every knob of the engine, read once from the environment (prefix ``COLLECTOR_``).

Only the entry points (``cli``, ``daemon``) build a :class:`Settings`; everything below them
receives it as an argument.

Each setting is validated at load for what it will be used for, so that a value that would
break a pass later (a rate limit the limiter cannot pace, a gateway no adapter is registered
under, a pool too small for the pass's own connections) stops the command at start with one
line naming the setting: :func:`load_settings` raises :class:`ConfigError`.
"""

from __future__ import annotations

import functools
import itertools
import re
import string
from datetime import time
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from collector.business_dates import MAX_RETRY_DAYS
from collector.exceptions import ConfigError
from collector.fees.rules import FeeTable, load_rules
from collector.policy import CardRetryRules

PositiveInt = Annotated[int, Field(gt=0)]
# Charges per second: any positive rate, fractions included (0.5 is one charge every two
# seconds); NaN and infinity are no rate.
ChargeRate = Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)]

# Connections a pass holds besides its claim loops' (one each): its liveness lock's, and the
# recorder's. Fewer, and the recorder waits for a connection that never comes.
PASS_OWN_CONNECTIONS = 2
MAX_SOFT_RETRIES = 10

_CLOCK_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")


@functools.cache
def _registered_gateways() -> frozenset[str]:
    # Imported here: the registry reads the installed packages' entry points, once.
    from collector.gateways.registry import available_gateways

    return frozenset(available_gateways())


def _check_url(value: str, *, schemes: tuple[str, ...], default_scheme: str = "") -> None:
    """Raise ValueError unless ``value`` is a URL of one of ``schemes`` with a host part and
    valid ports; the message never repeats the URL (it may carry a password)."""
    if "://" not in value and default_scheme:
        value = f"{default_scheme}://{value}"
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL")
    # libpq-style URLs may list several hosts, "h1:5432,h2:5433"; each port must be a port.
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(","):
        if host.startswith("["):  # [IPv6 address]:port
            _, bracket, rest = host.partition("]")
            if not bracket:
                raise ValueError("an IPv6 host is not closed by ']'")
            port = rest.removeprefix(":")
        else:
            port = host.rpartition(":")[2] if ":" in host else ""
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} is not a port number (1-65535)")


_ENDPOINT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# What a portal link template may name (str.format fields).
PORTAL_LINK_FIELDS = frozenset({"lease_id", "customer_id", "event_id"})


class WebhookEndpoint(BaseModel):
    """One receiver of the outbox's events: a name (the metrics' label), its URL, and the
    secrets its deliveries are signed with (two while the receiver rotates: each delivery
    carries a signature under each)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    url: str
    secrets: list[SecretStr] = Field(min_length=1, max_length=2)

    @field_validator("name")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _ENDPOINT_NAME.match(value):
            raise ValueError("a name is 1-32 of a-z, 0-9, '_' and '-', starting alphanumeric")
        return value

    @field_validator("url")
    @classmethod
    def _endpoint_url(cls, value: str) -> str:
        _check_url(value, schemes=("https", "http"))
        if not urlsplit(value).hostname:
            raise ValueError("names no host")
        return value

    @field_validator("secrets")
    @classmethod
    def _long_secrets(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(secret.get_secret_value()) < 16 for secret in value):
            raise ValueError("every webhook secret must be at least 16 characters")
        return value


class Settings(BaseSettings):
    """The engine's configuration; every setting that waits or scales has a finite default."""

    model_config = SettingsConfigDict(
        env_prefix="COLLECTOR_", env_file=None, extra="ignore", frozen=True
    )

    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql:// URL; unset means the embedded server under data_dir.",
    )
    data_dir: Path = Field(default=Path(".collector"), description="Embedded server's home.")
    timezone: str = Field(
        default="America/New_York", description="IANA zone of the lessor's business dates."
    )
    concurrency: int = Field(default=64, gt=0, le=10_000, description="Charges in flight.")
    batch_size: int = Field(default=500, gt=0, le=10_000, description="Rows per claim/record.")
    claimers: int = Field(default=1, gt=0, le=64, description="Claim loops per pass.")
    audit_after_pass: bool = Field(
        default=True,
        description="Run the ledger audit after each pass and export collector_audit_violations"
        " (it reads the whole book: a very large book may turn it off and run `collector audit`"
        " on its own schedule).",
    )
    claim_deadline_s: int = Field(
        default=600, gt=0, le=86_400, description="Backstop before a claim counts as abandoned."
    )
    gateway_timeout_s: float = Field(
        default=30.0, gt=0, le=300, description="Longest wait for one gateway answer."
    )
    pool_size: int = Field(default=10, gt=1, le=200, description="Database connections.")
    gateways: Annotated[list[str], NoDecode] = Field(
        default=["sandbox_card", "sandbox_ach"],
        description="Gateway adapters to enable, by registered name (comma-separated).",
    )
    rate_limits: dict[str, ChargeRate] = Field(
        default_factory=dict,
        description='Per-gateway charges per second, JSON: {"stripe_card": 80}; fractions'
        " pace slower than one a second (0.5: one charge every 2 s).",
    )
    sandbox_latency_ms: float = Field(
        default=0.0, ge=0, le=60_000, description="Simulated latency of the sandbox gateways."
    )
    sandbox_database_url: SecretStr | None = Field(
        default=None,
        description="Where the sandbox keeps its charges; unset means the engine's database.",
    )
    soft_retry_days: Annotated[list[int], NoDecode] = Field(
        default=[3, 5, 7],
        max_length=MAX_SOFT_RETRIES,
        description="Days between automatic retries after a soft decline; its length caps them.",
    )

    # The card networks' caps on declined attempts per card in 30 days (sources in
    # collector/policy.py): Visa 15 (Visa Core Rules, excessive reattempts, April 2021),
    # Mastercard 35 (Excessive Retry program). Lower them to be stricter; never raise them.
    visa_max_declines_30d: int = Field(
        default=15, ge=1, le=15, description="Visa's cap of declined attempts per card in 30 days."
    )
    mastercard_max_declines_30d: int = Field(
        default=35, ge=1, le=35, description="Mastercard's cap per card in 30 days."
    )
    other_card_max_declines_30d: int = Field(
        default=15, ge=1, le=35, description="The cap for other card brands."
    )
    # The two-strike stop (CFPB payment rule for covered loans, 12 CFR 1041.8): after this many
    # consecutive failed automatic presentments of a lease's money to one card or account, no
    # automatic attempt on it until the customer authorizes it again in the portal.
    two_strike_limit: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Consecutive failed automatic presentments per lease and method before"
        " the engine waits for a new authorization (0: off).",
    )
    payoff_quote_days: int = Field(
        default=10,
        ge=1,
        le=60,
        description="A payoff quote holds for at most this many days, today included (and"
        " never past the day before the lease's next due date, or its early-purchase window).",
    )
    # Delinquency aging (collector/aging.py): the upper edges of the delinquent buckets in days
    # past due (30,60,90: 1-30, 31-60, 61-90, 90+), the charge-off age, the roll-rate span.
    delinquency_bucket_days: Annotated[list[int], NoDecode] = Field(
        default=[30, 60, 90],
        min_length=1,
        max_length=10,
        description="Upper edges of the delinquency buckets in days past due, increasing.",
    )
    delinquency_snapshots: bool = Field(
        default=True,
        description="Write the delinquency snapshot of each business date at the end of a pass.",
    )
    charge_off_days: int = Field(
        default=120,
        ge=0,
        le=3650,
        description="A lease more than this many days past due is charged off by the pass"
        " (0: never).",
    )
    # Promises to pay (collector/jobs/promises.py): how far ahead a promise's date may be.
    promise_max_days: int = Field(
        default=30,
        ge=1,
        le=366,
        description="A promise to pay may name a date at most this many days after today.",
    )
    roll_rate_days: int = Field(
        default=30,
        ge=1,
        le=366,
        description="How far back the report's roll-rate matrix compares (a month: 30).",
    )
    # Late fees (issue 9, part 2; README "Late fees"): off unless the lessor's agreements
    # specify them (every statute in the table allows a fee only then).
    late_fees: bool = Field(
        default=False,
        description="Assess late fees by the pass, per the lease's state (the rule table).",
    )
    late_fee_rules_file: Path | None = Field(
        default=None,
        description="A reviewed rule table replacing the shipped one (same TOML shape).",
    )
    allocation_order: Literal["installment", "rent_first", "newest_first"] = Field(
        default="installment",
        description="What a payment pays first: 'installment' (the oldest installment's rent,"
        " then its fee, then the next), 'rent_first' (every installment's rent oldest first,"
        " then the fees), 'newest_first' (the most recent installment first).",
    )
    stripe_api_key: SecretStr | None = Field(
        default=None, description="Stripe secret key (sk_live_... or sk_test_...)."
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="Signing secret of the Stripe webhook endpoint (whsec_...)."
    )
    stripe_settlement_poll_after_s: int = Field(
        default=86_400,
        ge=0,
        le=30 * 86_400,
        description="Age at which a Stripe ACH debit is polled (webhooks report it sooner).",
    )
    stripe_base_url: str = Field(
        default="https://api.stripe.com", description="Stripe's API address (tests: a fake)."
    )
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens accepted by /v1 (comma-separated; several for rotation).",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the daemon listens on.")
    api_port: int = Field(default=8080, gt=0, lt=65536, description="Port the daemon listens on.")
    primary_change_notice_days: int = Field(
        default=2, ge=0, le=31, description="Warn on a primary change this close to a due date."
    )
    metrics_textfile: Path | None = Field(
        default=None, description="node_exporter textfile that `run` writes its metrics to."
    )
    pushgateway_url: str | None = Field(
        default=None, description="Pushgateway address that `run` pushes its metrics to."
    )
    schedule_time: str = Field(
        default="06:00", description="Local time (HH:MM) of the daemon's daily pass."
    )
    retry_interval_s: int = Field(
        default=3600, gt=0, le=86_400, description="Seconds between the daemon's retry passes."
    )
    shutdown_grace_s: float = Field(
        default=30.0, gt=0, le=3600, description="Time SIGTERM allows in-flight charges."
    )
    pass_deadline_time: str = Field(
        default="10:00",
        description="Local time (HH:MM) by which a pass for the day must have completed"
        " (collector_next_pass_due_by_timestamp_seconds, CollectorDailyPassMissing).",
    )
    metrics_refresh_s: float = Field(
        default=60.0, gt=0, le=3600, description="Seconds between the daemon's gauge refreshes."
    )
    statement_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="Longest a statement of the engine may run before the database cancels it.",
    )
    lock_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="Longest a statement of the engine may wait for a lock.",
    )
    progress_interval_s: float = Field(
        default=60.0, gt=0, le=3600, description="Seconds between a pass's pass_progress lines."
    )
    watchdog_stall_s: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="A pass with no progress for this long is reported stalled.",
    )

    # The NACHA file gateway ("nacha"): checked when the gateway opens, not here.
    nacha_vault_file: Path | None = Field(
        default=None,
        description="JSON account vault (token -> bank account), mode 0600, outside the DB.",
    )
    nacha_outbox: Path | None = Field(
        default=None, description="Directory `collector ach export` writes NACHA files to."
    )
    nacha_immediate_destination: str = Field(
        default="", description="Routing number of the bank or operator receiving the files."
    )
    nacha_immediate_origin: str = Field(
        default="", description="Immediate Origin: 10 characters the ODFI assigned."
    )
    nacha_destination_name: str = Field(default="", description="Immediate Destination Name.")
    nacha_origin_name: str = Field(default="", description="Immediate Origin Name.")
    nacha_company_name: str = Field(default="", description="Company Name on the statement.")
    nacha_company_id: str = Field(default="", description="Company Identification (10).")
    nacha_odfi_id: str = Field(
        default="", description="First 8 digits of the ODFI's routing number (trace prefix)."
    )
    nacha_sec_code: str = Field(default="PPD", description="Standard Entry Class: PPD or WEB.")
    nacha_fingerprint_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC that names a vault account (routing and account number)"
        " in the database; set it once, before methods are added.",
    )
    nacha_entry_description: str = Field(
        default="LEASE PMT", description="Company Entry Description (10 characters)."
    )
    # NACHA account validation: a prenote before the first WEB debit of a new bank account.
    prenotes: bool = Field(
        default=True,
        description="Send a prenote (zero-dollar entry) before the first WEB debit of a new"
        " account, and hold that debit until it is old enough (NACHA gateway, SEC code WEB).",
    )
    prenote_wait_days: int = Field(
        default=3,
        ge=3,
        le=30,
        description="Banking days from a prenote's effective entry date to the first live"
        " debit (NACHA: at least 3).",
    )

    # The daemon's HTTP server: what any client, before it authenticates, may hold of it
    # (collector/api/server.py, collector/api/limits.py).
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Time a client has, from its first byte, to send a request's headers.",
    )
    http_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Time a client has to send a request's body, and to take a response.",
    )
    http_keep_alive_timeout_s: int = Field(
        default=5, gt=0, le=300, description="An idle connection between requests is closed."
    )
    http_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line and headers (431 beyond).",
    )
    http_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request body of the portal API (413 beyond).",
    )
    http_max_webhook_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest webhook delivery (413 beyond), checked before its signature.",
    )
    http_max_connections: int = Field(
        default=1000,
        ge=8,
        le=100_000,
        description="Open HTTP connections at most (also kept below the open-file limit).",
    )
    http_backlog: int = Field(
        default=128,
        ge=8,
        le=65_535,
        description="Connections the kernel queues for accept (also kept below the file limit).",
    )
    http_accept_error_log_interval_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A failing accept() (out of file descriptors) is logged once per interval.",
    )

    # Manual pay: a customer's attempts are limited per window (429 beyond), on top of the
    # card networks' decline caps that the eligibility check enforces.
    manual_pay_max_attempts: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Manual payments a customer may start per COLLECTOR_MANUAL_PAY_WINDOW_S.",
    )
    manual_pay_window_s: int = Field(
        default=60, gt=0, le=86_400, description="The window of the manual-pay rate limit."
    )

    # The outbox's deliveries (collector/jobs/deliver.py): signed webhooks, at least once.
    webhook_endpoints: list[WebhookEndpoint] = Field(
        default_factory=list,
        description='JSON list of receivers: [{"name": "portal", "url": "https://...",'
        ' "secrets": ["..."]}]; none: events wait in the outbox.',
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Longest wait for a receiver's answer."
    )
    webhook_max_attempts: int = Field(
        default=12, ge=1, le=100, description="Deliveries of an event before it is dead-lettered."
    )
    webhook_backoff_base_s: float = Field(
        default=10.0, gt=0, le=3600, description="Wait before the first retry; doubles each time."
    )
    webhook_backoff_max_s: float = Field(
        default=3600.0, gt=0, le=86_400, description="Longest wait between two retries."
    )
    webhook_breaker_failures: int = Field(
        default=5, ge=1, le=1000, description="Failures in a row that open an endpoint's circuit."
    )
    webhook_breaker_cooldown_s: float = Field(
        default=60.0, gt=0, le=3600, description="How long an open circuit waits before a probe."
    )
    webhook_concurrency: int = Field(
        default=8, ge=1, le=256, description="Deliveries in flight at once, per endpoint."
    )
    webhook_batch_size: int = Field(
        default=100, ge=1, le=10_000, description="Deliveries claimed per round."
    )
    webhook_poll_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="The daemon's pause between delivery rounds."
    )
    debit_notice_days: int = Field(
        default=3,
        ge=0,
        le=30,
        description="debit.upcoming goes out this many days before each automatic collection"
        " (a varying amount: at least 10, Regulation E).",
    )
    card_expiry_notice_days: int = Field(
        default=14,
        ge=0,
        le=60,
        description="method.expiring goes out this many days before a collection on a card"
        " that expires first (0: none).",
    )
    portal_link_template: str = Field(
        default="https://portal.example.com/leases/{lease_id}/pay",
        description="Link to pay in the portal, sent with payment.failed and ach.returned.",
    )

    @field_validator("webhook_endpoints")
    @classmethod
    def _distinct_endpoints(cls, value: list[WebhookEndpoint]) -> list[WebhookEndpoint]:
        names = [endpoint.name for endpoint in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"endpoint {', '.join(map(repr, twice))} is listed twice")
        return value

    @field_validator("portal_link_template")
    @classmethod
    def _link_template(cls, value: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a template ({exc})") from None
        unknown = sorted(fields - PORTAL_LINK_FIELDS)
        if unknown:
            known = ", ".join("{" + f + "}" for f in sorted(PORTAL_LINK_FIELDS))
            raise ValueError(f"names {', '.join(unknown)}; a link may name {known}")
        _check_url(value, schemes=("https", "http"))
        return value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value

    @field_validator("api_tokens")
    @classmethod
    def _long_tokens(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(token.get_secret_value()) < 16 for token in value):
            raise ValueError("every API token must be at least 16 characters")
        return value

    @field_validator("schedule_time", "pass_deadline_time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        # A local wall-clock time: time.fromisoformat alone would take "06:00+02:00", whose
        # offset the daemon's datetime.combine(..., tzinfo=zone) silently drops.
        if not _CLOCK_TIME.match(value):
            raise ValueError(f"not a time of day (HH:MM, 00:00 to 23:59): {value!r}")
        time.fromisoformat(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("gateways", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("gateways")
    @classmethod
    def _registered_names(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one gateway must be enabled")
        seen: set[str] = set()
        for name in value:
            if name in seen:
                raise ValueError(f"{name!r} is listed twice")
            seen.add(name)
        unknown = [name for name in value if name not in _registered_gateways()]
        if unknown:
            known = ", ".join(sorted(_registered_gateways()))
            names = ", ".join(repr(name) for name in unknown)
            raise ValueError(f"no gateway adapter is registered as {names}; known: {known}")
        return value

    @field_validator("delinquency_bucket_days", mode="before")
    @classmethod
    def _split_edges(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return [int(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError(f"not a comma-separated list of days: {value!r}") from None
        return value

    @field_validator("delinquency_bucket_days")
    @classmethod
    def _increasing_edges(cls, value: list[int]) -> list[int]:
        if value[0] < 1 or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("bucket edges must be increasing whole numbers of days, from 1")
        return value

    @field_validator("soft_retry_days", mode="before")
    @classmethod
    def _split_days(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return [int(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError(f"not a comma-separated list of days: {value!r}") from None
        return value

    @field_validator("soft_retry_days")
    @classmethod
    def _positive_days(cls, value: list[int]) -> list[int]:
        # Bounded above so that a retry date of any accepted business date stays inside the
        # banking calendar (collector.business_dates).
        if any(not 0 < days <= MAX_RETRY_DAYS for days in value):
            raise ValueError(
                f"every retry interval must be a whole number of days from 1 to {MAX_RETRY_DAYS}"
            )
        return value

    @field_validator("database_url", "sandbox_database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_url(value.get_secret_value(), schemes=("postgresql", "postgres"))
        return value

    @field_validator("stripe_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        _check_url(value, schemes=("https", "http"))
        if not urlsplit(value).hostname:
            raise ValueError("names no host")
        return value

    @field_validator("pushgateway_url")
    @classmethod
    def _pushgateway(cls, value: str | None) -> str | None:
        # prometheus_client takes "host:port" too, and reads it as http://host:port.
        if value is not None:
            _check_url(value, schemes=("https", "http"), default_scheme="http")
            if not urlsplit(value if "://" in value else f"http://{value}").hostname:
                raise ValueError("names no host")
        return value

    @field_validator(
        "data_dir", "metrics_textfile", "nacha_vault_file", "nacha_outbox", mode="before"
    )
    @classmethod
    def _not_empty_path(cls, value: object) -> object:
        # Path("") is ".": an empty value would silently mean the working directory.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; unset it for the default")
        return value

    @field_validator("metrics_textfile")
    @classmethod
    def _prom_file(cls, value: Path | None) -> Path | None:
        # node_exporter's textfile collector reads *.prom files only: any other name would be
        # written after every pass and never scraped.
        if value is not None and value.suffix != ".prom":
            raise ValueError(f"must name a .prom file (node_exporter reads no other): {value}")
        return value

    @field_validator("api_host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        return value

    @model_validator(mode="after")
    def _fit_together(self) -> Self:
        """The checks that read more than one setting; each message names the setting to fix."""
        stray = sorted(set(self.rate_limits) - set(self.gateways))
        if stray:
            # A limit for a gateway that is not enabled (a typo) would silently mean no limit.
            raise ValueError(
                f"COLLECTOR_RATE_LIMITS: {', '.join(map(repr, stray))} is not an enabled gateway"
                f" (COLLECTOR_GATEWAYS: {', '.join(self.gateways)})"
            )
        if self.pool_size < self.claimers + PASS_OWN_CONNECTIONS:
            raise ValueError(
                f"COLLECTOR_POOL_SIZE: {self.pool_size} connections cannot run a pass of"
                f" {self.claimers} claim loop(s) (COLLECTOR_CLAIMERS), which needs at least"
                f" {self.claimers + PASS_OWN_CONNECTIONS}: one per claim loop, its liveness"
                " lock's and the recorder's"
            )
        if self.webhook_backoff_max_s < self.webhook_backoff_base_s:
            raise ValueError(
                f"COLLECTOR_WEBHOOK_BACKOFF_MAX_S: {self.webhook_backoff_max_s:g} s is shorter"
                f" than COLLECTOR_WEBHOOK_BACKOFF_BASE_S ({self.webhook_backoff_base_s:g} s)"
            )
        if self.claim_deadline_s <= self.gateway_timeout_s:
            raise ValueError(
                f"COLLECTOR_CLAIM_DEADLINE_S: {self.claim_deadline_s} s must be longer than"
                f" COLLECTOR_GATEWAY_TIMEOUT_S ({self.gateway_timeout_s:g} s): a claim must"
                " outlive its own charge, or another pass takes it over while it is in flight"
            )
        try:
            load_rules(self.late_fee_rules_file)
        except ConfigError as exc:
            name = "COLLECTOR_LATE_FEE_RULES_FILE"
            message = str(exc)
            raise ValueError(message if message.startswith(name) else f"{name}: {message}") from exc
        return self

    @property
    def fee_table(self) -> FeeTable:
        """The late-fee rule table, as configured (validated at start)."""
        return load_rules(self.late_fee_rules_file)

    @property
    def card_rules(self) -> CardRetryRules:
        """The card networks' retry caps, as configured."""
        return CardRetryRules(
            visa_max_declines_30d=self.visa_max_declines_30d,
            mastercard_max_declines_30d=self.mastercard_max_declines_30d,
            other_max_declines_30d=self.other_card_max_declines_30d,
            two_strike_limit=self.two_strike_limit,
            prenote_gateways=frozenset(
                name
                for name in self.gateways
                if name == "nacha" and self.prenotes and self.nacha_sec_code.upper() == "WEB"
            ),
            prenote_wait_days=self.prenote_wait_days,
        )

    @property
    def zone(self) -> ZoneInfo:
        """The lessor's time zone."""
        return ZoneInfo(self.timezone)


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment; raise ConfigError naming each bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            # pydantic prefixes the message of a validator's ValueError with "Value error, ".
            message = error["msg"].removeprefix("Value error, ")
            loc = [str(part) for part in error["loc"]]
            if not loc:
                problems.append(message)  # a check of several settings: it names them
                continue
            inner = "".join(f"{part}: " for part in loc[1:])  # e.g. the gateway of a rate
            problems.append(f"COLLECTOR_{loc[0].upper()}: {inner}{message}")
        # Not chained: the message names every problem, and pydantic's own text repeats the
        # input values, a database URL's password among them.
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    except SettingsError as exc:
        # Raised for a value that is not even parseable (bad JSON); its text names the field.
        match = re.search(r'field "([a-z_]+)"', str(exc))
        name = f"COLLECTOR_{match.group(1).upper()}" if match else "a COLLECTOR_ setting"
        raise ConfigError(f"invalid configuration: {name}: cannot be parsed") from exc
