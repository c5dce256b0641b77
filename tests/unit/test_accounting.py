"""Usage from a run's status history: phases, resource-seconds, reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dlaasd import accounting
from dlaasd.accounting import GIB, parse_bound, phase_seconds, summarize, usage_of
from dlaasd.records import Run, from_row


def at(seconds: float) -> str:
    return datetime.fromtimestamp(1796032800 + seconds, UTC).isoformat().replace("+00:00", "Z")


EVENTS = [
    (at(0), "QUEUED"),
    (at(10), "DOWNLOADING"),
    (at(12), "PROCESSING"),
    (at(112), "STORING"),
    (at(115), "COMPLETED"),
]


def record(row: dict) -> Run:
    """The run as the database hands it out."""
    return from_row(Run, row)


RUN = {
    "id": "training-a",
    "name": "a",
    "owner_uid": 1000,
    "owner_name": "alice",
    "status": "COMPLETED",
    "gpu_count": 2,
    "cpus": 4.0,
    "memory": 8 * GIB,
    "learners": 2,
    "framework": "pytorch 2",
    "submitted": at(0),
}


def test_phases_are_the_time_between_status_events():
    seconds, allocated, ended = phase_seconds(EVENTS, datetime.now(UTC))
    assert seconds == {"waiting": 10, "staging_in": 2, "training": 100, "storing": 3}
    assert (allocated, ended) == (at(10), at(115))


def test_allocated_resources_times_allocated_time_split_over_learners():
    u = usage_of(record(RUN), EVENTS)
    assert u.final and u.allocated_seconds == 105
    assert (u.gpu_seconds, u.cpu_seconds, u.memory_gib_seconds) == (210, 420, 840)
    assert [(lu.gpu_seconds, lu.cpu_seconds, lu.memory_gib_seconds) for lu in u.learners] == [
        (105, 210, 420),
        (105, 210, 420),
    ]
    assert u.cpu_used_seconds is None and u.memory_peak_bytes is None


def test_measured_figures_add_up_over_learners():
    measured = {
        "1": {"cpu_ns": 3_500_000_000, "memory_peak": 100, "gpu_util_sum": 150.0, "gpu_samples": 2},
        "2": {"cpu_ns": 1_500_000_000, "memory_peak": 50, "gpu_util_sum": 25.0, "gpu_samples": 1},
    }
    u = usage_of(record({**RUN, "measured": measured}), EVENTS)
    assert u.cpu_used_seconds == 5.0 and u.memory_peak_bytes == 150
    assert [lu.gpu_utilization for lu in u.learners] == [75.0, 25.0]
    assert u.gpu_utilization == 50.0


def test_a_run_still_training_is_counted_up_to_now():
    u = usage_of(
        record({**RUN, "status": "PROCESSING"}), EVENTS[:3], now=datetime.fromisoformat(at(32))
    )
    assert not u.final and u.ended is None
    assert u.training_seconds == 20 and u.allocated_seconds == 22 and u.gpu_seconds == 44


def test_a_run_halted_in_the_queue_was_allocated_nothing():
    events = [(at(0), "QUEUED"), (at(30), "HALTED")]
    u = usage_of(record({**RUN, "status": "HALTED"}), events)
    assert u.waiting_seconds == 30 and u.allocated is None and u.gpu_seconds == 0


def test_a_run_that_failed_staging_in_skips_training():
    events = [(at(0), "QUEUED"), (at(1), "DOWNLOADING"), (at(4), "STORING"), (at(5), "FAILED")]
    u = usage_of(record({**RUN, "status": "FAILED"}), events)
    assert (u.staging_in_seconds, u.training_seconds, u.storing_seconds) == (3, 0, 1)
    assert u.gpu_seconds == 8


def _row(owner, ended, gpu, exp=None, framework="python 3"):
    return {
        "owner_name": owner,
        "ended": ended,
        "submitted": ended,
        "experiment_id": exp,
        "framework": framework,
        "gpu_seconds": gpu,
        "cpu_seconds": 1.0,
    }


@pytest.mark.parametrize(
    ("by", "keys"),
    [
        ("owner", ["alice", "bob"]),
        ("day", ["2026-11-29", "2026-11-30"]),
        ("experiment", ["-", "experiment-x"]),
        ("framework", ["python 3"]),
    ],
)
def test_summaries_group_and_total(by, keys):
    rows = [
        _row("bob", "2026-11-30T01:00:00Z", 10.0, "experiment-x"),
        _row("alice", "2026-11-29T23:00:00Z", 5.0),
        _row("alice", "2026-11-30T02:00:00Z", 1.5),
    ]
    groups, total = summarize(rows, by)
    assert [g["key"] for g in groups] == keys
    assert total["runs"] == 3 and total["gpu_seconds"] == 16.5 and total["cpu_seconds"] == 3.0
    assert sum(g["gpu_seconds"] for g in groups) == total["gpu_seconds"]
    assert set(accounting.SUMS) <= set(total)


def test_bounds_are_dates_times_or_durations_ago():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_bound("2026-11-30", now) == "2026-11-30T00:00:00.000Z"
    assert parse_bound("2026-11-30T13:00:00+01:00", now) == "2026-11-30T12:00:00.000Z"
    assert parse_bound("7d", now) == "2026-11-23T12:00:00.000Z"
    assert parse_bound("90m", now) == "2026-11-30T10:30:00.000Z"
    with pytest.raises(ValueError):
        parse_bound("last tuesday", now)
