"""Delinquency buckets and the roll-rate matrix (pure: the figures come in, values go out).

A lease's days past due are those of its oldest installment with money past due (neither
paid nor in flight: a bank debit awaiting settlement is not past due) on the business date.
Buckets are ``current`` (nothing past due) and one per configured upper edge, the last open:
edges ``(30, 60, 90)`` give ``1-30``, ``31-60``, ``61-90``, ``90+``. The roll-rate matrix says,
for the past-due cents of each bucket on an earlier snapshot, the share that by the later one
cured (current), stayed, rolled back to a lower bucket, rolled forward, or was charged off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CURRENT = "current"
CHARGED_OFF = "charged_off"


def bucket_labels(edges: Sequence[int]) -> list[str]:
    """The delinquent buckets' labels, lowest first: ``[1-30, 31-60, 61-90, 90+]``."""
    labels, low = [], 1
    for edge in edges:
        labels.append(f"{low}-{edge}")
        low = edge + 1
    labels.append(f"{edges[-1]}+" if edges else "1+")
    return labels


def all_buckets(edges: Sequence[int]) -> list[str]:
    """Every bucket, ``current`` first."""
    return [CURRENT, *bucket_labels(edges)]


def bucket_of(days_past_due: int, edges: Sequence[int]) -> str:
    """The bucket of a lease so many days past due."""
    if days_past_due <= 0:
        return CURRENT
    labels = bucket_labels(edges)
    for edge, label in zip(edges, labels, strict=False):
        if days_past_due <= edge:
            return label
    return labels[-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketTotal:
    bucket: str
    leases: int
    cents: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RollRow:
    """Where one bucket's past-due cents of the earlier snapshot went by the later one."""

    bucket: str
    leases: int
    cents: int
    to: Mapping[str, float]  # share of the cents by bucket on the later date (+ charged_off)
    cured: float
    stayed: float
    rolled_back: float
    rolled_forward: float
    charged_off: float


def roll_rates(moves: Sequence[tuple[str, str, int, int]], edges: Sequence[int]) -> list[RollRow]:
    """The matrix from (from bucket, to bucket, leases, cents) of the earlier snapshot's leases,
    one row per delinquent bucket (a bucket with nothing in it has every share 0)."""
    order = {label: n for n, label in enumerate(all_buckets(edges))}
    columns = [*all_buckets(edges), CHARGED_OFF]
    rows = []
    for label in bucket_labels(edges):
        mine = [m for m in moves if m[0] == label]
        cents = sum(m[3] for m in mine)
        by_to = {c: sum(m[3] for m in mine if m[1] == c) for c in columns}

        def share(part: int, whole: int = cents) -> float:
            return round(part / whole, 4) if whole else 0.0

        here = order[label]
        rows.append(
            RollRow(
                bucket=label,
                leases=sum(m[2] for m in mine),
                cents=cents,
                to={c: share(by_to[c]) for c in columns},
                cured=share(by_to[CURRENT]),
                stayed=share(by_to[label]),
                rolled_back=share(
                    sum(v for c, v in by_to.items() if c in order and 0 < order[c] < here)
                ),
                rolled_forward=share(
                    sum(v for c, v in by_to.items() if c in order and order[c] > here)
                ),
                charged_off=share(by_to[CHARGED_OFF]),
            )
        )
    return rows
