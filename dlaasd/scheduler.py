"""FIFO placement: which queued runs start now, and on which GPUs. Pure functions only.

Rules:
- Runs that need GPUs start strictly in submit order: a later one never overtakes a
  waiting earlier one, even if it would fit.
- CPU-only runs are a second FIFO line against CPU and memory capacity; they do not wait
  behind GPU runs that wait for GPUs. They do wait behind a GPU run whose GPUs are free
  but which lacks CPU or memory, so that run is not starved by a stream of small jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .gpus import matches_type
from .units import format_size


@dataclass(frozen=True)
class Request:
    run_id: str
    gpus: int  # in all, for every learner
    cpus: float
    memory: int
    gpu_type: str = ""


@dataclass(frozen=True)
class FreeGpu:
    uuid: str
    name: str


@dataclass(frozen=True)
class Placement:
    run_id: str
    gpus: tuple[str, ...]


def place(
    queued: Sequence[Request],
    free_gpus: Sequence[FreeGpu],
    free_cpus: float,
    free_memory: int,
) -> list[Placement]:
    """The runs of `queued` (in submit order) that start now, with their GPU UUIDs."""
    placements: list[Placement] = []
    gpus = list(free_gpus)
    gpu_line_blocked = cpu_line_blocked = False
    for req in queued:
        fits_host = req.cpus <= free_cpus + 1e-9 and req.memory <= free_memory
        if req.gpus:
            if gpu_line_blocked:
                continue
            usable = [g for g in gpus if matches_type(g.name, req.gpu_type)]
            if len(usable) < req.gpus:
                gpu_line_blocked = True
                continue
            if not fits_host:
                gpu_line_blocked = cpu_line_blocked = True
                continue
            chosen = usable[: req.gpus]
            gpus = [g for g in gpus if g not in chosen]
            placement = Placement(req.run_id, tuple(g.uuid for g in chosen))
        else:
            if cpu_line_blocked:
                continue
            if not fits_host:
                cpu_line_blocked = True
                continue
            placement = Placement(req.run_id, ())
        free_cpus -= req.cpus
        free_memory -= req.memory
        placements.append(placement)
    return placements


def impossible(
    req: Request, total_cpus: float, total_memory: int, gpu_names: Sequence[str]
) -> list[tuple[str, str]]:
    """Why `req` could never start on this machine (C104): (field, reason) pairs."""
    reasons = []
    if req.gpus:
        usable = [n for n in gpu_names if matches_type(n, req.gpu_type)]
        if len(usable) < req.gpus:
            kind = f" of type {req.gpu_type!r}" if req.gpu_type else ""
            here = f" ({', '.join(sorted(set(gpu_names)))})" if req.gpu_type and gpu_names else ""
            reasons.append(
                ("gpus", f"{req.gpus} GPU(s){kind} asked for; this machine has {len(usable)}{here}")
            )
    if req.cpus > total_cpus + 1e-9:
        reasons.append(("cpus", f"{req.cpus:g} CPUs asked for; dlaasd may use {total_cpus:g}"))
    if req.memory > total_memory:
        reasons.append(
            (
                "memory",
                f"{format_size(req.memory)} asked for; dlaasd may use {format_size(total_memory)}",
            )
        )
    return reasons
