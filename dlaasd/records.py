"""Typed records that travel between the database and the rest of dlaasd: a run (as the
queue shows it, and whole), its outcome and staging figures, an experiment, a step of a
run's history.

A row keeps some of them as JSON (the `outcome` and `staging` columns); these classes are
what the code reads and writes, so a misspelt field is an error where it is made.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar

from .codes import Status


@dataclass(frozen=True)
class Outcome:
    """How a run ends: decided when its training ends, kept through STORING (so a restart
    there still ends with the right status), then made its final status."""

    status: str  # COMPLETED, FAILED or HALTED
    message: str  # the sentence users read: what happened, and what to do about it
    error_code: str | None = None  # a codes.Code's value when FAILED
    exit_code: int | None = None  # the training command's, when it ran

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(data["status"], data["message"], data.get("error_code"), data.get("exit_code"))


@dataclass(frozen=True)
class StagingFigures:
    """What a run's staging moved: in before the training, out after it."""

    bytes_downloaded: int = 0
    files_downloaded: int = 0
    cache_hits: int = 0  # files linked from the data cache instead of downloaded
    download_seconds: float = 0.0
    bytes_uploaded: int = 0
    files_uploaded: int = 0
    upload_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StagingFigures:
        """A row's figures; keys this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass(frozen=True)
class Owned:
    """A run or an experiment, as far as access.Caller cares: whose it is."""

    id: str
    owner_uid: int
    owner_name: str


@dataclass(frozen=True)
class RunSummary(Owned):
    """A run as the queue shows it (`list`): what is cheap to read for many runs."""

    name: str = ""
    status: Status = Status.QUEUED
    status_message: str = ""
    error_code: str | None = None  # a codes.Code's value (an older dlaasd's, perhaps)
    exit_code: int | None = None
    gpus: list[str] = field(default_factory=list)  # UUIDs, kept after the run for history
    cpus: float = 0.0  # in all (every learner)
    memory: int = 0  # bytes, in all
    gpu_count: int = 0  # in all
    gpu_type: str = ""
    learners: int = 1
    framework: str = ""
    image: str = ""
    submitted: str = ""
    started: str | None = None
    completed: str | None = None
    results: str | None = None  # s3://bucket/prefix/ once stored
    experiment_id: str | None = None
    halt_requested: bool = False
    halt_reason: str = ""
    hyperparameters: dict[str, Any] | None = None  # an experiment trial's
    priority: int = 0  # higher starts first (fair_share); FIFO within a priority


@dataclass(frozen=True)
class Run(RunSummary):
    """A whole run (`show`, the lifecycle)."""

    description: str | None = None
    manifest: str = ""  # the YAML text as submitted, secrets redacted
    outcome: Outcome | None = None  # decided when the training ended (STORING)
    staging: StagingFigures = field(default_factory=StagingFigures)  # what staging moved
    source: str = ""  # "api", "inbox:<token>" or "experiment:<id>"
    warnings: list[str] = field(default_factory=list)  # what submit said of the manifest
    measured: dict[str, Any] | None = None  # learner -> what its container used


@dataclass(frozen=True)
class Experiment(Owned):
    name: str = ""
    description: str = ""
    spec: str = ""  # the experiment file as submitted (YAML), secrets redacted
    objective: str = ""  # the metric's name
    goal: str = "maximize"  # or minimize
    method: str = ""
    trials: int = 0
    submitted: str = ""
    halt_requested: bool = False


@dataclass(frozen=True)
class Event:
    """One step of a run's history."""

    time: str
    status: Status
    message: str

    def to_json(self) -> dict[str, str]:
        return {"time": self.time, "status": self.status, "message": self.message}


R = TypeVar("R", RunSummary, Run, Experiment)


def from_row(cls: type[R], row: dict[str, Any]) -> R:
    """A record from a row: columns it does not have are left out, and a NULL (a column
    an older dlaasd did not fill) reads as the field's default."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        value = row.get(f.name)
        if value is None and (f.default is not MISSING or f.default_factory is not MISSING):
            continue
        values[f.name] = value
    if "status" in values:
        values["status"] = Status(values["status"])
    if "halt_requested" in values:
        values["halt_requested"] = bool(values["halt_requested"])
    if isinstance(values.get("outcome"), dict):
        values["outcome"] = Outcome.from_json(values["outcome"])
    if isinstance(values.get("staging"), dict):
        values["staging"] = StagingFigures.from_json(values["staging"])
    return cls(**values)
