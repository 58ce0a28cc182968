"""Delinquency buckets and the roll-rate matrix, at their edges (pure: no database)."""

from __future__ import annotations

import pytest

from collector.aging import all_buckets, bucket_labels, bucket_of, roll_rates
from collector.config import Settings
from collector.exceptions import ConfigError

EDGES = (30, 60, 90)


def test_the_default_edges_make_the_issues_buckets() -> None:
    assert all_buckets(EDGES) == ["current", "1-30", "31-60", "61-90", "90+"]
    assert bucket_labels((15,)) == ["1-15", "15+"]


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (-3, "current"),
        (0, "current"),
        (1, "1-30"),
        (30, "1-30"),
        (31, "31-60"),
        (60, "31-60"),
        (61, "61-90"),
        (90, "61-90"),
        (91, "90+"),
        (400, "90+"),
    ],
)
def test_each_day_falls_in_one_bucket(days: int, bucket: str) -> None:
    assert bucket_of(days, EDGES) == bucket


def test_roll_rates_are_shares_of_each_buckets_cents() -> None:
    moves = [
        ("1-30", "current", 3, 3_000),
        ("1-30", "31-60", 1, 1_000),
        ("61-90", "61-90", 1, 2_000),
        ("61-90", "31-60", 1, 1_000),
        ("61-90", "90+", 1, 1_000),
        ("90+", "charged_off", 2, 6_000),
        ("90+", "90+", 1, 2_000),
    ]
    rows = {r.bucket: r for r in roll_rates(moves, EDGES)}
    assert list(rows) == ["1-30", "31-60", "61-90", "90+"]
    assert (rows["1-30"].cured, rows["1-30"].rolled_forward, rows["1-30"].leases) == (0.75, 0.25, 4)
    assert (rows["61-90"].stayed, rows["61-90"].rolled_back, rows["61-90"].rolled_forward) == (
        0.5,
        0.25,
        0.25,
    )
    assert (rows["90+"].charged_off, rows["90+"].stayed, rows["90+"].rolled_forward) == (
        0.75,
        0.25,
        0.0,
    )
    assert rows["31-60"].cents == 0 and rows["31-60"].to["current"] == 0.0
    for row in rows.values():
        if row.cents:
            assert sum(row.to.values()) == pytest.approx(1.0)
            parts = row.cured + row.stayed + row.rolled_back + row.rolled_forward + row.charged_off
            assert parts == pytest.approx(1.0)


@pytest.mark.parametrize("edges", ["30,30,90", "0,60", "60,30", "a,b"])
def test_bucket_edges_must_increase_from_one(edges: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.config import load_settings

    monkeypatch.setenv("COLLECTOR_DELINQUENCY_BUCKET_DAYS", edges)
    with pytest.raises(ConfigError, match="COLLECTOR_DELINQUENCY_BUCKET_DAYS"):
        load_settings()


def test_bucket_edges_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLECTOR_DELINQUENCY_BUCKET_DAYS", "15,45")
    assert Settings().delinquency_bucket_days == [15, 45]  # type: ignore[call-arg]
