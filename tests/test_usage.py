"""Usage accounting on a real daemon: phase times x resources, kept after delete and
restart; `dlaasctl usage` reports it."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pytest

from tests.harness import manifest, model

pytestmark = pytest.mark.integration

GIB = 1024**3
# two seconds of busy CPU (measured from the cgroup), then a pause
BURN = "python3 -c 'import time; t = time.process_time()\nwhile time.process_time() - t < 2: pass'"


def t(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_usage_is_phase_times_times_resources_after_delete_and_restart(make_daemon, tmp_path):
    d = make_daemon(simulate_gpus=2)
    folder = model(
        tmp_path / "m",
        manifest(f"{BURN}; sleep 1", name="billed", gpus=1, cpus=1, memory="512MiB"),
    )
    run_id = d.submit(folder)
    run = d.wait(run_id)
    assert run["status"] == "COMPLETED", d.ctl("logs", run_id).stdout
    u = run["usage"]
    times = {e["status"]: t(e["time"]) for e in run["history"]}
    allocated = times["COMPLETED"] - times["DOWNLOADING"]
    assert u["final"] and u["allocated_seconds"] == pytest.approx(allocated, abs=1)
    assert u["training_seconds"] == pytest.approx(times["STORING"] - times["PROCESSING"], abs=1)
    assert u["waiting_seconds"] == pytest.approx(times["DOWNLOADING"] - times["QUEUED"], abs=1)
    assert u["training_seconds"] >= 3  # the command's own length
    assert u["gpu_seconds"] == pytest.approx(1 * allocated, abs=1)
    assert u["cpu_seconds"] == pytest.approx(1 * allocated, abs=1)
    assert u["memory_gib_seconds"] == pytest.approx(0.5 * allocated, abs=1)
    # what the container used, from its cgroup (v1 here)
    assert 1.0 <= u["cpu_used_seconds"] <= u["training_seconds"] + 1
    assert 0 < u["memory_peak_bytes"] <= 512 * 1024**2
    assert "usage:" in d.ctl("show", run_id).stdout

    assert d.ctl("delete", run_id).returncode == 0
    d.stop()
    d.start()
    report = d.ctl_json("usage", "--by", "owner")
    kept = {r["run_id"]: r for r in report["runs"]}[run_id]
    for key in ("gpu_seconds", "cpu_seconds", "memory_gib_seconds", "training_seconds"):
        assert kept[key] == u[key], key
    assert report["total"]["gpu_seconds"] == u["gpu_seconds"] and report["total"]["runs"] == 1

    rows = list(csv.reader(io.StringIO(d.ctl("usage", "--csv", "--by", "day").stdout)))
    assert rows[0][:2] == ["day", "runs"] and rows[-1][0] == "total"
    assert float(rows[-1][2]) == u["gpu_seconds"]
    table = d.ctl("usage").stdout
    assert "GPU-H" in table and "every user's runs" in table
    assert d.ctl_json("usage", "--since", "1d")["total"]["runs"] == 1
    assert d.ctl_json("usage", "--until", "2000-01-01")["total"]["runs"] == 0
    bad = d.ctl("usage", "--since", "yesterday-ish")
    assert bad.returncode == 1 and "'since'" in bad.stderr
