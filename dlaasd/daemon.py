"""The composition root: wires the parts, recovers runs at start, schedules, shuts down.

Each step of the data flow lives in its own module, and each operation the API offers in
verbs/ (over the Context this one makes); this one only decides when they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from . import (
    diskspace,
    executors,
    filemodes,
    manifest,
    secret,
)
from .access import Caller
from .codes import (
    ACTIVE,
    DOWNLOADING,
    HOLDING_RESOURCES,
    QUEUED,
    Code,
)
from .config import Config
from .database import Database
from .errors import (
    NotFound,
    RunError,
)
from .executors import ExecutorUnavailable
from .gpus import GpuInventory
from .lifecycle import Lifecycle
from .minio_server import BundledMinio
from .objectstore import DataCache, Endpoint, ObjectStore, StoreUnavailable
from .runfolder import RunFolder
from .scheduler import Fairness, FreeGpu, Held, Limits, plan, plan_lines
from .started import started_file
from .verbs.context import Context
from .verbs.experiments import ROOT, EarlyStopping

log = logging.getLogger(__name__)


class StoreRefused(RuntimeError):
    """The configured object store refused dlaasd's credentials."""


class OwnerLimits(Mapping[str, Limits]):
    """fair_share's limits of each owner, asked for those a decision meets only."""

    def __init__(self, limits: Callable[[str], Limits]):
        self._limits = limits

    def __getitem__(self, owner: str) -> Limits:
        return self._limits(owner)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        state = config.state_path
        state.mkdir(parents=True, exist_ok=True)
        os.chmod(state, filemodes.reachable())
        self._lock = _lock(state / "dlaasd.lock")
        self.db = Database(state / "dlaas.db")
        self.executor = executors.create(config, daemon_label=str(state))
        self.gpus = GpuInventory()
        self.cache = DataCache(state / "cache", config.cache.max_size)
        if config.store.bundled:
            self.minio: BundledMinio | None = BundledMinio(
                state, config.store.minio_binary, config.store.minio_address
            )
            endpoint = self.minio.endpoint
        else:
            self.minio = None
            endpoint = Endpoint(
                config.store.endpoint.rstrip("/"),
                config.store.access_key,
                config.store.secret_key,
                config.store.region,
            )
        self.objects = ObjectStore(endpoint, config.store.transfer_workers)
        self.lifecycle = Lifecycle(
            config, self.db, self.executor, self.objects, self.cache, self.changed
        )
        self.vault = self.lifecycle.vault
        (state / "runs").mkdir(mode=filemodes.reachable(), exist_ok=True)
        filemodes.private_dir(state / "runs" / ".incoming")
        # an older dlaasd's state (once): every run's folder; later, those not ended only,
        # as dlaasd made the others so: a start does not visit the whole history
        upgrading = not self._upgraded.exists()
        self._redact_old_runs()
        filemodes.tighten(
            state,
            keep=[config.drop_path, config.socket_path, started_file(config.socket_path)],
            owners=self.owners(unfinished=not upgrading),
            every_run=upgrading,
        )
        self.tasks: dict[str, asyncio.Task] = {}
        self.started_at = time.time()
        self._wake = asyncio.Event()
        self._changes: dict[str, asyncio.Event] = {}
        self._scheduler: asyncio.Task | None = None
        self._docker_ok = (0.0, False, "")  # (checked at, ok, detail)
        self._pinging: asyncio.Task | None = None
        self._waiting: dict[str, str] = {}  # run id -> why it waits, as last written
        # ASHA stops an experiment's weak trials as their metrics arrive
        self.lifecycle.on_metrics.append(EarlyStopping(self.context(ROOT)).metrics_arrived)

    # --- start and stop ---------------------------------------------------------------

    def caller(self, uid: int, gid: int) -> Caller:
        """Someone on the other end of the socket, with what the config grants them."""
        return Caller(uid, gid, self.config.admin_group, self.config.visibility == "lab")

    def context(self, caller: Caller) -> Context:
        """What the verbs work with, for `caller`."""
        return Context(
            config=self.config,
            db=self.db,
            objects=self.objects,
            lifecycle=self.lifecycle,
            executor=self.executor,
            gpus=self.gpus,
            minio=self.minio,
            caller=caller,
            started_at=self.started_at,
            wake=self._wake.set,
            changed=self.changed,
            wait_change=self.wait_change,
            driving=lambda run_id: run_id in self.tasks,
            held=self.held,
            docker_ok=self.docker_ok,
        )

    def owners(self, unfinished: bool = False) -> dict[str, tuple[int, int]]:
        """run id -> the (uid, gid) its containers run as, which owns its job folder."""
        owners = self.db.owners(unfinished)
        users = {u: self.lifecycle.container_user(u) for u in set(owners.values())}
        return {run_id: users[uid] for run_id, uid in owners.items()}

    def _redact_old_runs(self) -> None:
        """An older dlaasd kept manifests as submitted, secrets and all: move the secrets
        to the vault and keep the redacted text (the definitions bucket follows at start),
        and forget the secrets of runs that are gone."""
        patterns = self.config.secret_env
        redacted_runs: list[str] = []
        done = self._upgraded  # once: later manifests come in redacted
        for run_id in self.vault.run_ids():
            if not self.db.exists(run_id):
                self.vault.remove(run_id)
        if done.exists():
            return
        for run_id, text in self.db.manifests():
            redacted = secret.redact(text or "", patterns)
            if redacted == (text or ""):
                continue
            try:
                found = secret.secrets_of(manifest.parse(text), patterns)
            except manifest.ManifestError:
                found = secret.Secrets()
            kept = self.vault.get(run_id)
            self.vault.put(
                run_id,
                secret.Secrets({**found.passwords, **kept.passwords}, {**found.env, **kept.env}),
            )
            self.db.update(run_id, manifest=redacted)
            folder = RunFolder.of(self.config.state_path, run_id)
            if folder.manifest.is_file() and not folder.manifest.is_symlink():
                folder.manifest.write_bytes(redacted.encode())
            redacted_runs.append(run_id)
            log.info("event=secrets_moved run=%s", run_id)
        changed = bool(redacted_runs)
        for exp_id, spec in self.db.experiment_specs():
            redacted = secret.redact(spec or "", patterns, at=("manifest",))
            if redacted != (spec or ""):
                self.db.update_experiment(exp_id, spec=redacted)
                changed = True
        if changed:
            self.db.scrub()
        self._pending_definitions().write_text(json.dumps(redacted_runs))
        done.touch(mode=0o600)

    @property
    def _upgraded(self) -> Path:
        return self.vault.root / ".upgraded"

    def _pending_definitions(self) -> Path:
        return self.vault.root / ".definitions-to-redact.json"

    async def _redact_stored_definitions(self) -> None:
        """The definitions an older dlaasd uploaded with their secrets: replaced by the
        redacted manifest. Best effort: a store that does not answer is logged."""
        pending = self._pending_definitions()
        if not pending.exists():
            return
        bucket = self.config.store.definitions_bucket
        left = []
        for run_id in json.loads(pending.read_text()):
            try:
                text = self.db.value(run_id, "manifest").encode()
                await asyncio.to_thread(
                    self.objects.put_stream,
                    bucket,
                    f"{run_id}/manifest.yml",
                    io.BytesIO(text),
                    len(text),
                )
            except NotFound:
                pass  # deleted meanwhile
            except (RunError, StoreUnavailable) as exc:
                if isinstance(exc, RunError) and exc.code == Code.DOWNLOAD_FAILED:
                    continue  # no bucket: nothing stored to redact
                log.warning("event=definition_redact_failed run=%s error=%r", run_id, str(exc))
                left.append(run_id)  # tried again at the next start
        if left:
            pending.write_text(json.dumps(left))
        else:
            pending.unlink()

    async def start(self) -> None:
        if self.minio:
            await self.minio.start()
        else:
            await self._check_external_store()
        await asyncio.to_thread(self.lifecycle.reserve.ensure)
        await self._redact_stored_definitions()
        self.recover()
        self._scheduler = asyncio.create_task(self._schedule_loop(), name="scheduler")

    async def _check_external_store(self) -> None:
        """Wrong keys are a config error: refuse to start. An endpoint that does not answer
        may come later (its own service starting): warn and go on."""
        try:
            await asyncio.to_thread(self.objects.check)
        except RunError as exc:
            raise StoreRefused(f"store.access_key/secret_key: {exc.message}") from None
        except StoreUnavailable as exc:
            log.warning(
                "event=store_unavailable endpoint=%s error=%r", self.objects.endpoint.url, str(exc)
            )

    def recover(self) -> None:
        """Resume every run that was under way when the daemon stopped or died, and remove
        containers of runs that ended (left when the daemon died while tidying up)."""
        # a cluster's executor was handed its QUEUED runs already: follow them again too
        following = ACTIVE | {QUEUED} if self.executor.places_runs else ACTIVE
        followed = {r.id for r in self.db.in_status(following)}
        try:
            for run_id, handle in self.executor.leftovers():
                if run_id not in followed:
                    self.executor.remove(handle)
        except ExecutorUnavailable as exc:
            log.warning("event=sweep_skipped reason=%r", str(exc))
        for run in self.db.in_status(following):
            log.info("event=recover run=%s status=%s", run.id, run.status)
            if run.status in HOLDING_RESOURCES:  # its data, held before any stage-in evicts
                with contextlib.suppress(RunError):  # gone: its training says so
                    self.lifecycle.data_tree(run.id)
            if run.halt_requested:
                self.lifecycle.request_halt(run.id)
            self._drive(run.id)
        self._wake.set()

    async def stop(self) -> None:
        """Stop scheduling and following; leave containers running for the next start."""
        self.lifecycle.shutdown()
        if self._scheduler:
            self._scheduler.cancel()
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if self.minio:
            await self.minio.stop()
        log.info("event=stopped")

    # --- change notification ----------------------------------------------------------

    def changed(self, run_id: str, frees: bool = True) -> None:
        if frees:  # else nothing a scheduling pass could use: queued runs wait on
            self._wake.set()
        event = self._changes.pop(run_id, None)
        if event:
            event.set()

    async def wait_change(self, run_id: str, timeout: float) -> None:
        event = self._changes.setdefault(run_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    # --- scheduling --------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=5)
            self._wake.clear()
            try:
                if not self.lifecycle.reserve.held:  # given back when the disk was full
                    await asyncio.to_thread(self.lifecycle.reserve.ensure)
                await self.schedule_once()
            except Exception as exc:
                if diskspace.is_disk_full(exc):  # the runs wait in the queue for space
                    log.error("event=disk_full where=schedule error=%r", str(exc))
                else:
                    log.exception("event=schedule_error")

    async def docker_ok(self) -> tuple[bool, str]:
        """Docker's health. While it was fine, the last answer serves and a fresh one is
        asked for on the side: a run's start does not wait for a ping (and if Docker went
        down meanwhile, the start waits for it anyway). After a failure, ask now."""
        checked, ok, detail = self._docker_ok
        if ok and time.monotonic() - checked > 2 and not self._pinging:
            self._pinging = asyncio.create_task(self._ping())
        elif not ok and time.monotonic() - checked > 0.5:
            await self._ping()
        return self._docker_ok[1:]

    async def _ping(self) -> None:
        try:
            health = await asyncio.to_thread(self.executor.health)
            self._docker_ok = (time.monotonic(), health.ok, health.message)
        finally:
            self._pinging = None

    async def schedule_once(self) -> None:
        if not self.db.any_queued():
            return
        ok, detail = await self.docker_ok()
        if not ok:
            log.warning("event=schedule_wait reason=%r", detail)
            return
        # no await from here on: a halt cannot slip in between reading the queue and placing
        if self.executor.places_runs:  # a cluster's scheduler decides: hand them over now
            for request in self.db.queued():
                if request.run_id not in self.tasks:
                    self._drive(request.run_id)
            return
        held = self.held()
        free_gpus = [
            FreeGpu(g.uuid, g.name)
            for g in self.gpus.list()
            if g.uuid not in held.gpus and not g.processes
        ]
        free_cpus = self.config.capacity.cpus - held.cpus
        free_memory = (self.config.capacity.memory or 0) - held.memory  # set at load
        share = self.config.fair_share
        fairness = Fairness(share.aging, OwnerLimits(share.limits), held.by_owner)
        if share.aging > 0:  # the order changes as runs wait: the whole queue, sorted
            decided = plan(self.db.queued(), free_gpus, free_cpus, free_memory, fairness)
        else:  # each line up to its first run that waits: as cheap with 10,000 queued as 10
            lines = self.db.queue_line(gpus=True), self.db.queue_line(gpus=False)
            decided = plan_lines(*lines, free_gpus, free_cpus, free_memory, fairness)
            for line in lines:
                line.close()
        self._waiting = {k: v for k, v in self._waiting.items() if k in decided.reasons}
        for run_id, reason in decided.reasons.items():
            message = f"waiting: {reason}"
            if self._waiting.get(run_id) != message:  # written when it changes only
                self._waiting[run_id] = message
                self.db.note(run_id, message)
        for p in decided.placements:
            self._waiting.pop(p.run_id, None)
            gpus = ", ".join(p.gpus) if p.gpus else "no GPU"
            self.db.transition(
                p.run_id, DOWNLOADING, f"placed on {gpus}; preparing", gpus=list(p.gpus)
            )
            log.info("event=placed run=%s gpus=%s", p.run_id, ",".join(p.gpus) or "-")
            self.changed(p.run_id, frees=False)  # this pass placed what fits already
            self._drive(p.run_id)

    def held(self) -> Held:
        """What the runs that hold resources (placed, not yet ended) hold in all."""
        holding = self.db.holding(HOLDING_RESOURCES)
        by_owner: dict[str, tuple[int, int]] = {}
        for _, owner, _, _, uuids in holding:
            gpus, runs = by_owner.get(owner, (0, 0))
            by_owner[owner] = (gpus + len(uuids), runs + 1)
        return Held(
            {g: run_id for run_id, _, _, _, uuids in holding for g in uuids},
            sum(cpus for _, _, cpus, _, _ in holding),
            sum(memory for _, _, _, memory, _ in holding),
            by_owner,
        )

    def _drive(self, run_id: str) -> None:
        task = asyncio.create_task(self.lifecycle.drive(run_id), name=f"run-{run_id}")
        self.tasks[run_id] = task

        def done(_: asyncio.Task) -> None:
            self.tasks.pop(run_id, None)
            self.lifecycle.forget(run_id)
            self._wake.set()

        task.add_done_callback(done)


def _lock(path: Path):
    """One daemon per state folder."""
    f = open(path, "w")  # noqa: SIM115 (held for the daemon's life)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"dlaasd: another dlaasd is already using {path.parent}; stop it first"
        ) from None
    f.write(str(os.getpid()))
    f.flush()
    return f
