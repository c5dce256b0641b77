"""Reading what a container used from its cgroup files (v1 and v2 layouts)."""

from __future__ import annotations

from pathlib import Path

from dlaasd.measure import cgroup_reading, merge

CID = "ab" * 32


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v1_as_docker_20_10_with_cgroupfs_makes_it(tmp_path):
    write(tmp_path / "cpu,cpuacct" / "docker" / CID / "cpuacct.usage", "2500000000\n")
    write(tmp_path / "memory" / "docker" / CID / "memory.max_usage_in_bytes", "1048576\n")
    assert cgroup_reading(CID, tmp_path) == {"cpu_ns": 2_500_000_000, "memory_peak": 1048576}


def test_cgroup_v2_with_the_systemd_driver(tmp_path):
    scope = tmp_path / "system.slice" / f"docker-{CID}.scope"
    write(scope / "cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n")
    write(scope / "memory.peak", "4096\n")
    assert cgroup_reading(CID, tmp_path) == {"cpu_ns": 1_500_000_000, "memory_peak": 4096}


def test_no_cgroup_found_measures_nothing(tmp_path):
    assert cgroup_reading(CID, tmp_path) == {}


def test_counters_only_grow_and_utilisation_is_averaged():
    first = merge({}, {"cpu_ns": 10, "memory_peak": 500}, 40.0)
    second = merge(first, {"cpu_ns": 30, "memory_peak": 200}, 60.0)
    assert second == {"cpu_ns": 30, "memory_peak": 500, "gpu_util_sum": 100.0, "gpu_samples": 2}
    assert merge(second, {}, None) == second  # a sample after the cgroup went
