"""PROCESSING: start the learners (or find them again after a restart), follow their
metrics, wait for them, and decide the run's outcome from how they ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from .. import diskspace, learners, measure
from ..admission import volume_path
from ..codes import DOWNLOADING, HALTED, PROCESSING, QUEUED, STORING
from ..database import now, parse_time
from ..executors import ExecutorUnavailable, Exit, LearnerSpec, Location, Staging
from ..manifest import Manifest
from ..metrics import MetricsReader
from ..outcome import Ended, decide, first_failure
from ..records import Outcome, Run
from ..runfolder import OOM_MARK, RunFolder
from . import Context

log = logging.getLogger(__name__)

METRICS_INTERVAL = 1.0  # seconds between reads of a training's metrics

T = TypeVar("T")


@dataclass
class Waited:
    """How a run's learners ended, as the wait saw it."""

    exits: list[tuple[int, Exit]] = field(default_factory=list)  # in the order they ended
    timed_out: bool = False
    lost: str = ""  # the executor's place went down while it trained: what happened


async def train(
    ctx: Context,
    run: Run,
    m: Manifest,
    folder: RunFolder,
    resumed: bool = True,
    on_start: Callable[[], None] | None = None,
) -> Outcome:
    """`on_start`: called once the learners were started (not when found again): work
    that may go alongside the training, kept off the engine's create and start."""
    run_id = run.id
    found = await ctx.call(run_id, ctx.executor.find, run_id) if resumed else {}
    # a stranded learner (the daemon created it and died before starting it) never
    # trained: it is made again (the start removes it); the others are waited on again
    running = {n: f.handle for n, f in found.items() if not f.stranded}
    if running:
        log.info("event=reattach run=%s containers=%d", run_id, len(running))
    if ctx.halted(run_id) and not running:
        return Outcome(HALTED, "halted before the training started")
    specs = [] if ctx.halted(run_id) else specs_of(ctx, run, m, folder)
    missing = [s for s in specs if s.learner not in running]
    if missing and ctx.executor.places_runs:  # the cluster queues them in this order
        await ctx.handover_turn(run_id)
        if ctx.halted(run_id) and not running:
            ctx.handed_over(run_id)
            return Outcome(HALTED, "halted before the training started")
    if missing:
        pull = ctx.config.containers.pull_missing_images

        def prepare_and_start() -> list[str]:  # one trip to a thread, on the path to a start
            ctx.executor.prepare(run.image, pull)
            return ctx.executor.start(missing)

        try:
            handles = await ctx.call(run_id, prepare_and_start)
        finally:
            ctx.handed_over(run_id)
        running.update(zip((s.learner for s in missing), handles, strict=True))
        if on_start:
            on_start()
    ctx.handed_over(run_id)  # found handed over already: the runs behind need not wait
    learner_of = {running[n]: n for n in sorted(running)}  # learner 1 first
    started = parse_time(run.started)  # None: a cluster's queued run (its limit serves)
    deadline = started.timestamp() + m.timeout if m.timeout and started else None
    ctx.handles[run_id] = list(learner_of)
    reader = MetricsReader(folder, m.evaluation_metrics)
    if resumed:  # read again from the start after a restart (a fresh start has none)
        ctx.db.clear_metrics(run_id)
    ended = asyncio.Event()
    collector = asyncio.create_task(_collect_metrics(ctx, run_id, reader, ended))
    # learners that stage their own data: their status follows the phase they report
    follower = (
        asyncio.create_task(_follow(ctx, run_id, run.status, ended))
        if ctx.executor.stages_data
        else None
    )
    # what the learners use (usage accounting), sampled from their cgroups meanwhile
    gpus = run.gpus or []
    per_learner = [gpus[(n - 1) * m.gpus : n * m.gpus] for n in learner_of.values()]
    sampler = asyncio.create_task(
        measure.follow(ctx.db, run_id, list(learner_of), per_learner, ended, ctx.executor.usage)
    )
    try:
        waited = await _wait_all(ctx, run_id, learner_of, deadline)
    finally:
        ended.set()
        await collector  # its last read takes the lines written at the very end
        await sampler
        if follower:
            await follower
    points = ctx.db.metrics(run_id)
    if points:
        try:
            await asyncio.to_thread(_save_metrics, folder, points)
        except OSError as exc:  # they are in the database all the same
            log.warning("event=metrics_file_skipped run=%s error=%r", run_id, str(exc))
    return decide(_facts(ctx, run_id, m, folder, waited))


