"""Aggregates behind the dashboards' gauges: one snapshot, a few small queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from collector.calendar import next_banking_day
from collector.db.pool import Executor
from collector.db.queries import QUERIES


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Installments by state (count, unpaid cents), unknown outcomes, the business date's
    collection, the passes' times and the bank debits not filed yet."""

    as_of: date | None = None
    states: dict[str, tuple[int, int]] = field(default_factory=dict)
    in_doubt: tuple[int, int] = (0, 0)
    oldest_in_doubt_at: datetime | None = None
    due_today_cents: int = 0
    collected_today_cents: int = 0
    pending_today_cents: int = 0
    last_success_at: datetime | None = None
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_completed_as_of: date | None = None
    running_since: datetime | None = None
    ach_unfiled: int = 0
    ach_unfiled_since: datetime | None = None

    @property
    def today_completed(self) -> bool:
        """Whether a pass has completed for the snapshot's business date (or a later one)."""
        return (
            self.as_of is not None
            and self.last_completed_as_of is not None
            and self.last_completed_as_of >= self.as_of
        )


async def snapshot(db: Executor, *, as_of: date) -> Snapshot:
    """Read the figures the gauges show for business date ``as_of``."""
    states = {
        row["state"]: (row["installments"], row["cents"])
        for row in await db.fetch(QUERIES["stats.installment_states"], as_of)
    }
    doubt = await db.fetchrow(QUERIES["stats.in_doubt"])
    today = await db.fetchrow(QUERIES["stats.due_today_collected"], as_of)
    last_success_at = await db.fetchval(QUERIES["stats.last_success"])
    runs = await db.fetchrow(QUERIES["stats.runs"])
    unfiled = await db.fetchrow(QUERIES["stats.ach_unfiled"], next_banking_day(as_of))
    assert doubt is not None and today is not None and runs is not None and unfiled is not None
    return Snapshot(
        as_of=as_of,
        states=states,
        in_doubt=(doubt["attempts"], doubt["cents"]),
        oldest_in_doubt_at=doubt["oldest_at"],
        due_today_cents=today["due_cents"],
        collected_today_cents=today["paid_cents"],
        pending_today_cents=today["in_flight_cents"],
        last_success_at=last_success_at,
        last_started_at=runs["last_started_at"],
        last_finished_at=runs["last_finished_at"],
        last_completed_as_of=runs["last_completed_as_of"],
        running_since=runs["running_since"],
        ach_unfiled=unfiled["entries"],
        ach_unfiled_since=unfiled["oldest_at"],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessDay:
    """What one business date holds so far, from the database: the totals a counter cannot
    keep on a host where each pass is a new process (a textfile written by `collector run`)."""

    as_of: date
    # (gateway, method kind, outcome) -> (attempts, cents): each attempt once, as it stands
    attempts: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    # status -> (passes, wall seconds of those that ended)
    passes: dict[str, tuple[int, float]] = field(default_factory=dict)
    # (gateway, "settled" | "returned") -> (debits, cents)
    ach: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    charged_off_leases: int = 0
    charged_off_cents: int = 0
    # "assessed" | "waived" -> (late fees, cents)
    late_fees: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (subject, reason) -> rows set aside during the date
    set_aside: dict[tuple[str, str], int] = field(default_factory=dict)


async def business_day(db: Executor, *, as_of: date, zone: ZoneInfo) -> BusinessDay:
    """Read business date ``as_of``'s totals (its midnights taken in the lessor's ``zone``)."""
    start = datetime.combine(as_of, time(0), zone)
    end = datetime.combine(as_of + timedelta(days=1), time(0), zone)
    attempts = await db.fetch(QUERIES["stats.business_day_attempts"], as_of)
    refused = await db.fetch(QUERIES["stats.business_day_refused"], as_of)
    passes = await db.fetch(QUERIES["stats.business_day_passes"], as_of)
    ach = await db.fetch(QUERIES["stats.business_day_ach"], as_of)
    charged_off = await db.fetchrow(QUERIES["stats.business_day_charged_off"], as_of)
    late_fees = await db.fetchrow(QUERIES["stats.business_day_late_fees"], as_of)
    set_aside = await db.fetch(QUERIES["stats.business_day_set_aside"], start, end)
    assert charged_off is not None
    assert late_fees is not None
    return BusinessDay(
        as_of=as_of,
        attempts={
            (r["gateway"], r["method_kind"], r["outcome"]): (r["attempts"], r["cents"])
            for r in attempts
        },
        refused={r["reason"]: r["attempts"] for r in refused},
        passes={r["status"]: (r["passes"], r["seconds"]) for r in passes},
        ach={(r["gateway"], r["result"]): (r["debits"], r["cents"]) for r in ach},
        charged_off_leases=charged_off["leases"],
        charged_off_cents=charged_off["cents"],
        late_fees={
            "assessed": (late_fees["assessed"], late_fees["assessed_cents"]),
            "waived": (late_fees["waived"], late_fees["waived_cents"]),
        },
        set_aside={(r["subject"], r["reason"]): r["set_aside"] for r in set_aside},
    )
