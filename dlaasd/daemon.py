"""The composition root: wires the parts, recovers runs at start, schedules, shuts down.

Each step of the data flow lives in its own module; this one only decides when they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import logging
import os
import secrets
import shutil
import string
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import (
    __version__,
    admission,
    archive,
    diskspace,
    executors,
    filemodes,
    manifest,
    notifications,
    secret,
    sweep,
)
from .access import Caller
from .codes import (
    ACTIVE,
    DOWNLOADING,
    FINAL,
    HALTED,
    HOLDING_RESOURCES,
    QUEUED,
    STORING,
    Code,
)
from .config import PRIORITY_BOUND, Config
from .database import Database
from .errors import (
    Ambiguous,
    Conflict,
    DlaasError,
    Forbidden,
    Invalid,
    NotFound,
    RunError,
    Unavailable,
)
from .executors import ExecutorUnavailable
from .gpus import GpuInventory
from .lifecycle import Lifecycle
from .minio_server import BundledMinio
from .objectstore import DataCache, Endpoint, ObjectStore, StoreUnavailable, key_problem
from .runfolder import RunFolder
from .scheduler import Fairness, FreeGpu, Limits, plan, plan_lines
from .schema import Problem
from .started import started_file

log = logging.getLogger(__name__)


class StoreRefused(RuntimeError):
    """The configured object store refused dlaasd's credentials."""


@dataclass
class Held:
    gpus: dict[str, str]  # uuid -> the run holding it
    cpus: float
    memory: int
    by_owner: dict[str, tuple[int, int]]  # owner -> (GPUs, runs) held


def refused(
    exc: manifest.ManifestError | sweep.ExperimentError | admission.AdmissionError,
    message: str,
    at: str = "",
) -> Invalid:
    """Every problem of a document; `at` places them inside a larger one."""
    problems = [Problem(at + p.path, p.message, p.line) for p in exc.problems]
    return Invalid(message, exc.code, problems)


def parse_manifest(text: bytes, what: str = "the manifest", at: str = "") -> manifest.Manifest:
    try:
        return manifest.parse(text)
    except manifest.ManifestError as exc:
        raise refused(exc, f"{what} has problems; nothing was queued", at) from None


def _buckets_of(manifest_text: str) -> list[dict[str, str]]:
    """A stored run's buckets, by the manifest's names and the store's (`show`)."""
    try:
        return manifest.parse(manifest_text).buckets()
    except manifest.ManifestError:  # a run from a dlaasd that read manifests otherwise
        return []


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


