"""What a run's containers actually used: CPU time and peak memory from their cgroups
(v1 as Docker 20.10 makes them, or v2), GPU utilisation from NVML where there is a GPU.

Sampled every second while a run trains and kept in the run's `measured` column
(learner -> figures). A container's cgroup goes when it exits, so the last sample stands
for the whole: CPU time may fall short by up to a second of the training's last one.
Where the cgroup is not found (dlaasd itself in a container), nothing is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP = Path("/sys/fs/cgroup")
INTERVAL = 1.0
SAVE_EVERY = 5  # samples between writes to the database (and the last one)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_dir()), None)


def cgroup_reading(cid: str, root: Path = CGROUP) -> dict:
    """{"cpu_ns", "memory_peak"} of a running container, each left out if not found."""
    out: dict = {}
    scope = f"docker-{cid}.scope"
    v1_cpu = _first(
        *(root / c / "docker" / cid for c in ("cpuacct", "cpu,cpuacct")),
        *(root / c / "system.slice" / scope for c in ("cpuacct", "cpu,cpuacct")),
    )
    v1_mem = _first(root / "memory" / "docker" / cid, root / "memory" / "system.slice" / scope)
    if v1_cpu or v1_mem:
        if v1_cpu and (ns := _read_int(v1_cpu / "cpuacct.usage")) is not None:
            out["cpu_ns"] = ns
        if v1_mem and (peak := _read_int(v1_mem / "memory.max_usage_in_bytes")) is not None:
            out["memory_peak"] = peak
        return out
    v2 = _first(root / "system.slice" / scope, root / "docker" / cid)
    if v2:
        with contextlib.suppress(OSError):
            for line in (v2 / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec" and value.strip().isdigit():
                    out["cpu_ns"] = int(value) * 1000
        peak = _read_int(v2 / "memory.peak")  # kernel 5.19 on; else the current use
        peak = peak if peak is not None else _read_int(v2 / "memory.current")
        if peak is not None:
            out["memory_peak"] = peak
    return out


def merge(old: dict, reading: dict, gpu_utilization: float | None) -> dict:
    """One learner's figures with a new sample: CPU time and peak only grow (a restarted
    daemon reads the same container's counters again); utilisation is averaged."""
    new = dict(old)
    for key in ("cpu_ns", "memory_peak"):
        if key in reading:
            new[key] = max(reading[key], old.get(key) or 0)
    if gpu_utilization is not None:
        new["gpu_util_sum"] = (old.get("gpu_util_sum") or 0.0) + gpu_utilization
        new["gpu_samples"] = (old.get("gpu_samples") or 0) + 1
    return new


class Nvml:
    """GPU utilisation by UUID; nothing without NVML (or for simulated GPUs)."""

    def __init__(self) -> None:
        self.ok = False
        try:
            import pynvml

            pynvml.nvmlInit()
            self.ok = True
        except Exception:  # no driver: a machine without GPUs
            pass

    def utilization(self, uuids: list[str]) -> float | None:
        real = [u for u in uuids if not u.startswith("GPU-simulated")]
        if not self.ok or not real:
            return None
        import pynvml

        try:
            rates = [
                pynvml.nvmlDeviceGetUtilizationRates(
                    pynvml.nvmlDeviceGetHandleByUUID(u.encode())
                ).gpu
                for u in real
            ]
        except pynvml.NVMLError as exc:
            log.debug("event=nvml_utilization_error error=%r", str(exc))
            return None
        return sum(rates) / len(rates)


_nvml: Nvml | None = None


def sample(
    containers: list[str],
    gpus_per_learner: list[list[str]],
    measured: dict,
    read: Callable[[str], dict] = cgroup_reading,
) -> dict:
    """A new `measured` (learner -> figures) with one sample of every learner. `read`:
    what a learner used so far (the executor's `usage`)."""
    global _nvml
    if _nvml is None:
        _nvml = Nvml()
    out = dict(measured)
    for n, cid in enumerate(containers, start=1):
        gpus = gpus_per_learner[n - 1] if n <= len(gpus_per_learner) else []
        reading = read(cid)
        util = _nvml.utilization(gpus)
        if reading or util is not None:
            out[str(n)] = merge(measured.get(str(n)) or {}, reading, util)
    return out


async def follow(
    db,
    run_id: str,
    containers: list[str],
    gpus: list[list[str]],
    ended,
    read: Callable[[str], dict] = cgroup_reading,
) -> None:
    """Sample a run's learners until `ended` is set, keeping the figures in the database."""
    measured = _measured(db, run_id)
    count = 0
    while not ended.is_set():
        try:
            latest = await asyncio.to_thread(sample, containers, gpus, measured, read)
        except Exception:  # a figure we cannot read must not end the run
            log.exception("event=measure_error run=%s", run_id)
            latest = measured
        count += 1
        if latest != measured and (count % SAVE_EVERY == 1 or ended.is_set()):
            db.update(run_id, measured=latest)
        measured = latest
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), INTERVAL)
    if measured != _measured(db, run_id):
        db.update(run_id, measured=measured)


def _measured(db, run_id: str) -> dict:
    """The figures kept so far: the one column, not the whole run."""
    kept = db.value(run_id, "measured")
    return json.loads(kept) if kept else {}