def specs_of(ctx: Context, run: Run, m: Manifest, folder: RunFolder) -> list[LearnerSpec]:
    specs = learners.specs(
        run.id,
        m,
        run.image,
        folder,
        ctx.container_user(run.owner_uid),
        run.gpus or [],
        ctx.config.containers,
        volume_path(m) or ctx.data_tree(run.id),
    )
    if not ctx.executor.stages_data:
        return specs
    staging = staging_of(ctx, run, m)
    return [replace(s, staging=staging) for s in specs]


def staging_of(ctx: Context, run: Run, m: Manifest) -> Staging:
    """Where the learners that stage their own data take it from and put results."""
    data = None
    store = m.data_store
    if store and store.type != "mount_volume" and store.training_data:
        objects = ctx.store_for(m)
        data = Location(objects.endpoint, store.training_data.bucket, store.training_data.prefix)
    objects, bucket, prefix = ctx.results_location(run.id, m)
    owner = ctx.container_user(run.owner_uid) if os.geteuid() == 0 else None
    definition = Location(ctx.objects.endpoint, ctx.config.store.definitions_bucket, f"{run.id}/")
    results = Location(objects.endpoint, bucket, prefix)
    return Staging(data, results, run.hyperparameters, owner, definition)


def _facts(ctx: Context, run_id: str, m: Manifest, folder: RunFolder, waited: Waited) -> Ended:
    """What the decision needs, read from the database and the failing learner's logs."""
    halt_reason = None
    if ctx.halted(run_id):
        halt_reason = ctx.db.get(run_id).halt_reason or ""
    cause = first_failure(waited.exits)
    oom_marked, last_line, disk_full = False, "", ""
    if cause is not None:
        oom_marked = _oom_marked(folder, folder.learner_logs(cause))
        last_line = _last_line(folder, folder.learner_log(cause))
        if ctx.reserve.disk_full():
            disk_full = diskspace.sentence(ctx.config.state_path, "the training wrote its outputs")
    return Ended(
        exits=waited.exits,
        learners=m.learners,
        timeout=float(m.timeout or 0),
        memory=m.memory,
        halt_reason=halt_reason,
        timed_out=waited.timed_out,
        lost=waited.lost,
        oom_marked=oom_marked,
        last_line=last_line,
        disk_full=disk_full,
    )


async def _collect_metrics(
    ctx: Context, run_id: str, reader: MetricsReader, ended: asyncio.Event
) -> None:
    """Read new metric points every second while the training runs, and once more
    when it has ended; tell the listeners (an ASHA experiment decides on them)."""
    while True:
        last = ended.is_set()
        try:
            points = await asyncio.to_thread(reader.poll)
        except Exception:  # a metrics file we cannot read must not end the run
            log.exception("event=metrics_error run=%s", run_id)
            points = []
        if points:
            ctx.db.add_metrics(run_id, points)
            for listener in ctx.on_metrics:
                try:
                    listener(run_id)
                except Exception:
                    log.exception("event=metrics_listener_error run=%s", run_id)
        if last:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), METRICS_INTERVAL)


# what a run's status says when a node reports the phase it is in
PHASES: dict[str, str] = {
    DOWNLOADING: "staging the training data in",
    PROCESSING: "training",
    STORING: "uploading results and logs",
}


async def _follow(ctx: Context, run_id: str, status: str, ended: asyncio.Event) -> None:
    """Move the run's status on as the executor reports the phase its learners are in
    (never back), until they end."""
    order: list[str] = [QUEUED, *PHASES]
    said = ""
    while True:
        # a last look once they ended: a short training may have passed every phase
        # between two looks, and the history still says it ran
        last = ended.is_set()
        phase = await ctx.call(run_id, ctx.executor.phase, run_id)
        # held by the cluster: say why, as it does (an executor without the method, one
        # written before it, says nothing)
        why = getattr(ctx.executor, "waiting_reason", None)
        if status == QUEUED and phase is None and why:
            reason = await ctx.call(run_id, why, run_id)
            if reason and reason != said:
                ctx.db.note(run_id, reason)
                ctx.notify(run_id)
                said = reason
        if phase in PHASES and status in order and order.index(phase) > order.index(status):
            # every phase the learners went through, in order, even one they passed
            # between two looks: the history says what happened
            for step in order[order.index(status) + 1 : order.index(phase) + 1]:
                fields = {"started": now()} if step == PROCESSING else {}
                ctx.to(run_id, step, PHASES[step], **fields)
            status = phase
        if last:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), METRICS_INTERVAL)


