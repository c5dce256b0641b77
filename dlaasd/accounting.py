"""Usage accounting: what a run was allocated and for how long, from its status history.

A run is billed from its allocation (DOWNLOADING) until its results are stored (its final
status), as the service dlaasd is modelled on billed it: GPU-, CPU- and memory-GiB-seconds
allocated, split evenly over its learners. The phases are the statuses it passed:
waiting (QUEUED), staging_in (DOWNLOADING), training (PROCESSING), storing (STORING).
What its containers actually used (CPU time, peak memory, GPU utilisation) comes from
`measured`, sampled while it trained (dlaasd/measure.py). Pure functions only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime

from .codes import DOWNLOADING, FINAL, PROCESSING, QUEUED, STORING
from .records import Run, RunSummary, StagingFigures

GIB = 1024**3
PHASES: dict[str, str] = {
    QUEUED: "waiting",
    DOWNLOADING: "staging_in",
    PROCESSING: "training",
    STORING: "storing",
}
GROUPINGS = ("owner", "day", "experiment", "framework")
# the figures a report adds up
SUMS = (
    "gpu_seconds",
    "cpu_seconds",
    "memory_gib_seconds",
    "cpu_used_seconds",
    "waiting_seconds",
    "staging_in_seconds",
    "training_seconds",
    "storing_seconds",
)


@dataclass
class LearnerUsage:
    learner: int
    gpu_seconds: float
    cpu_seconds: float
    memory_gib_seconds: float
    cpu_used_seconds: float | None = None  # from the container's cgroup
    memory_peak_bytes: int | None = None
    gpu_utilization: float | None = None  # percent, the mean of NVML's samples


@dataclass
class Usage:
    run_id: str
    name: str
    owner_uid: int
    owner_name: str
    experiment_id: str | None
    framework: str
    status: str
    error_code: str | None
    final: bool  # the run has ended: these figures no longer change
    gpus: int
    cpus: float
    memory: int
    submitted: str | None
    allocated: str | None  # when it left the queue with its resources
    ended: str | None  # its final status: results stored
    waiting_seconds: float
    staging_in_seconds: float
    training_seconds: float
    storing_seconds: float
    allocated_seconds: float
    gpu_seconds: float
    cpu_seconds: float
    memory_gib_seconds: float
    cpu_used_seconds: float | None = None
    memory_peak_bytes: int | None = None
    gpu_utilization: float | None = None
    bytes_staged_in: int = 0  # training data downloaded (not from the cache)
    bytes_staged_out: int = 0  # results and logs uploaded
    learners: list[LearnerUsage] = field(default_factory=list)

    def to_json(self) -> dict:
        # one level deep: asdict deep-copies every value, a third of a final status's CPU
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["learners"] = [asdict(u) for u in self.learners]
        return out


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def phase_seconds(
    events: Sequence[tuple[str, str]], now: datetime
) -> tuple[dict[str, float], str | None, str | None]:
    """(seconds in each phase, when allocated, when ended) from (time, status) events in
    order. A run not yet ended is counted up to `now`."""
    seconds = dict.fromkeys(PHASES.values(), 0.0)
    allocated = ended = None
    for i, (time, status) in enumerate(events):
        if status in FINAL:
            ended = time
            break
        if status != QUEUED and allocated is None:
            allocated = time
        following = parse_time(events[i + 1][0]) if i + 1 < len(events) else now
        if status in PHASES:
            seconds[PHASES[status]] += max(0.0, (following - parse_time(time)).total_seconds())
    return seconds, allocated, ended


def usage_of(
    run: RunSummary, events: Sequence[tuple[str, str]], now: datetime | None = None
) -> Usage:
    """A run's usage from its row (resources, `measured`) and its status events."""
    now = now or datetime.now(UTC)
    seconds, allocated, ended = phase_seconds(events, now)
    held = seconds["staging_in"] + seconds["training"] + seconds["storing"]
    learners = max(1, run.learners or 1)
    gpus, cpus, memory = run.gpu_count or 0, run.cpus or 0.0, run.memory or 0
    measured = (run.measured if isinstance(run, Run) else None) or {}
    staging = run.staging if isinstance(run, Run) else StagingFigures()
    rows = []
    for n in range(1, learners + 1):
        m = measured.get(str(n)) or {}
        samples = m.get("gpu_samples") or 0
        rows.append(
            LearnerUsage(
                n,
                _r(gpus / learners * held),
                _r(cpus / learners * held),
                _r(memory / learners / GIB * held),
                _r(m["cpu_ns"] / 1e9) if m.get("cpu_ns") is not None else None,
                m.get("memory_peak"),
                _r(m["gpu_util_sum"] / samples) if samples else None,
            )
        )
    used = [r.cpu_used_seconds for r in rows if r.cpu_used_seconds is not None]
    peaks = [r.memory_peak_bytes for r in rows if r.memory_peak_bytes is not None]
    utils = [r.gpu_utilization for r in rows if r.gpu_utilization is not None]
    return Usage(
        run_id=run.id,
        name=run.name or "",
        owner_uid=run.owner_uid or 0,
        owner_name=run.owner_name or str(run.owner_uid or 0),
        experiment_id=run.experiment_id or None,
        framework=run.framework or "",
        status=run.status,
        error_code=run.error_code or None,
        final=ended is not None,
        gpus=gpus,
        cpus=cpus,
        memory=memory,
        submitted=run.submitted,
        allocated=allocated,
        ended=ended,
        waiting_seconds=_r(seconds["waiting"]),
        staging_in_seconds=_r(seconds["staging_in"]),
        training_seconds=_r(seconds["training"]),
        storing_seconds=_r(seconds["storing"]),
        allocated_seconds=_r(held),
        gpu_seconds=_r(gpus * held),
        cpu_seconds=_r(cpus * held),
        memory_gib_seconds=_r(memory / GIB * held),
        cpu_used_seconds=_r(sum(used)) if used else None,
        memory_peak_bytes=sum(peaks) if peaks else None,  # learners run side by side
        gpu_utilization=_r(sum(utils) / len(utils)) if utils else None,
        bytes_staged_in=staging.bytes_downloaded,
        bytes_staged_out=staging.bytes_uploaded,
        learners=rows,
    )


