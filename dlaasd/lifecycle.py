"""Drives one run through its phases, from wherever it stands (so a restart resumes it).

    DOWNLOADING  unpack the model code, stage the training data in
    PROCESSING   start the containers (or find them again), wait, decide the outcome
    STORING      upload results, logs and the definition; only then the final status

The outcome of the training is decided when the containers end and kept in the run's
`outcome` column, so a restart during STORING still ends with the right status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import pwd
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import archive, diskspace, manifest, measure
from .admission import volume_path
from .codes import (
    COMPLETED,
    DOWNLOADING,
    FAILED,
    HALTED,
    PROCESSING,
    STORING,
    RunError,
)
from .config import Config
from .database import Database, now, parse_time
from .manifest import Manifest
from .metrics import MetricsReader
from .objectstore import DataCache, Endpoint, ObjectStore, StoreUnavailable, Transfer
from .runfolder import IN_CONTAINER, OOM_MARK, RunFolder
from .runner import ContainerSpec, DockerUnavailable, Exit, Runner
from .secret import Vault
from .units import format_duration, format_size

log = logging.getLogger(__name__)

METRICS_INTERVAL = 1.0  # seconds between reads of a training's metrics


@dataclass
class Waited:
    """How a run's containers ended."""

    exits: dict[str, Exit]  # in the order they ended
    timed_out: bool = False
    engine_lost: bool = False  # the Docker Engine went down while it trained