def new_id(kind: str = "training") -> str:
    """FfDL's ids: "training-" (or "experiment-") and nine random letters or digits."""
    alphabet = string.ascii_lowercase + string.digits
    return f"{kind}-" + "".join(secrets.choice(alphabet) for _ in range(9))


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

    # --- start and stop ---------------------------------------------------------------

    def caller(self, uid: int, gid: int) -> Caller:
        """Someone on the other end of the socket, with what the config grants them."""
        return Caller(uid, gid, self.config.admin_group, self.config.visibility == "lab")

    def owners(self, unfinished: bool = False) -> dict[str, tuple[int, int]]:
        """run id -> the (uid, gid) its containers run as, which owns its job folder."""
        owners = self.db.owners(unfinished)
        users = {u: self.lifecycle.container_user({"owner_uid": u}) for u in set(owners.values())}
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
        active = {r["id"] for r in self.db.in_status(ACTIVE)}
        try:
            for run_id, handle in self.executor.leftovers():
                if run_id not in active:
                    self.executor.remove(handle)
        except ExecutorUnavailable as exc:
            log.warning("event=sweep_skipped reason=%r", str(exc))
        # a cluster's executor was handed its QUEUED runs already: follow them again too
        following = ACTIVE | {QUEUED} if self.executor.places_runs else ACTIVE
        for run in self.db.in_status(following):
            log.info("event=recover run=%s status=%s", run["id"], run["status"])
            if run["halt_requested"]:
                self.lifecycle.request_halt(run["id"])
            self._drive(run["id"])
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

    def changed(self, run_id: str) -> None:
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
        free_memory = self.config.capacity.memory - held.memory
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
            self.changed(p.run_id)
            self._drive(p.run_id)

    def held(self) -> Held:
        """What the runs that hold resources (placed, not yet ended) hold in all."""
        holding = self.db.in_status(HOLDING_RESOURCES)
        by_owner: dict[str, tuple[int, int]] = {}
        for r in holding:
            gpus, runs = by_owner.get(r["owner_name"], (0, 0))
            by_owner[r["owner_name"]] = (gpus + len(r["gpus"] or []), runs + 1)
        return Held(
            {g: r["id"] for r in holding for g in (r["gpus"] or [])},
            sum(r["cpus"] for r in holding),
            sum(r["memory"] for r in holding),
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

    # --- the operations the API offers ------------------------------------------------

    async def submit(
        self,
        manifest_text: bytes,
        model_zip: Path | None,
        caller: Caller,
        source: str = "api",
        priority: int | None = None,
    ) -> dict:
        """Check everything that can be known now, then queue. `model_zip` is moved."""
        m = parse_manifest(manifest_text)
        extra = {"priority": self.check_priority(caller, priority)}
        admitted = await self.check(m, model_zip)
        return self.queue(m, manifest_text, admitted, model_zip, caller, source, extra)

    def check_priority(self, caller: Caller, priority: int | None) -> int:
        """The priority a run of `caller` gets: theirs to choose within the config's range
        (root and the admin group: any); none given, 0 or the nearest the range allows."""
        lo, hi = self.config.fair_share.priority_range(caller.name)
        if caller.privileged:
            lo, hi = -PRIORITY_BOUND, PRIORITY_BOUND
        if priority is None:
            return min(max(0, lo), hi)
        if not lo <= priority <= hi:
            allowed = f"from {lo} to {hi}" if lo != hi else f"only {lo}"
            raise Invalid(
                f"priority {priority} is not allowed for {caller.name}: {allowed} "
                "(the config's fair_share.priority_min/priority_max); nothing was queued",
                problems=[Problem("priority", f"found {priority}; allowed {allowed}")],
            )
        return priority

    def set_priority(self, ref: str, caller: Caller, priority: int) -> dict:
        """Move a waiting run up or down the queue: root and the admin group only."""
        run = self.get_run(ref)
        if not caller.privileged:
            group = self.config.admin_group
            who = f"root or members of the group {group!r}" if group else "root"
            raise Forbidden(
                f"only {who} may change a run's priority; "
                "give yours at submit (dlaasctl train --priority N)",
            )
        if run["status"] != QUEUED:
            raise Conflict(
                f"{run['id']} is {run['status']}: only a waiting run has a priority to change"
            )
        self.db.update(run["id"], priority=priority)
        log.info("event=priority run=%s priority=%d by=%s", run["id"], priority, caller.uid)
        self._wake.set()
        return self.db.get(run["id"])

    async def check(
        self, m: manifest.Manifest, model_zip: Path | None, refusal: str = "the run was refused"
    ) -> admission.Admitted:
        """What a run needs before it may queue: a sound model archive, a machine that can
        run it and its training data bucket. An experiment checks its trials once. A
        refusal also carries the manifest's notes, so that one attempt says everything."""
        try:
            return await self._check(m, model_zip, refusal)
        except DlaasError as exc:
            exc.warnings = [*m.notes, *exc.warnings]
            raise

    async def _check(
        self, m: manifest.Manifest, model_zip: Path | None, refusal: str
    ) -> admission.Admitted:
        if model_zip is not None:
            try:
                await asyncio.to_thread(archive.check, model_zip)
            except archive.ArchiveError as exc:
                raise Invalid(
                    "the model archive has problems; nothing was queued",
                    exc.code,
                    [Problem("model", p) for p in exc.problems],
                ) from None
        try:
            gpus = None if self.executor.places_runs else [g.name for g in self.gpus.list()]
            admitted = admission.admit(m, self.config, gpus)
        except admission.AdmissionError as exc:
            what = (
                "it asks for more than this machine has"
                if exc.code == Code.IMPOSSIBLE_REQUEST
                else "it cannot run here"
            )
            raise refused(exc, f"{refusal}: {what}; nothing was queued") from None
        self._check_notify(m, refusal)
        admitted.warnings += await self._check_image(m, admitted.image, refusal)
        admitted.warnings += await self._check_data_store(m)
        return admitted

    def _check_notify(self, m: manifest.Manifest, refusal: str) -> None:
        """A manifest's webhooks only where the config allows them (notify.allowed_webhooks)."""
        allowed = self.config.notify.allowed_webhooks
        problems = [
            Problem(
                f"notify.webhooks[{i}]",
                f"{url!r} is not allowed here; allowed: "
                + (", ".join(f"{p}..." for p in allowed) or "none (notify.allowed_webhooks)"),
            )
            for i, url in enumerate(m.notify.webhooks if m.notify else [])
            if not notifications.allowed(url, allowed)
        ]
        if problems:
            raise Invalid(f"{refusal}: a webhook the config does not allow", problems=problems)

    async def _check_image(self, m: manifest.Manifest, image: str, refusal: str) -> list[str]:
        """An image not on this machine: refused now when pulling is off (S103, where
        the run would fail anyway), else said; the pull happens when the run starts."""
        try:
            present = await asyncio.to_thread(self.executor.image_present, image)
        except ExecutorUnavailable as exc:
            return [f"Docker did not answer ({exc}); the image {image} was not checked"]
        if present or present is None:  # None: only the nodes can tell
            return []
        if not self.config.containers.pull_missing_images:
            message = (
                f"image {image!r} is not on this machine and pulling is off "
                "(containers.pull_missing_images)"
            )
            fix = (
                "build or pull it first, or map the framework to an image this machine has "
                "(the config's frameworks table)"
            )
            where = "framework.image" if m.framework.image else "framework.version"
            raise Invalid(
                f"{refusal}: {message}; nothing was queued",
                Code.IMAGE_MISSING,
                [Problem(where, f"{message}; {fix}")],
            )
        return [f"image {image!r} is not on this machine: it is pulled when the run starts"]

    def queue(
        self,
        m: manifest.Manifest,
        manifest_text: bytes,
        admitted: admission.Admitted,
        model_zip: Path | None,
        caller: Caller,
        source: str,
        extra: dict | None = None,
    ) -> dict:
        """Queue a checked run. `model_zip` is moved into its folder."""
        run_id = new_id()
        folder = RunFolder.of(self.config.state_path, run_id)
        try:  # a full disk, say: no folder is left without its row (nor its secrets)
            folder.root.mkdir(parents=True)
            # its secrets apart, readable by dlaasd alone; the text kept for reading without
            self.vault.put(run_id, secret.secrets_of(m, self.config.secret_env))
            text = secret.redact(manifest_text, self.config.secret_env)
            same = text == manifest_text.decode(errors="replace")
            fd = os.open(folder.manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(manifest_text if same else text.encode())  # as submitted, if no secret
            if model_zip is not None:
                shutil.move(model_zip, folder.model_zip)
            filemodes.seal_run(folder.root)
            request = admission.request_of(run_id, m)
            self.db.insert_run(
                {
                    "id": run_id,
                    "name": m.name,
                    "description": m.description,
                    "owner_uid": caller.uid,
                    "owner_name": caller.name,
                    "status": QUEUED,
                    "status_message": "waiting for resources",
                    "gpus": [],
                    "gpu_count": request.gpus,
                    "gpu_type": request.gpu_type,
                    "cpus": request.cpus,
                    "memory": request.memory,
                    "learners": m.learners,
                    "framework": f"{m.framework.name} {m.framework.version}".strip(),
                    "image": admitted.image,
                    "manifest": text,
                    "source": source,
                    "staging": {},
                    "warnings": admitted.warnings,
                    "priority": 0,
                    **(extra or {}),
                }
            )
        except BaseException:
            folder.remove()
            self.vault.remove(run_id)
            raise
        log.info("event=submitted run=%s name=%r owner=%s", run_id, m.name, caller.uid)
        self._wake.set()
        return {"id": run_id, "status": QUEUED, "warnings": admitted.warnings}

    async def _check_data_store(self, m: manifest.Manifest) -> list[str]:
        """Refuse wrong credentials (C103) and a missing data bucket now, where the store
        answers; if it does not, queue anyway and let DOWNLOADING retry."""
        store = m.data_store
        if not store or store.type == "mount_volume" or not store.training_data:
            return []
        objects = self.lifecycle.store_for(m)
        bucket, written = store.training_data.bucket, store.training_data.container
        try:
            exists = await asyncio.to_thread(objects.bucket_exists, bucket)
        except StoreUnavailable as exc:
            return [
                f"the object store at {objects.endpoint.label} did not answer ({exc}); "
                "the run is queued and the download will be retried"
            ]
        except RunError as exc:  # C103: the store refused the credentials
            raise Invalid(
                exc.message, exc.code, [Problem("data_stores[0].connection", exc.message)]
            ) from None
        if not exists:
            where = "" if objects is self.objects else f" at {objects.endpoint.label}"
            named = repr(bucket) + (f" ({written!r} in the manifest)" if bucket != written else "")
            raise Invalid(
                f"the training data bucket {named} does not exist{where}; "
                f"upload the data first: dlaasctl data upload {written} PATH...",
                Code.BAD_MANIFEST,
                [
                    Problem(
                        "data_stores[0].training_data.container",
                        f"bucket {named} does not exist",
                    )
                ],
            )
        return []

    def get_run(self, ref: str) -> dict:
        return self.db.get(resolve(self.db, ref, "runs", "run", "dlaasctl list"))

    async def halt(self, ref: str, caller: Caller, reason: str = "") -> dict:
        """SIGTERM, then SIGKILL after the grace period. `reason` becomes the run's final
        message (an experiment's early stop says why)."""
        run = self.get_run(ref)
        caller.check_may(run, "halt")
        run_id, status = run["id"], run["status"]
        if status in FINAL:
            raise Conflict(f"{run_id} has already ended ({status})")
        if status == STORING:
            raise Conflict(f"{run_id} has finished training and is storing its results")
        reason = reason or f"halted by {caller.name}"
        if status == QUEUED and run_id not in self.tasks:  # not handed to a cluster yet
            message = f"{reason} before it started"
            self.db.transition(run_id, HALTED, message, halt_requested=1, halt_reason=message)
            self.changed(run_id)
            return self.db.get(run_id)
        self.db.update(run_id, halt_requested=1, halt_reason=reason)
        self.lifecycle.request_halt(run_id)
        self.db.note(run_id, f"halting: {reason}")
        return self.db.get(run_id)

    async def delete(self, ref: str, caller: Caller, purge: bool = False) -> dict:
        run = self.get_run(ref)
        caller.check_may(run, "delete")
        if run["status"] not in FINAL:
            raise Conflict(
                f"{run['id']} is {run['status']}; halt it first (dlaasctl halt {run['id']})"
            )
        removed = 0
        if purge and run.get("results"):
            objects, bucket, prefix = self.lifecycle.results_location(
                run["id"], self.lifecycle.manifest_of(run)
            )
            try:
                removed = await asyncio.to_thread(objects.remove_prefix, bucket, prefix)
            except StoreUnavailable as exc:
                raise Unavailable(f"could not remove the results from the store: {exc}") from None
            except RunError as exc:
                if exc.code != Code.DOWNLOAD_FAILED:  # a bucket that is gone holds nothing
                    raise
        await asyncio.to_thread(RunFolder.of(self.config.state_path, run["id"]).remove)
        self.db.delete(run["id"])
        self.vault.remove(run["id"])
        return {"id": run["id"], "deleted": True, "objects_removed": removed}

    # --- describing ---------------------------------------------------------------

    def describe(self, run: dict, full: bool = True) -> dict:
        """The public shape of a run (what `show --json` prints)."""
        out = {
            "id": run["id"],
            "name": run["name"],
            "status": run["status"],
            "error_code": run["error_code"] or None,
            "status_message": run["status_message"] or "",
            "owner": run["owner_name"],
            "owner_uid": run["owner_uid"],
            "gpus": run["gpus"] or [],
            "cpus": run["cpus"],
            "memory": run["memory"],
            "learners": run["learners"],
            "framework": run["framework"],
            "image": run["image"],
            "exit_code": run["exit_code"],
            "submitted": run["submitted"],
            "started": run["started"],
            "completed": run["completed"],
            "results": run["results"],
            "experiment_id": run["experiment_id"],
            "priority": run.get("priority") or 0,
        }
        if full:
            staging = {
                "bytes_downloaded": 0,
                "files_downloaded": 0,
                "cache_hits": 0,
                "download_seconds": 0.0,
                "bytes_uploaded": 0,
                "files_uploaded": 0,
                "upload_seconds": 0.0,
            }
            out["staging"] = {**staging, **(run["staging"] or {})}
            out["description"] = run["description"]
            out["hyperparameters"] = run["hyperparameters"]
            out["manifest"] = run["manifest"]
            out["buckets"] = _buckets_of(run["manifest"])
            out["warnings"] = run["warnings"] or []
            out["history"] = self.db.events(run["id"])
            out["usage"] = self.db.usage(run["id"]) or self.db.usage_now(run["id"]).to_json()
        return out

    async def status(self) -> dict:
        docker_ok, docker_detail = await self.docker_ok()
        store_ok, store_detail = await asyncio.to_thread(self.objects.healthy)
        held = self.held()
        gpus = self.gpus.list()
        store = {
            "mode": "bundled" if self.minio else "external",
            "endpoint": self.objects.endpoint.url,
            "ok": store_ok,
            "detail": store_detail,
        }
        if self.minio:
            store.update(pid=self.minio.pid, restarts=self.minio.restarts)
        state = self.config.state_path
        disk_ok = not self.lifecycle.reserve.disk_full()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "state_dir": str(self.config.state_path),
            "socket": str(self.config.socket_path),
            "drop_dir": str(self.config.drop_path),
            "docker": {"ok": docker_ok, "detail": docker_detail},
            "store": store,
            "disk": {
                "ok": disk_ok,
                "free": diskspace.free_bytes(state),
                "reserve_held": self.lifecycle.reserve.held,
                "detail": "ok" if disk_ok else diskspace.sentence(state, "running"),
            },
            "gpus": {
                "source": self.gpus.source,
                "count": len(gpus),
                "driver": self.gpus.driver,
                "error": self.gpus.error,
            },
            "capacity": {
                "cpus": self.config.capacity.cpus,
                "memory": self.config.capacity.memory,
                "cpus_used": held.cpus,
                "memory_used": held.memory,
                "gpus_used": len(held.gpus),
            },
            "runs": self.db.counts(),
        }

    def gpu_list(self) -> list[dict]:
        holders = self.held().gpus
        out = []
        for g in self.gpus.list():
            d = g.to_json()
            d["run"] = holders.get(g.uuid)
            d["busy"] = bool(d["run"] or g.processes)
            out.append(d)
        return out

    # --- files of a run -----------------------------------------------------------

    def _artifact_places(self, run: dict, kind: str):
        """Where a run's results or definition are: (local files by path, and the store,
        bucket and prefix once uploaded, else None)."""
        folder = RunFolder.of(self.config.state_path, run["id"])
        if kind == "definition":
            local = {p.name: p for p in folder.definition}
            return local, (self.objects, self.config.store.definitions_bucket, f"{run['id']}/")
        local = {rel: p for p, rel in folder.outputs()}
        if run.get("results") and run["status"] in FINAL:
            m = self.lifecycle.manifest_of(run)
            return local, self.lifecycle.results_location(run["id"], m)
        return local, None

    def artifacts(self, run: dict, kind: str) -> tuple[str, list[dict]]:
        """(where, files) of a run's results or definition: from the store once uploaded,
        else from the run's folder."""
        local, stored = self._artifact_places(run, kind)
        if stored:
            objects, bucket, prefix = stored
            try:
                files = [
                    {"path": o["key"][len(prefix) :], "size": o["size"], "source": "store"}
                    for o in objects.list_objects(bucket, prefix)
                    if not o["dir"]
                ]
                if files:
                    return f"s3://{bucket}/{prefix}", files
            except Exception as exc:  # the local copy may still serve
                log.warning("event=artifacts_store_error run=%s error=%r", run["id"], str(exc))
        folder = RunFolder.of(self.config.state_path, run["id"])
        files = []
        for rel, p in local.items():
            with contextlib.suppress(FileNotFoundError):  # gone since the walk (a temp file)
                files.append({"path": rel, "size": p.lstat().st_size, "source": "local"})
        return str(folder.job), files

    def artifact_source(self, run: dict, kind: str, rel: str):
        """('local', path) or ('store', (objects, bucket, key)) for one file: the local
        copy while there is one (the same bytes), else the store."""
        local, stored = self._artifact_places(run, kind)
        if rel in local:
            return "local", local[rel]
        if stored is None or key_problem(rel):  # no object can have that name
            raise NotFound(f"{run['id']} has no {kind} file {rel!r}")
        objects, bucket, prefix = stored
        return "store", (objects, bucket, prefix + rel)


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
