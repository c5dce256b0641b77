"""The fault-injection suite, short (benchmarks/faults.py has the long one): the daemon
killed with SIGKILL at each phase change and at each of Docker's events for its
containers; every run ends exactly once, with what its training earned, and its results
in the store are the bytes the training wrote."""

from __future__ import annotations

import pytest

from benchmarks.faults import KILLS, inject

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_every_run_ends_once_with_the_truth_whenever_the_daemon_is_killed(docker_client):
    lines: list[str] = []
    r = inject(cycles_per_kill=1, runs_per_cycle=2, seed=7, log=lines.append)
    report = "\n".join(lines)
    assert r["landed"] == {k: 1 for k in KILLS}, report  # each kill hit its moment
    assert all(b["runs"] for b in r["by_kill"].values()), r["by_kill"]  # each kill had runs
    assert not r["wrong"], report
    assert r["listed"] == r["runs"] >= len(KILLS), r
    assert not r["leftover_containers"], r
