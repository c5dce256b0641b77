"""Placement: which queued runs start now, and on which GPUs. Pure functions only.

Rules:
- Runs start in priority order, FIFO within a priority (with every priority 0, the
  default, that is submit order). In its line, a later one never overtakes a waiting
  earlier one, even if it would fit.
- CPU-only runs are a second line against CPU and memory capacity; they do not wait
  behind GPU runs that wait for GPUs. They do wait behind a GPU run whose GPUs are free
  but which lacks CPU or memory, so that run is not starved by a stream of small jobs.
- Fair share (off by default): a run whose owner is at a per-user limit (GPUs held, runs
  running) is passed over and blocks nobody. Aging: a waiting run gains one priority
  point per `aging` seconds waited, so a run eventually outranks every newcomer, whose
  priority is bounded: no stream of higher-priority runs holds it back forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .gpus import matches_type
from .units import format_size


@dataclass(frozen=True)
class Request:
    run_id: str
    gpus: int  # in all, for every learner
    cpus: float
    memory: int
    gpu_type: str = ""
    owner: str = ""
    priority: int = 0
    waited: float = 0.0  # seconds in the queue so far


@dataclass(frozen=True)
class Limits:
    """A user's limits; 0 means none."""

    max_gpus: int = 0
    max_running: int = 0


@dataclass(frozen=True)
class Fairness:
    aging: float = 0.0  # seconds per priority point gained while waiting; 0: none
    limits: Mapping[str, Limits] = field(default_factory=dict)  # owner -> limits
    held: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # owner -> (GPUs, runs)


@dataclass
class Plan:
    placements: list[Placement]
    reasons: dict[str, str]  # why each run left waiting waits (Slurm's reasons)


@dataclass(frozen=True)
class FreeGpu:
    uuid: str
    name: str


@dataclass(frozen=True)
class Held:
    """What the placed runs hold in all."""

    gpus: dict[str, str]  # uuid -> the run holding it
    cpus: float
    memory: int
    by_owner: dict[str, tuple[int, int]]  # owner -> (GPUs, runs) held


@dataclass(frozen=True)
class Placement:
    run_id: str
    gpus: tuple[str, ...]


def place(
    queued: Sequence[Request],
    free_gpus: Sequence[FreeGpu],
    free_cpus: float,
    free_memory: int,
    fairness: Fairness | None = None,
) -> list[Placement]:
    """The runs of `queued` (in submit order) that start now, with their GPU UUIDs."""
    return plan(queued, free_gpus, free_cpus, free_memory, fairness).placements