async def _wait(
    ctx: Context, run_id: str, handle: str, timeout: float | None, waited: Waited
) -> Exit | None:
    """A learner's end (None once `timeout` passed). In a daemon thread: a wait lasts as
    long as the training and must not hold the process at shutdown, as an executor's
    thread would. A place that goes down (the Docker Engine) takes the training with it."""
    while True:
        try:
            return await detached(ctx.executor.wait, handle, timeout)
        except ExecutorUnavailable as exc:
            if not waited.lost:
                ctx.db.note(run_id, f"waiting for {exc.place}: {exc}")
                log.warning("event=executor_lost run=%s", run_id)
            waited.lost = f"{exc.place} stopped while the training ran"
            await asyncio.sleep(2)


async def _wait_all(
    ctx: Context, run_id: str, learner_of: dict[str, int], deadline: float | None
) -> Waited:
    """Wait for every learner; one failing, the timeout or a halt ends them all."""
    grace = ctx.config.containers.halt_grace
    waited = Waited()

    async def stop(handles: Iterable[str]) -> None:
        for handle in list(handles):
            await ctx.call(run_id, ctx.executor.stop, handle, grace)

    def wait(handle: str, timed: bool = True) -> asyncio.Task[Exit | None]:
        timeout = None if deadline is None or not timed else max(deadline - time.time(), 0.01)
        return asyncio.create_task(_wait(ctx, run_id, handle, timeout, waited))

    halt = asyncio.create_task(ctx.halt_signal(run_id).wait())
    pending = {wait(handle): handle for handle in learner_of}
    try:
        while pending:
            watch: list[asyncio.Task[Any]] = [*pending]
            if not halt.done():
                watch.append(halt)
            done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
            if halt in done:
                await stop(pending.values())
            for task in done - {halt}:
                handle = pending.pop(task)
                result = task.result()
                if result is None:  # the deadline passed
                    waited.timed_out = True
                    await stop([handle])
                    pending[wait(handle, timed=False)] = handle
                    continue
                waited.exits.append((learner_of[handle], result))
                if result.code != 0:
                    await stop(pending.values())
    finally:
        for task in [*pending, halt]:
            task.cancel()
        ctx.drop_halt_signal(run_id)
    return waited


async def detached(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a daemon thread and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def work() -> None:
        result: T | BaseException
        try:
            result, ok = fn(*args), True
        except BaseException as exc:
            result, ok = exc, False
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, result)

    name = getattr(fn, "__name__", "call")
    threading.Thread(target=work, daemon=True, name=f"detached-{name}").start()
    return await future


def _save_metrics(folder: RunFolder, points: list[dict]) -> None:
    """The run's metrics as JSON lines beside its log, so they are uploaded with it."""
    with folder.open(folder.logs / "metrics.jsonl", write=True) as f:
        for p in points:
            line = json.dumps({k: p[k] for k in ("step", "name", "value", "time")}) + "\n"
            f.write(line.encode())


def _oom_marked(folder: RunFolder, logs: Path) -> bool:
    """Whether the training's shell saw the kernel's OOM killer in its cgroup."""
    try:
        with folder.open(logs / OOM_MARK) as f:
            return int(f.read(32) or 0) > 0
    except (OSError, ValueError):
        return False


def _last_line(folder: RunFolder, path: Path, max_bytes: int = 4096) -> str:
    """The last non-empty line of the training log: usually the error."""
    try:
        with folder.open(path) as f:
            f.seek(max(0, f.seek(0, 2) - max_bytes))
            lines = [
                ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()
            ]
    except OSError:
        return ""
    line = lines[-1] if lines else ""
    return line if len(line) <= 200 else line[:197] + "..."