class Lifecycle:
    def __init__(
        self,
        config: Config,
        db: Database,
        runner: Runner,
        objects: ObjectStore,
        cache: DataCache,
        notify: Callable[[str], None],
    ):
        self.config = config
        self.db = db
        self.runner = runner
        self.objects = objects  # the configured store (bundled MinIO or external)
        self.cache = cache
        self.notify = notify
        # run in a thread once a run's outputs are stored (the drop folder's mirror): they
        # get the run as it stands, and must not use the database themselves
        self.after_store: list[Callable[[dict, RunFolder], None]] = []
        # runs to halt; read by transfer threads too, which must not touch SQLite
        self.halting: set[str] = set()
        self._halt_signals: dict[str, asyncio.Event] = {}  # wake a run's wait on a halt
        self.stopping = False  # the daemon shuts down: transfers in threads give up soon
        # the definition is uploaded while the training runs; STORING only waits for it
        self._definitions: dict[str, asyncio.Task] = {}
        self._containers: dict[str, list[str]] = {}  # run id -> container ids, until removed
        self.on_metrics: list[Callable[[str], None]] = []  # told when a run reports points
        self._stores: dict[Endpoint, ObjectStore] = {}
        self.reserve = diskspace.Reserve(config.state_path)
        # the manifests' secrets, apart from the redacted text kept for reading
        self.vault = Vault(config.state_path / "secrets")

    def manifest_of(self, run: dict) -> Manifest:
        """The run's manifest as submitted: the kept text, with its secrets put back."""
        return self.vault.get(run["id"]).apply(manifest.parse(run["manifest"]))

    def folder(self, run_id: str) -> RunFolder:
        return RunFolder.of(self.config.state_path, run_id)

    def store_for(self, m: Manifest) -> ObjectStore:
        """The manifest's own endpoint (FfDL `connection`), or the configured store."""
        conn = m.data_store.remote if m.data_store else None
        if not conn:
            return self.objects
        ep = Endpoint(conn.auth_url.rstrip("/"), conn.user_name, conn.password, conn.region)
        if ep not in self._stores:
            self._stores[ep] = ObjectStore(ep, self.config.store.transfer_workers)
        return self._stores[ep]

    def results_location(self, run_id: str, m: Manifest) -> tuple[ObjectStore, str, str]:
        store = m.data_store
        if store and store.training_results and store.type != "mount_volume":
            return self.store_for(m), store.training_results.bucket, f"{run_id}/"
        return self.objects, self.config.store.results_bucket, f"{run_id}/"

    def _to(self, run_id: str, status: str, message: str = "", **fields) -> dict:
        self.db.transition(run_id, status, message, **fields)
        log.info("event=status run=%s status=%s message=%r", run_id, status, message)
        self.notify(run_id)
        return self.db.get(run_id)

    def halted(self, run_id: str) -> bool:
        return run_id in self.halting

    def request_halt(self, run_id: str) -> None:
        """Halt a run wherever it stands: a download stops between files, a training gets
        SIGTERM (now, or as soon as its containers exist)."""
        self.halting.add(run_id)
        if run_id in self._halt_signals:
            self._halt_signals[run_id].set()

    # --- the whole way ------------------------------------------------------------

    async def drive(self, run_id: str) -> None:
        """Drive the run to its end. A full disk that keeps SQLite from recording it gives
        the reserve back (or waits for space) and resumes from the status recorded."""
        delay = 1.0
        while True:
            try:
                await self._drive(run_id)
                return
            except asyncio.CancelledError:
                raise  # daemon shutdown: the run resumes from its status at the next start
            except Exception as exc:
                if not diskspace.is_disk_full(exc):
                    log.exception("event=run_error run=%s", run_id)
                    self._containers.pop(run_id, None)
                    self._to(run_id, FAILED, f"dlaasd internal error: {exc}", error_code="S101")
                    return
                log.error("event=disk_full run=%s error=%r", run_id, str(exc))
                if not self.reserve.release():  # nothing left to give: wait for space
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)

    async def _drive(self, run_id: str) -> None:
        run = self.db.get(run_id)
        m = self.manifest_of(run)
        folder = self.folder(run_id)
        # a run found past DOWNLOADING after a restart may have containers to find again,
        # and one found in STORING may have some of its results uploaded already
        found = run["status"]
        if run["status"] == DOWNLOADING:
            outcome = await self._guard(self.download(run, m, folder))
            if outcome is None and self.halted(run_id):
                outcome = _outcome(HALTED, "halted while the data was downloading")
            if outcome is None:
                run = self._to(run_id, PROCESSING, "training", started=now())
                self._definitions[run_id] = asyncio.create_task(
                    self._upload_definition(run_id, folder)
                )
            else:
                run = self._to(run_id, STORING, "uploading logs", outcome=outcome)
        if run["status"] == PROCESSING:
            outcome = await self._guard(self.process(run, m, folder, found != DOWNLOADING))
            run = self._to(
                run_id,
                STORING,
                "uploading results and logs",
                outcome=outcome,
                exit_code=outcome.get("exit_code"),
            )
        if run["status"] == STORING:
            await self.store(run, m, folder, resume=found == STORING)

    async def _guard(self, phase) -> dict | None:
        """Run a phase; a RunError becomes a FAILED outcome (the logs still get stored)."""
        try:
            return await phase
        except RunError as exc:
            return _outcome(FAILED, exc.message, exc.code)

    # --- DOWNLOADING ----------------------------------------------------------------

    async def download(self, run: dict, m: Manifest, folder: RunFolder) -> None:
        try:
            await self._download(run, m, folder)
        except OSError as exc:  # the code unpacked, the data linked or fetched: no room
            if diskspace.is_disk_full(exc):
                raise diskspace.error(self.config.state_path, "staging the run in") from exc
            raise

    async def _download(self, run: dict, m: Manifest, folder: RunFolder) -> None:
        run_id = run["id"]
        owner = self.container_user(run) if os.geteuid() == 0 else None
        await asyncio.to_thread(_prepare_job, folder, run["hyperparameters"], owner)
        store = m.data_store
        if store and store.type != "mount_volume" and store.training_data:
            bucket, prefix = store.training_data.bucket, store.training_data.prefix
            objects = self.store_for(m)
            stats = Transfer()

            def transfer(attempt: int) -> None:
                objects.stage_in(
                    bucket,
                    prefix,
                    folder.data,
                    self.cache,
                    stats,
                    stop=lambda: run_id in self.halting or self.stopping,
                )

            await self._with_retries(
                run_id, transfer, stats, "downloading", self.config.store.download_retry_for, "S302"
            )
            self._merge_staging(
                run_id,
                bytes_downloaded=stats.bytes,
                files_downloaded=stats.files,
                cache_hits=stats.cache_hits,
                download_seconds=round(stats.seconds, 3),
            )
            if stats.files:  # only downloads grow the cache
                await asyncio.to_thread(self.cache.evict)

    async def _with_retries(
        self,
        run_id: str,
        fn: Callable[[int], None],
        stats: Transfer,
        verb: str,
        retry_for: float,
        code: str,
    ) -> None:
        """Run a blocking transfer `fn(attempt)` in a thread, showing progress; retry while
        the store is unavailable, with backoff, for `retry_for` seconds, then fail with `code`."""
        deadline = time.monotonic() + retry_for
        delay, attempt = 1.0, 1
        while True:
            task = asyncio.create_task(asyncio.to_thread(fn, attempt))
            while not task.done():
                await asyncio.wait([task], timeout=1.0)
                if not task.done() and stats.total_files:
                    self.db.note(run_id, stats.progress(verb))
            try:
                task.result()
                return
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise RunError(
                        code,
                        f"{verb} failed after {attempt} attempts over "
                        f"{format_duration(retry_for)}: {exc}",
                    ) from exc
                self.db.note(
                    run_id,
                    f"{verb}: the object store is unavailable ({exc}); "
                    f"retry {attempt} in {delay:.0f}s",
                )
                log.warning(
                    "event=store_retry run=%s attempt=%d error=%r", run_id, attempt, str(exc)
                )
                await asyncio.sleep(delay)
                delay, attempt = min(delay * 2, 30), attempt + 1

    def _merge_staging(self, run_id: str, **values) -> None:
        staging = self.db.get(run_id).get("staging") or {}
        self.db.update(run_id, staging={**staging, **values})

    # --- PROCESSING ----------------------------------------------------------------

    def container_user(self, run: dict) -> tuple[int, int]:
        """The daemon's own user in user mode; the submitter, or the configured user for
        root's runs, in system mode. Never root."""
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        uid = run.get("owner_uid") or 0
        if uid:
            try:
                return uid, pwd.getpwuid(uid).pw_gid
            except KeyError:
                return uid, uid
        u, g = self.config.containers.user.split(":")
        return int(u), int(g)

    def specs(self, run: dict, m: Manifest, folder: RunFolder) -> list[ContainerSpec]:
        uid, gid = self.container_user(run)
        gpus = run.get("gpus") or []
        simulated = any(g.startswith("GPU-simulated") for g in gpus)
        mounts = [(str(folder.job), IN_CONTAINER["JOB_STATE_DIR"], False)]
        volume = volume_path(m)
        data_source = str(volume) if volume else str(folder.data)
        mounts.append((data_source, IN_CONTAINER["DATA_DIR"], True))
        specs = []
        for learner in range(1, m.learners + 1):
            mine = gpus[(learner - 1) * m.gpus : learner * m.gpus]
            logs = folder.learner_logs(learner)
            logs.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(logs, uid, gid)
            env = {
                # numerical libraries start a thread per host core unless told the quota
                "OMP_NUM_THREADS": str(max(1, math.ceil(m.cpus))),
                **m.env,
                **IN_CONTAINER,
                "LOG_DIR": f"{IN_CONTAINER['JOB_STATE_DIR']}/{logs.relative_to(folder.job)}",
                "TRAINING_ID": run["id"],
                "GPU_COUNT": str(m.gpus),
                "LEARNER_ID": str(learner),
                "NUM_LEARNERS": str(m.learners),
                "CUDA_VISIBLE_DEVICES": ",".join(mine),
                "HOME": "/tmp",
                # the optional helpers (dlaas_emetrics), ahead of the manifest's own path
                "PYTHONPATH": ":".join(
                    p for p in (HELPERS_IN_CONTAINER, m.env.get("PYTHONPATH")) if p
                ),
            }
            specs.append(
                ContainerSpec(
                    run_id=run["id"],
                    learner=learner,
                    image=run["image"],
                    command=m.framework.command,
                    env=env,
                    user=f"{uid}:{gid}",
                    cpus=m.cpus,
                    memory=m.memory,
                    mounts=mounts,
                    gpus=[] if simulated else mine,
                    network=m.network,
                    pids_limit=self.config.containers.pids_limit,
                    cap_add=self.config.containers.cap_add,
                )
            )
        return specs

    async def process(
        self, run: dict, m: Manifest, folder: RunFolder, resumed: bool = True
    ) -> dict:
        run_id = run["id"]
        found = await self._docker(run_id, self.runner.learners, run_id) if resumed else {}
        # only a container that really started is waited on again; one the daemon created
        # and died before starting never trained: it is made again (the start removes it)
        running = {n: cid for n, (cid, started) in found.items() if started}
        if running:
            log.info("event=reattach run=%s containers=%d", run_id, len(running))
        if self.halted(run_id) and not running:
            return _outcome(HALTED, "halted before the training started")
        specs = [] if self.halted(run_id) else self.specs(run, m, folder)
        missing = [s for s in specs if s.learner not in running]
        if missing:
            await self._docker(
                run_id,
                self.runner.ensure_image,
                run["image"],
                self.config.containers.pull_missing_images,
            )
        for spec in missing:
            try:
                running[spec.learner] = await self._docker(run_id, self.runner.start, spec)
            except RunError:
                for n in [s.learner for s in missing if s.learner in running]:
                    await self._docker(run_id, self.runner.remove, running[n])
                raise
        ids = [running[n] for n in sorted(running)]  # learner 1 first
        deadline = None
        if m.timeout:
            deadline = parse_time(run["started"]).timestamp() + m.timeout
        self._containers[run_id] = ids
        reader = MetricsReader(folder, m.evaluation_metrics)
        self.db.clear_metrics(run_id)  # read again from the start, after a restart too
        ended = asyncio.Event()
        collector = asyncio.create_task(self._collect_metrics(run_id, reader, ended))
        gpus = run.get("gpus") or []
        per_learner = [gpus[i * m.gpus : (i + 1) * m.gpus] for i in range(len(ids))]
        sampler = asyncio.create_task(measure.follow(self.db, run_id, ids, per_learner, ended))
        try:
            waited = await self._wait_all(run_id, ids, deadline)
        finally:
            ended.set()
            await collector  # its last read takes the lines written at the very end
            await sampler
        points = self.db.metrics(run_id)
        if points:
            try:
                await asyncio.to_thread(_save_metrics, folder, points)
            except OSError as exc:  # they are in the database all the same
                log.warning("event=metrics_file_skipped run=%s error=%r", run_id, str(exc))
        return self._decide(run_id, m, folder, waited, ids)

    async def _collect_metrics(self, run_id: str, reader: MetricsReader, ended: asyncio.Event):
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
                self.db.add_metrics(run_id, points)
                for listener in self.on_metrics:
                    try:
                        listener(run_id)
                    except Exception:
                        log.exception("event=metrics_listener_error run=%s", run_id)
            if last:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), METRICS_INTERVAL)

    async def _docker(self, run_id: str, fn: Callable, *args):
        """A Docker call in a thread; while the engine is down, wait for it."""
        noted = False
        while True:
            try:
                return await asyncio.to_thread(fn, *args)
            except DockerUnavailable as exc:
                if not noted:
                    self.db.note(run_id, f"waiting for the Docker Engine: {exc}")
                    log.warning("event=docker_unavailable run=%s", run_id)
                    noted = True
                await asyncio.sleep(2)

    async def _wait(self, run_id: str, cid: str, timeout: float | None, waited: Waited):
        """A container's end (None once `timeout` passed). In a daemon thread: a wait
        lasts as long as the training and must not hold the process at shutdown, as an
        executor's thread would. An engine that goes down takes the training with it."""
        while True:
            try:
                return await detached(self.runner.wait, cid, timeout)
            except DockerUnavailable as exc:
                if not waited.engine_lost:
                    self.db.note(run_id, f"waiting for the Docker Engine: {exc}")
                    log.warning("event=docker_lost run=%s", run_id)
                waited.engine_lost = True
                await asyncio.sleep(2)

    async def _wait_all(self, run_id: str, ids: list[str], deadline: float | None) -> Waited:
        """Wait for every learner; one failing, the timeout or a halt ends them all."""
        grace = self.config.containers.halt_grace
        waited = Waited({})

        async def stop(cids) -> None:
            for cid in list(cids):
                await self._docker(run_id, self.runner.stop, cid, grace)

        def wait(cid: str, timed: bool = True) -> asyncio.Task:
            timeout = None if deadline is None or not timed else max(deadline - time.time(), 0.01)
            return asyncio.create_task(self._wait(run_id, cid, timeout, waited))

        signal = self._halt_signals[run_id] = asyncio.Event()
        if self.halted(run_id):  # asked for while the containers were being made
            signal.set()
        halt = asyncio.create_task(signal.wait())
        pending = {wait(cid): cid for cid in ids}
        try:
            while pending:
                watch = [*pending, halt] if not halt.done() else list(pending)
                done, _ = await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
                if halt in done:
                    await stop(pending.values())
                for task in done - {halt}:
                    cid = pending.pop(task)
                    result = task.result()
                    if result is None:  # the deadline passed
                        waited.timed_out = True
                        await stop([cid])
                        pending[wait(cid, timed=False)] = cid
                        continue
                    waited.exits[cid] = result
                    if result.code != 0:
                        await stop(pending.values())
        finally:
            for task in [*pending, halt]:
                task.cancel()
            self._halt_signals.pop(run_id, None)
        return waited

    def _decide(
        self, run_id: str, m: Manifest, folder: RunFolder, waited: Waited, ids: list[str]
    ) -> dict:
        exits = waited.exits
        # `exits` is in the order the containers ended: the first failure is the cause
        cause = next((cid for cid, e in exits.items() if e.code != 0), None)
        failed = exits[cause] if cause else None
        code = failed.code if failed else next((e.code for e in exits.values()), -1)
        if self.halted(run_id):
            reason = self.db.get(run_id)["halt_reason"] or "halted on request"
            return _outcome(HALTED, reason, exit_code=code)
        unstarted = [ids.index(cid) + 1 for cid, e in exits.items() if not e.started]
        if unstarted:  # its exit code 0 means nothing: it never ran (not a success)
            return _outcome(
                FAILED,
                f"the container of learner {unstarted[0]} was created but never started; "
                "nothing was trained: submit the run again",
                "S101",
            )
        if waited.timed_out:
            return _outcome(
                FAILED,
                f"timed out after {format_duration(m.timeout)} (the "
                "manifest's timeout); raise it or make the training shorter",
                "C203",
                code,
            )
        if failed is None:
            return _outcome(COMPLETED, "training completed", exit_code=code)
        if waited.engine_lost:
            return _outcome(
                FAILED,
                f"the Docker Engine stopped while the training ran (exit "
                f"{code}); its log and what it wrote are kept; submit it again",
                "C201",
                code,
            )
        if failed.oom_killed or _oom_marked(folder, folder.learner_logs(ids.index(cause) + 1)):
            return _outcome(
                FAILED,
                f"killed for using more than its {format_size(m.memory)} "
                "of memory; ask for more with `memory` in the manifest",
                "C202",
                code,
            )
        learner = ids.index(cause) + 1
        last = _last_line(folder, folder.learner_log(learner)) or failed.error
        who = f"learner {learner}: " if m.learners > 1 else ""
        message = f"{who}the training command exited with code {code}" + (
            f": {last}" if last else ""
        )
        if self.reserve.disk_full():  # likely why it failed
            full = diskspace.sentence(self.config.state_path, "the training wrote its outputs")
            return _outcome(FAILED, f"{message}; {full}", "S304", code)
        return _outcome(FAILED, message, "C201", code)

    # --- STORING --------------------------------------------------------------------

    def _definition_files(self, run_id: str, folder: RunFolder) -> list[tuple[Path, str]]:
        return [(p, f"{run_id}/{p.name}") for p in folder.definition]

    async def _upload_definition(self, run_id: str, folder: RunFolder) -> bool:
        """Best effort, early: if the store is down now, STORING tries again."""
        try:
            files = self._definition_files(run_id, folder)
            bucket = self.config.store.definitions_bucket
            await asyncio.to_thread(self.objects.stage_out, files, bucket, Transfer(), False)
            return True
        except Exception as exc:
            log.info("event=definition_upload_deferred run=%s error=%r", run_id, str(exc))
            return False

    async def store(self, run: dict, m: Manifest, folder: RunFolder, resume: bool = True) -> None:
        run_id = run["id"]
        outcome = run.get("outcome") or _outcome(FAILED, "the run ended without an outcome", "S101")
        objects, bucket, prefix = self.results_location(run_id, m)
        outputs = [(p, f"{run_id}/{rel}") for p, rel in folder.outputs()]
        early = self._definitions.pop(run_id, None)
        definition = [] if early and await early else self._definition_files(run_id, folder)
        stats = Transfer()
        # the hooks (the drop folder's copy) read the same local files: alongside the upload
        snapshot = self.db.get(run_id)
        hooks = asyncio.gather(
            *(asyncio.to_thread(hook, snapshot, folder) for hook in self.after_store),
            return_exceptions=True,
        )

        def upload(attempt: int) -> None:  # the results and the definition side by side
            again = resume or attempt > 1  # a retry follows a failed attempt
            stop = lambda: self.stopping  # noqa: E731
            if not definition:
                objects.stage_out(outputs, bucket, stats, again, stop, folder.open)
                return
            with ThreadPoolExecutor(2) as pool:
                jobs = [
                    pool.submit(
                        objects.stage_out, outputs, bucket, stats, again, stop, folder.open
                    ),
                    pool.submit(
                        self.objects.stage_out,
                        definition,
                        self.config.store.definitions_bucket,
                        Transfer(),
                    ),
                ]
                for job in jobs:
                    job.result()

        try:
            await self._with_retries(
                run_id, upload, stats, "uploading", self.config.store.upload_retry_for, "S303"
            )
        except RunError as exc:
            kept = f"the results stay in {folder.job}"
            if outcome["status"] == FAILED:  # the first failure is the one to report
                code = outcome["error_code"]
                message = f"{outcome['message']}; also {exc.message}; {kept}"
            else:
                code, message = exc.code, f"{exc.message}; {kept}"
            await self._finish_hooks(run_id, hooks)
            self._to(run_id, FAILED, message, error_code=code, exit_code=outcome.get("exit_code"))
            await self._remove_containers(run_id)
            return
        self._merge_staging(
            run_id,
            bytes_uploaded=stats.bytes,
            files_uploaded=stats.files,
            upload_seconds=round(stats.seconds, 3),
        )
        self.db.update(run_id, results=f"s3://{bucket}/{prefix}")
        await self._finish_hooks(run_id, hooks)
        self._to(
            run_id,
            outcome["status"],
            outcome["message"],
            error_code=outcome.get("error_code"),
            exit_code=outcome.get("exit_code"),
        )
        # tidying up after the final status: nobody waits for it, and it cannot change it
        try:
            await self._remove_containers(run_id)
            await asyncio.to_thread(folder.tidy, self.config.results.keep_local)
        except Exception:
            log.exception("event=tidy_failed run=%s", run_id)

    async def _finish_hooks(self, run_id: str, hooks: asyncio.Future) -> None:
        for result in await hooks:
            if isinstance(result, Exception):
                log.error("event=after_store_failed run=%s error=%r", run_id, str(result))

    async def _remove_containers(self, run_id: str) -> None:
        ids = self._containers.pop(run_id, None)
        if ids is None:  # started before a restart: ask Docker
            ids = await self._docker(run_id, self.runner.find, run_id)
        for cid in ids:
            await self._docker(run_id, self.runner.remove, cid)


