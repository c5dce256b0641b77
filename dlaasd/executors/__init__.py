"""Executors: where a run's learners run. The phases call one for everything that
touches that place, through the contract below; nothing else in dlaasd does.

    local       Docker on this machine (dlaasd's FIFO places runs on its GPUs)
    slurm       one Slurm job per run; Slurm's queue decides (its nodes run Docker)
    kubernetes  one suspended Indexed Job per run; Kueue's queue decides

A new executor is one module here with a `create(config, daemon_label)` function
returning an `Executor`, and the `executor:` key of the config naming the module. Its
settings, if any, go in a config section of its own name.

Every method blocks (the phases call them in threads). One that cannot reach the place
where learners run (the Docker Engine down, a cluster's controller not answering)
raises `ExecutorUnavailable`: the phases say so on the run and try again, as long as
it takes; the learners keep running meanwhile.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..objectstore import Endpoint

if TYPE_CHECKING:
    from ..config import Config

# Labels every learner carries, so that a restarted daemon finds its runs again
LABEL_RUN = "dlaas.run-id"
LABEL_LEARNER = "dlaas.learner"
LABEL_DAEMON = "dlaas.daemon"  # the state folder of the dlaasd that started it

DEFAULT = "local"


@dataclass(frozen=True)
class Mount:
    source: str  # on the host (for a cluster: on the node)
    target: str  # in the container
    read_only: bool


@dataclass(frozen=True)
class LearnerSpec:
    """One learner of a run, as the manifest and the config ask for it."""

    run_id: str
    learner: int  # 1 .. learners
    learners: int
    image: str
    command: str  # the manifest's, run by `sh -c` in MODEL_DIR (see learners.entrypoint)
    env: dict[str, str]
    user: str  # uid:gid, never root
    cpus: float
    memory: int  # bytes; no swap beyond it
    mounts: tuple[Mount, ...]
    gpus: tuple[str, ...] = ()  # UUIDs (empty: none, or simulated ones)
    gpu_type: str = ""  # the manifest's (a cluster maps it to its nodes)
    network: bool = False  # False: no network at all
    # the engine's network mode when set ("host": a cluster's learners reach each other
    # across nodes); else none, or bridge where the manifest may use the network
    network_mode: str = ""
    # beside dlaasd's own (LABEL_RUN, LABEL_LEARNER, LABEL_DAEMON: the executor sets them)
    labels: dict[str, str] = field(default_factory=dict)
    timeout: float = 0  # the manifest's, in seconds (0: none); for a cluster's time limit
    pids_limit: int = 4096
    cap_add: tuple[str, ...] = ()  # every other capability is dropped
    staging: Staging | None = None  # set for an executor that `stages_data`

    @property
    def name(self) -> str:
        """Learner 1 is dlaas-<run id>, the others dlaas-<run id>-<learner>."""
        return f"dlaas-{self.run_id}" + (f"-{self.learner}" if self.learner > 1 else "")


@dataclass(frozen=True)
class Location:
    """A bucket and prefix on an S3 endpoint."""

    endpoint: Endpoint
    bucket: str
    prefix: str = ""


@dataclass(frozen=True)
class Staging:
    """For an executor whose learners stage their own data (`stages_data`): where the
    data comes from and the results go, and what the job folder gets besides the code."""

    data: Location | None  # None: no data, or a mounted volume
    results: Location
    hyperparameters: dict | None = None  # an experiment trial's config.json
    owner: tuple[int, int] | None = None  # who the job folder is given to (dlaasd as root)
    # where the run's definition (manifest.yml, model.zip) goes in the configured store,
    # for learners that do not share the run folder and fetch the model code from there
    definition: Location | None = None


@dataclass(frozen=True)
class Exit:
    """How one learner ended."""

    code: int  # its command's exit code (-1 when unknown)
    oom_killed: bool = False  # killed for its memory limit, as the executor saw it
    error: str = ""  # the executor's own words about it, if any
    # created but never started: whatever the code says, nothing was trained (Docker
    # answers a wait on such a container with exit code 0)
    started: bool = True
    timed_out: bool = False  # the executor ended it at the manifest's timeout itself
    lost: str = ""  # the place it ran failed under it (engine, node): why, in a sentence
    # it failed around the training with this error code (a node that could not stage
    # the data in, S302, or find the image, S103; a cluster that ended it, S105): `error`
    # is the sentence
    error_code: str = ""


@dataclass(frozen=True)
class Found:
    """A learner found again by its run id."""

    handle: str
    # made, but it will never start by itself (the daemon died between creating and
    # starting it): it is made again. A learner a cluster still queues is not stranded.
    stranded: bool = False


@dataclass(frozen=True)
class Health:
    ok: bool
    message: str  # when ok, what answers (a version); else what is wrong and the fix


class ExecutorUnavailable(Exception):
    """The place where learners run does not answer now; the phases wait for it."""

    place = "the executor"  # what does not answer, as a run's message names it


class Executor(Protocol):
    # A cluster scheduler places runs itself: dlaasd hands each run over at once
    # (it stays QUEUED until the cluster starts it) instead of placing it on GPUs.
    places_runs: bool
    # The learners stage their data in and out on the node: dlaasd does not, and
    # follows `phase` instead.
    stages_data: bool

    def health(self) -> Health: ...

    def image_present(self, image: str, fresh: bool = False) -> bool | None:
        """Whether the image is there to run; None where that cannot be told here.
        `fresh`: ask now (doctor), not from what an executor saw a moment ago."""
        ...

    def prepare(self, image: str, pull: bool) -> None:
        """Make the image available (pull it if `pull`), or raise RunError S103."""
        ...

    def start(self, specs: Sequence[LearnerSpec]) -> list[str]:
        """Start these learners of one run; their handles, in the order of `specs`.
        All or none: RunError (S101, S103) leaves none of them behind."""
        ...

    def find(self, run_id: str) -> dict[int, Found]:
        """The run's learners that exist, by learner number (after a restart)."""
        ...

    def wait(self, handle: str, timeout: float | None) -> Exit | None:
        """Block until the learner ends; None once `timeout` seconds passed."""
        ...

    def stop(self, handle: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; nothing if already gone."""
        ...

    def remove(self, handle: str) -> None:
        """Remove what is left of an ended learner; nothing if already gone."""
        ...

    def usage(self, handle: str) -> dict[str, int]:
        """What a running learner used so far: "cpu_ns" (CPU time) and "memory_peak"
        (bytes), each left out where not known (usage accounting samples it)."""
        ...

    def leftovers(self) -> list[tuple[str, str]]:
        """(run id, handle) of every learner this daemon started that still exists."""
        ...

    def phase(self, run_id: str) -> str | None:
        """Where a run that stages its own data stands: DOWNLOADING, PROCESSING or
        STORING; None when not known (or not started yet, or `stages_data` is off)."""
        ...

    def waiting_reason(self, run_id: str) -> str | None:
        """Why a cluster's scheduler holds a run that `places_runs` hands over, in a
        sentence (Slurm's reason: Resources, Priority, QOSMaxGRESPerUser, ...); None when
        it does not hold it."""
        ...


def names() -> list[str]:
    """The accepted values of the config's `executor` key: the modules here."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def create(config: Config, daemon_label: str) -> Executor:
    """The configured executor. `daemon_label` tells this daemon's learners apart."""
    module = importlib.import_module(f"{__name__}.{config.executor}")
    executor: Executor = module.create(config, daemon_label)
    return executor