def _r(x: float) -> float:
    return round(x, 3)


def group_key(row: dict, by: str) -> str:
    if by == "owner":
        return row["owner_name"]
    if by == "day":
        return (row["ended"] or row["submitted"] or "")[:10]
    if by == "experiment":
        return row["experiment_id"] or "-"
    return row["framework"] or "-"


def summarize(rows: Iterable[dict], by: str) -> tuple[list[dict], dict]:
    """(one line per group, sorted by key; the totals) of usage rows."""
    groups: dict[str, dict] = {}
    total: dict = {"key": "total", "runs": 0, **dict.fromkeys(SUMS, 0.0)}
    for row in rows:
        key = group_key(row, by)
        g = groups.setdefault(key, {"key": key, "runs": 0, **dict.fromkeys(SUMS, 0.0)})
        for line in (g, total):
            line["runs"] += 1
            for k in SUMS:
                line[k] = _r(line[k] + (row.get(k) or 0.0))
    return [groups[k] for k in sorted(groups)], total


def parse_bound(text: str, now: datetime | None = None) -> str:
    """`--since`/`--until`: an ISO 8601 date or time (UTC unless it says), or a duration
    ago ("7d", "12h", "30m"), as the ISO text the usage rows are compared with."""
    now = now or datetime.now(UTC)
    text = text.strip()
    ago = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if len(text) > 1 and text[-1] in ago and text[:-1].replace(".", "", 1).isdigit():
        when = now.timestamp() - float(text[:-1]) * ago[text[-1]]
        moment = datetime.fromtimestamp(when, UTC)
    else:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))  # ValueError if not
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