def effective_priority(req: Request, aging: float) -> int:
    return req.priority + (int(req.waited // aging) if aging > 0 else 0)


def plan(
    queued: Sequence[Request],
    free_gpus: Sequence[FreeGpu],
    free_cpus: float,
    free_memory: int,
    fairness: Fairness | None = None,
) -> Plan:
    """What starts now (`queued` in submit order), and why each other run waits."""
    fairness = fairness or Fairness()
    # sorted() is stable: FIFO within a priority
    ordered = sorted(queued, key=lambda r: -effective_priority(r, fairness.aging))
    return _plan(lambda blocked: iter(ordered), free_gpus, free_cpus, free_memory, fairness)


def plan_lines(
    gpu_line: Iterable[Request],
    cpu_line: Iterable[Request],
    free_gpus: Sequence[FreeGpu],
    free_cpus: float,
    free_memory: int,
    fairness: Fairness,
) -> Plan:
    """plan() for a queue read lazily: each line (the runs asking for GPUs, the CPU-only
    runs) in start order already (priority, then submit order; no aging). A line is read
    up to its first run that must wait, so a decision costs the same with 10 or 10,000
    queued; the runs behind that one are not visited and get no reason."""
    if fairness.aging > 0:
        raise ValueError("plan_lines: with aging the order changes as runs wait; use plan")

    def merged(blocked: dict[bool, bool]) -> Iterator[Request]:
        lines = {True: iter(gpu_line), False: iter(cpu_line)}
        heads: dict[bool, Request | None] = {}  # a line's next run, once read
        while True:
            for k in lines:  # read a line's next run only when it may still start one
                if k not in heads and not blocked[k]:
                    heads[k] = next(lines[k], None)
            ready = [(r, k) for k, r in heads.items() if r is not None and not blocked[k]]
            if not ready:
                return
            # the higher priority first; within one, the earlier submitted
            req, k = min(ready, key=lambda rk: (-rk[0].priority, -rk[0].waited))
            del heads[k]
            yield req

    return _plan(merged, free_gpus, free_cpus, free_memory, fairness)


def _plan(
    requests: Callable[[dict[bool, bool]], Iterator[Request]],
    free_gpus: Sequence[FreeGpu],
    free_cpus: float,
    free_memory: int,
    fairness: Fairness,
) -> Plan:
    """The placing itself, over `requests(blocked)` in start order: blocked[True] once the
    GPU line waits, blocked[False] once the CPU line does (a lazy reader stops there)."""
    blocked = {True: False, False: False}
    placements: list[Placement] = []
    reasons: dict[str, str] = {}
    gpus = list(free_gpus)
    held = {owner: list(h) for owner, h in fairness.held.items()}
    gpu_line: str | None = None  # the run that blocks a line, once one does
    cpu_line: str | None = None
    for req in requests(blocked):
        limit = _over_limit(req, fairness.limits.get(req.owner), held.get(req.owner, [0, 0]))
        if limit:
            reasons[req.run_id] = limit
            continue
        fits_host = req.cpus <= free_cpus + 1e-9 and req.memory <= free_memory
        if req.gpus:
            if gpu_line:
                reasons[req.run_id] = f"Priority: behind {gpu_line}"
                continue
            usable = [g for g in gpus if matches_type(g.name, req.gpu_type)]
            if len(usable) < req.gpus:
                gpu_line = req.run_id
                blocked[True] = True
                reasons[req.run_id] = (
                    f"Resources: {req.gpus} GPU(s){_of_type(req)} asked for, {len(usable)} free"
                )
                continue
            if not fits_host:
                gpu_line = cpu_line = req.run_id
                blocked[True] = blocked[False] = True
                reasons[req.run_id] = _host_reason(req, free_cpus, free_memory)
                continue
            chosen = usable[: req.gpus]
            gpus = [g for g in gpus if g not in chosen]
            placement = Placement(req.run_id, tuple(g.uuid for g in chosen))
        else:
            if cpu_line:
                reasons[req.run_id] = f"Priority: behind {cpu_line}"
                continue
            if not fits_host:
                cpu_line = req.run_id
                blocked[False] = True
                reasons[req.run_id] = _host_reason(req, free_cpus, free_memory)
                continue
            placement = Placement(req.run_id, ())
        free_cpus -= req.cpus
        free_memory -= req.memory
        mine = held.setdefault(req.owner, [0, 0])
        mine[0] += req.gpus
        mine[1] += 1
        placements.append(placement)
    return Plan(placements, reasons)


def _over_limit(req: Request, limits: Limits | None, held: list[int]) -> str:
    if not limits:
        return ""
    gpus, runs = held
    if limits.max_running and runs + 1 > limits.max_running:
        return (
            f"user limit: {req.owner} has {runs} of {limits.max_running} runs running "
            "(fair_share.max_running_per_user)"
        )
    if limits.max_gpus and req.gpus and gpus + req.gpus > limits.max_gpus:
        return (
            f"user limit: {req.owner} holds {gpus} of {limits.max_gpus} GPUs and this run "
            f"asks for {req.gpus} (fair_share.max_gpus_per_user)"
        )
    return ""


def _of_type(req: Request) -> str:
    return f" of type {req.gpu_type!r}" if req.gpu_type else ""


def _host_reason(req: Request, free_cpus: float, free_memory: int) -> str:
    return (
        f"Resources: {req.cpus:g} CPUs and {format_size(req.memory)} asked for, "
        f"{max(free_cpus, 0):g} CPUs and {format_size(max(free_memory, 0))} free"
    )


def impossible(
    req: Request, total_cpus: float, total_memory: int, gpu_names: Sequence[str]
) -> list[tuple[str, str]]:
    """Why `req` could never start on this machine (C104): (field, reason) pairs."""
    reasons = []
    if req.gpus:
        usable = [n for n in gpu_names if matches_type(n, req.gpu_type)]
        if len(usable) < req.gpus:
            here = f" ({', '.join(sorted(set(gpu_names)))})" if req.gpu_type and gpu_names else ""
            reasons.append(
                (
                    "gpus",
                    f"{req.gpus} GPU(s){_of_type(req)} asked for; "
                    f"this machine has {len(usable)}{here}",
                )
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