async def detached(fn: Callable, *args):
    """Run a blocking call in a daemon thread and await its result."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(ok: bool, value) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def work() -> None:
        try:
            result, ok = fn(*args), True
        except BaseException as exc:
            result, ok = exc, False
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, result)

    threading.Thread(target=work, daemon=True, name=f"detached-{fn.__name__}").start()
    return await future


def _outcome(
    status: str, message: str, error_code: str | None = None, exit_code: int | None = None
) -> dict:
    return {"status": status, "message": message, "error_code": error_code, "exit_code": exit_code}


def _fresh_unpack(zip_path: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    try:
        archive.unpack(zip_path, dest)
    except archive.ArchiveError as exc:
        raise RunError("C102", "; ".join(exc.problems)) from None


HELPERS = Path(__file__).parent / "helpers"
HELPERS_IN_CONTAINER = f"{IN_CONTAINER['JOB_STATE_DIR']}/.dlaas"


def _prepare_job(folder: RunFolder, hyperparameters: dict | None, owner: tuple | None) -> None:
    """The run's folders, its model code, the helpers, an experiment trial's config.json,
    all handed to the container's user: one trip to a thread."""
    if owner:
        folder.reclaim()
    folder.prepare()
    if folder.model_zip.exists():
        _fresh_unpack(folder.model_zip, folder.model_code)
    # modules training code may import (never must), in the run's own folder, which every
    # container mounts already, wherever dlaasd itself runs
    helpers = folder.job / ".dlaas"
    helpers.mkdir(exist_ok=True)
    for module in HELPERS.glob("*.py"):
        shutil.copyfile(module, helpers / module.name)
    if hyperparameters:  # an experiment's trial: Watson ML's config.json in MODEL_DIR
        (folder.model_code / "config.json").write_text(json.dumps(hyperparameters, indent=2))
    if owner:
        folder.give_to(*owner)


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
