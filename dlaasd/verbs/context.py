"""What a verb works with: the daemon's parts, and who asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..access import Caller
from ..config import Config
from ..database import Database
from ..errors import Ambiguous, NotFound
from ..executors import Executor
from ..gpus import GpuInventory
from ..lifecycle import Lifecycle
from ..minio_server import BundledMinio
from ..objectstore import ObjectStore
from ..records import Run
from ..scheduler import Held


@dataclass(frozen=True)
class Context:
    config: Config
    db: Database
    objects: ObjectStore
    lifecycle: Lifecycle  # drives runs: where their files are, halting them
    executor: Executor  # where the learners run: whether an image is there
    gpus: GpuInventory
    minio: BundledMinio | None  # None with an external store
    caller: Caller
    started_at: float  # time.time() at the daemon's start
    # from the scheduling loop
    wake: Callable[[], None]  # a run was queued
    changed: Callable[[str], None]  # a run's status changed
    wait_change: Callable[[str, float], Awaitable[None]]  # until it does, or the timeout
    driving: Callable[[str], bool]  # the run is in the lifecycle's hands (a cluster's queue)
    held: Callable[[], Held]  # what the placed runs hold
    docker_ok: Callable[[], Awaitable[tuple[bool, str]]]  # Docker's health, cached

    def as_(self, caller: Caller) -> Context:
        """The same parts, for another caller (dlaasd itself, stopping a trial early)."""
        return replace(self, caller=caller)


@dataclass(frozen=True)
class Local:
    """A file in the run's folder (`root`), to be opened without following links."""

    root: Path
    path: Path


@dataclass(frozen=True)
class Stored:
    """Objects in the store: under `prefix`, or the one object named so."""

    objects: ObjectStore
    bucket: str
    prefix: str


def resolve(db: Database, ref: str, table: str, noun: str, listing: str) -> str:
    """The full id `ref` names (a unique prefix will do), or why not."""
    try:
        return db.resolve(ref, table)
    except NotFound:
        raise NotFound(f"no {noun} {ref!r}; `{listing}` shows them") from None
    except Ambiguous as exc:
        raise Ambiguous(
            f"{ref!r} matches several {noun}s ({', '.join(exc.matches)}); give more of the id",
            exc.matches,
        ) from None


def get_run(ctx: Context, ref: str) -> Run:
    """The run `ref` names, whoever owns it (the queue is everyone's)."""
    return ctx.db.get(resolve(ctx.db, ref, "runs", "run", "dlaasctl list"))


def visible_run(ctx: Context, ref: str, what: str) -> Run:
    """The run `ref` names, if the caller may see its `what`."""
    run = get_run(ctx, ref)
    ctx.caller.check_sees(run, what)
    return run
