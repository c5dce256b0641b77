"""The phases of a run, and what they share.

    stage_in.py   DOWNLOADING  unpack the model code, stage the training data in
    train.py      PROCESSING   start the learners (or find them again), wait, decide
    stage_out.py  STORING      upload results, logs and the definition; the final status

`Context` is what they share: the database, the executor, the object stores, the halts
asked for and whether the daemon is stopping. The driver (lifecycle.py) walks a run
through them from wherever it stands.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import diskspace, manifest
from ..codes import HOLDING_RESOURCES, STORING, Code
from ..config import Config
from ..database import Database
from ..errors import RunError
from ..executors import Executor, ExecutorUnavailable
from ..manifest import Manifest
from ..objectstore import DataCache, Endpoint, ObjectStore, StoreUnavailable, Transfer
from ..records import Run, StagingFigures
from ..runfolder import RunFolder
from ..secret import Vault
from ..units import format_duration

log = logging.getLogger(__name__)

T = TypeVar("T")


class Notify(Protocol):
    """Told that a run changed: its followers wake, and (`frees`: it may have freed
    resources) the scheduler."""

    def __call__(self, run_id: str, frees: bool = True) -> None: ...


class Context:
    def __init__(
        self,
        config: Config,
        db: Database,
        executor: Executor,
        objects: ObjectStore,
        cache: DataCache,
        notify: Notify,
    ):
        self.config = config
        self.db = db
        self.executor = executor
        self.objects = objects  # the configured store (bundled MinIO or external)
        self.cache = cache
        self.notify = notify
        # run in a thread once a run's outputs are stored (the drop folder's mirror): they
        # get the run as it stands, and must not use the database themselves
        self.after_store: list[Callable[[Run, RunFolder], None]] = []
        self.on_metrics: list[Callable[[str], None]] = []  # told when a run reports points
        # the definition is uploaded while the training runs; STORING only waits for it
        self.definitions: dict[str, asyncio.Task[bool]] = {}
        self.handles: dict[str, list[str]] = {}  # run id -> its learners, until removed
        self.reserve = diskspace.Reserve(config.state_path)
        # the manifests' secrets, apart from the redacted text kept for reading
        self.vault = Vault(config.state_path / "secrets")
        self._stores: dict[Endpoint, ObjectStore] = {}
        # runs to halt; read by transfer threads too, which must not touch SQLite
        self._halting: set[str] = set()
        self._halt_signals: dict[str, asyncio.Event] = {}  # wake a run's wait on a halt
        self._stopping = False  # the daemon shuts down: transfers in threads give up soon
        # runs to hand to a cluster's scheduler, in submit order: its queue keeps the order
        # it gets them in, and their hand-overs run in threads that could overtake
        self._handover_line: list[str] = []

    # --- halts and shutdown ---------------------------------------------------------

    def request_halt(self, run_id: str) -> None:
        """Halt a run wherever it stands: a download stops between files, a training gets
        SIGTERM (now, or as soon as its learners exist)."""
        self._halting.add(run_id)
        if run_id in self._halt_signals:
            self._halt_signals[run_id].set()

    def halted(self, run_id: str) -> bool:
        return run_id in self._halting

    def halt_signal(self, run_id: str) -> asyncio.Event:
        """Set when the run is to halt (already, if it was asked for before)."""
        signal = self._halt_signals[run_id] = asyncio.Event()
        if self.halted(run_id):
            signal.set()
        return signal

    def drop_halt_signal(self, run_id: str) -> None:
        self._halt_signals.pop(run_id, None)

    def forget(self, run_id: str) -> None:
        """The run's driving ended (or stopped): its halt, if any, is done with."""
        self._halting.discard(run_id)

    # --- handing runs over to a cluster in submit order ------------------------------

    def line_up(self, run_id: str) -> None:
        """Take the run's place in the hand-over line (called in submit order)."""
        if run_id not in self._handover_line:
            self._handover_line.append(run_id)

    async def handover_turn(self, run_id: str) -> None:
        """Wait until every run lined up before this one was handed over (or gave up its
        place); a halt ends the wait at once."""
        while (
            run_id in self._handover_line
            and self._handover_line[0] != run_id
            and not self.halted(run_id)
        ):
            await asyncio.sleep(0.05)

    def handed_over(self, run_id: str) -> None:
        """The run left the line (handed over, found handed over already, or ended)."""
        if run_id in self._handover_line:
            self._handover_line.remove(run_id)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def shutdown(self) -> None:
        """The daemon stops: transfers in threads give up soon; runs resume at next start."""
        self._stopping = True

    # --- a run's places ---------------------------------------------------------------

    def manifest_of(self, run: Run) -> Manifest:
        """The run's manifest as submitted: the kept text, with its secrets put back."""
        return self.vault.get(run.id).apply(manifest.parse(run.manifest))

    def folder(self, run_id: str) -> RunFolder:
        return RunFolder.of(self.config.state_path, run_id)

    def data_tree(self, run_id: str) -> Path | None:
        """The data cache's tree the run's stage-in chose, held for it (after a restart
        too); None if it staged no data."""
        name = self.folder(run_id).data_tree_name()
        if name is None:
            return None
        if not self.cache.hold(run_id, name):
            raise RunError(
                Code.DOWNLOAD_FAILED,
                f"the run's staged data ({self.cache.tree(name)}) is gone from the data cache",
            )
        return self.cache.tree(name)

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

    def container_user(self, owner_uid: int) -> tuple[int, int]:
        """The daemon's own user in user mode; the submitter, or the configured user for
        root's runs, in system mode. Never root."""
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        uid = owner_uid or 0
        if uid:
            try:
                return uid, pwd.getpwuid(uid).pw_gid
            except KeyError:
                return uid, uid
        u, g = self.config.containers.user.split(":")
        return int(u), int(g)

    # --- recording --------------------------------------------------------------------

    def to(self, run_id: str, status: str, message: str = "", **fields: Any) -> Run:
        ended = self.db.transition(run_id, status, message, **fields)
        log.info("event=status run=%s status=%s message=%r", run_id, status, message)
        if status not in HOLDING_RESOURCES:  # its learners ended: their data may go
            self.cache.release(run_id)
        # a scheduling pass only when the run gives its resources back: at STORING (a final
        # status comes after it, or ends the run's task, whose end wakes the scheduler)
        self.notify(run_id, status == STORING)
        return ended or self.db.get(run_id)

    def add_staging(self, run_id: str, **values: int | float) -> None:
        """Record staging figures beside those the run has already."""
        self.db.update(run_id, staging=staging_with(self.db.get(run_id), **values))

    # --- waiting things out ----------------------------------------------------------

    async def call(self, run_id: str, fn: Callable[..., T], *args: Any) -> T:
        """An executor's call in a thread; while its place is unavailable, wait for it."""
        noted = False
        while True:
            try:
                return await asyncio.to_thread(fn, *args)
            except ExecutorUnavailable as exc:
                if not noted:
                    self.db.note(run_id, f"waiting for {exc.place}: {exc}")
                    log.warning("event=executor_unavailable run=%s", run_id)
                    noted = True
                await asyncio.sleep(2)

    async def with_retries(
        self,
        run_id: str,
        fn: Callable[[int], None],
        stats: Transfer,
        verb: str,
        retry_for: float,
        code: Code,
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


def staging_with(run: Run, **values: int | float) -> dict[str, Any]:
    """The run's staging figures with `values` added, as the database keeps them."""
    return StagingFigures(**{**run.staging.to_json(), **values}).to_json()
