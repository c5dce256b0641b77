"""The Slurm executor: each run is one Slurm job; Slurm's queue decides when it starts.

A run's learners are the tasks of one job (`dlaas-<run id>`, one node per learner,
dlaasd/slurm.py writes its batch script). On each node the node program
(dlaasd/node.py) stages the data in, runs the learner's container and reports to
`<run folder>/node/` (learner-N.json, stored.json), which this executor reads: the run's
folder is on a file system the nodes share, so its logs and metrics are followed as a
local run's are. The job's id is kept there too (`slurm-job`), and squeue finds a job
by its name when a restart came between sbatch and that file: a run is submitted once.

A learner's handle is `<job id>/<learner>/<run id>`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import slurm
from ..codes import DOWNLOADING, PROCESSING, STORING, Code
from ..errors import RunError
from ..node import NodeJob, Report, report_path, store, stored_path
from ..runfolder import RunFolder
from . import Executor, ExecutorUnavailable, Exit, Found, Health, LearnerSpec, Location

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

POLL = 0.5  # seconds between looks at a learner's report
SQUEUE_EVERY = 2.0  # seconds between squeue calls (shared by every wait)
PHASES = (DOWNLOADING, PROCESSING, STORING)


def create(config: Config, daemon_label: str) -> SlurmExecutor:
    return SlurmExecutor(config, daemon_label)


class SlurmUnavailable(ExecutorUnavailable):
    place = "the Slurm controller"


class SlurmExecutor(Executor):
    places_runs = True  # Slurm's queue, priorities and fair share decide
    stages_data = True  # the node program stages in and out on the node

    def __init__(self, config: Config, daemon_label: str) -> None:
        self.config = config
        self.settings = config.slurm
        self.daemon_label = daemon_label
        self.site = slurm.Site(
            self.settings.partition,
            self.settings.account,
            self.settings.qos,
            tuple(self.settings.sbatch_options),
        )
        self._lock = threading.Lock()
        self._queue: tuple[float, dict[str, slurm.SlurmJob]] = (0.0, {})

    # --- where things are ------------------------------------------------------------

    def _folder(self, run_id: str) -> RunFolder:
        return RunFolder.of(self.config.state_path, run_id)

    def _node_dir(self, run_id: str) -> Path:
        return self._folder(run_id).root / "node"

    def _jobs(self, fresh: bool = False) -> dict[str, slurm.SlurmJob]:
        """This dlaasd's jobs squeue knows, by job id; one squeue call serves every wait
        for SQUEUE_EVERY seconds."""
        with self._lock:
            at, jobs = self._queue
            if fresh or time.monotonic() - at > SQUEUE_EVERY:
                try:
                    listed = slurm.jobs()
                except slurm.SlurmError as exc:
                    raise SlurmUnavailable(str(exc)) from exc
                jobs = {j.job_id: j for j in listed if j.comment == self.daemon_label}
                self._queue = (time.monotonic(), jobs)
            return jobs

    def _job_id(self, run_id: str) -> str | None:
        """The run's Slurm job: from its folder, or found by name in squeue."""
        try:
            return (self._node_dir(run_id) / "slurm-job").read_text().strip() or None
        except FileNotFoundError:
            pass
        for job in self._jobs(fresh=True).values():
            if job.run_id == run_id:
                self._remember(run_id, job.job_id)
                return job.job_id
        return None

    def _remember(self, run_id: str, job_id: str) -> None:
        path = self._node_dir(run_id) / "slurm-job"
        tmp = path.with_name("slurm-job.tmp")
        tmp.write_text(job_id + "\n")
        os.replace(tmp, path)

    # --- the contract ------------------------------------------------------------------

    def health(self) -> Health:
        try:
            out = slurm._run(["sinfo", "-h", "-o", "%P %a %D"], timeout=20)
        except slurm.SlurmError as exc:
            return Health(False, f"{exc}; check that slurmctld runs and SLURM_CONF")
        return Health(True, "Slurm: " + "; ".join(out.split("\n")[:3]).strip())

    def image_present(self, image: str, fresh: bool = False) -> bool | None:
        return None  # on the nodes: their node program pulls it or says S103

    def prepare(self, image: str, pull: bool) -> None:
        return None  # the same

    def start(self, specs: Sequence[LearnerSpec]) -> list[str]:
        first = specs[0]
        run_id, learners = first.run_id, first.learners
        existing = self._job_id(run_id)
        if existing:  # submitted before a restart: never a second time
            return [f"{existing}/{n}/{run_id}" for n in range(1, learners + 1)]
        folder = self._folder(run_id)
        node_dir = self._node_dir(run_id)
        node_dir.mkdir(mode=0o700, exist_ok=True)
        for stale in [*node_dir.glob("learner-*.json"), node_dir / "stored.json"]:
            stale.unlink(missing_ok=True)
        staging = first.staging
        if staging is None:
            raise RunError(Code.INTERNAL, "dlaasd gave the Slurm executor no staging (a bug)")
        job = NodeJob(
            run_id=run_id,
            run_folder=str(folder.root),
            report_dir=str(node_dir),
            node_dir=self.settings.node_dir,
            specs=list(specs),
            data=self._for_nodes(staging.data),
            results=self._for_nodes(staging.results),  # type: ignore[arg-type]
            hyperparameters=staging.hyperparameters,
            owner=list(staging.owner) if staging.owner else None,
            daemon_label=self.daemon_label,
            halt_grace=self.config.containers.halt_grace,
            pull_images=self.config.containers.pull_missing_images,
            cache_max=self.config.cache.max_size,
            workers=self.config.store.transfer_workers,
            network="host" if learners > 1 else "",
            torchrun_port=_port(run_id),
        )
        job_file = node_dir / "job.json"
        job.write(job_file)
        request = slurm.Request(
            run_id=run_id,
            learners=learners,
            gpus=int(first.env.get("GPU_COUNT", "0") or 0),
            cpus=first.cpus,
            memory=first.memory,
            time_limit=first.timeout + self.settings.time_margin if first.timeout else None,
            job_file=str(job_file),
            output=str(node_dir / "slurm.out"),
            python=self.settings.python or sys.executable,
            comment=self.daemon_label,
        )
        try:
            job_id = slurm.submit(slurm.batch_script(request, self.site))
        except slurm.SlurmError as exc:
            raise _refused(exc) from exc
        self._remember(run_id, job_id)
        log.info("event=slurm_submit run=%s job=%s", run_id, job_id)
        return [f"{job_id}/{n}/{run_id}" for n in range(1, learners + 1)]

    def _for_nodes(self, location: Location | None) -> Location | None:
        """The configured store as the nodes reach it (slurm.store_endpoint)."""
        if location is None or not self.settings.store_endpoint:
            return location
        if location.endpoint.url != _url(self.config):
            return location  # a manifest's own store: the nodes reach it as it says
        ep = replace(location.endpoint, url=self.settings.store_endpoint.rstrip("/"))
        return replace(location, endpoint=ep)

    def find(self, run_id: str) -> dict[int, Found]:
        job_id = self._job_id(run_id)
        if not job_id:
            return {}
        try:
            job = NodeJob.from_json((self._node_dir(run_id) / "job.json").read_text())
        except FileNotFoundError:
            return {}  # removed: the run ended
        return {n: Found(f"{job_id}/{n}/{run_id}") for n in range(1, len(job.specs) + 1)}

    def usage(self, handle: str) -> dict[str, int]:
        """Nothing known: the learner's cgroup is on its node, which dlaasd cannot read
        (Slurm's own accounting, sacct, has the job's figures)."""
        return {}

    def leftovers(self) -> list[tuple[str, str]]:
        """Jobs of this dlaasd that squeue still knows and that have not ended."""
        return [
            (j.run_id, f"{j.job_id}/1/{j.run_id}")
            for j in self._jobs(fresh=True).values()
            if not j.ended
        ]

    def wait(self, handle: str, timeout: float | None) -> Exit | None:
        job_id, learner, run_id = _parse(handle)
        node_dir = self._node_dir(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            report = Report.read(report_path(node_dir, learner))
            job = self._jobs().get(job_id)
            if job is None:  # submitted since the last squeue, or really gone
                job = self._jobs(fresh=True).get(job_id)
            gone = job is None or job.ended
            if report and (report.exit or report.error):
                if learner == 1 and not self._stored(run_id, job_id, gone):
                    time.sleep(POLL)
                    continue
                if (report.exit or {}).get("code", 1) != 0:  # why: Slurm's end says
                    job = self._ended(job_id) or job
                return _exit(report, job)
            if gone:
                # the node writes its report before the job ends: none now means never
                report = Report.read(report_path(node_dir, learner))
                if report and (report.exit or report.error):
                    continue
                if learner == 1:
                    self._stored(run_id, job_id, True)
                return _slurm_exit(job, job_id, report, node_dir)
            time.sleep(POLL)
        return None

    def _ended(self, job_id: str, within: float = 60) -> slurm.SlurmJob | None:
        """The job as Slurm has it now, and once ended if it is ending (a learner stopped
        by the time limit may report while the job is COMPLETING, before its state says
        TIMEOUT); a job still RUNNING is returned at once (its learner failed by itself,
        and the others are stopped on that). None if it is gone from squeue."""
        deadline = time.monotonic() + within
        job = self._jobs(fresh=True).get(job_id)
        while job is not None and job.state == "COMPLETING" and time.monotonic() < deadline:
            time.sleep(POLL)
            job = self._jobs(fresh=True).get(job_id)
        return job

    def _stored(self, run_id: str, job_id: str, gone: bool) -> bool:
        """Whether the run's outputs are in the results bucket: stored by the job, or,
        once it ended without (its time was up while storing), by dlaasd from the shared
        folder, with the node's own code."""
        node_dir = self._node_dir(run_id)
        if stored_path(node_dir).exists():
            return True
        if not gone:
            return False
        try:
            job = NodeJob.from_json((node_dir / "job.json").read_text())
        except FileNotFoundError:
            return True
        log.info("event=slurm_store_after run=%s job=%s", run_id, job_id)
        if not store(job)["stored"]:  # the store is down: the outputs stay in the folder
            log.warning("event=slurm_store_failed run=%s job=%s", run_id, job_id)
        return True

    def stop(self, handle: str, grace: float) -> None:
        """SIGTERM to every learner (scancel --signal=TERM, which reaches the node
        programs); they stop their containers within `grace` and the job stores their
        outputs. A job still waiting in the queue is cancelled; one whose learners have
        not stopped after `grace` (and a margin) is cancelled for good."""
        job_id, learners, run_id = _parse(handle)
        job = self._jobs(fresh=True).get(job_id)
        if job is None or job.ended:
            return
        try:
            if job.waiting:
                slurm.cancel(job_id)
                return
            slurm.signal_job(job_id, "TERM")
        except slurm.SlurmError as exc:
            raise SlurmUnavailable(str(exc)) from exc
        node_dir = self._node_dir(run_id)
        deadline = time.monotonic() + grace + 30
        while time.monotonic() < deadline:
            job = self._jobs(fresh=True).get(job_id)
            if job is None or job.ended or self._all_ended(node_dir):
                return
            time.sleep(POLL)
        with contextlib.suppress(slurm.SlurmError):
            slurm.cancel(job_id)

    def _all_ended(self, node_dir: Path) -> bool:
        try:
            n = len(NodeJob.from_json((node_dir / "job.json").read_text()).specs)
        except FileNotFoundError:
            return True
        reports = [Report.read(report_path(node_dir, i)) for i in range(1, n + 1)]
        return all(r and (r.exit or r.error) for r in reports)

    def remove(self, handle: str) -> None:
        """The job ended: its node job (which holds credentials) goes; the Epilog removed
        its containers. One still running that has not stored its outputs (a leftover of
        a run deleted meanwhile) is cancelled; one that has stored them ends by itself."""
        job_id, _, run_id = _parse(handle)
        job = self._jobs(fresh=True).get(job_id)
        stored = stored_path(self._node_dir(run_id)).exists()
        if job is not None and not job.ended and not stored:
            with contextlib.suppress(slurm.SlurmError):
                slurm.cancel(job_id)
        (self._node_dir(run_id) / "job.json").unlink(missing_ok=True)

    def phase(self, run_id: str) -> str | None:
        """The earliest phase among the learners' reports (all must be training for the
        run to be)."""
        node_dir = self._node_dir(run_id)
        try:
            n = len(NodeJob.from_json((node_dir / "job.json").read_text()).specs)
        except (FileNotFoundError, ValueError):
            return None
        reports = [Report.read(report_path(node_dir, i)) for i in range(1, n + 1)]
        if not all(reports):
            return DOWNLOADING if any(reports) else None
        return min((r.phase for r in reports if r), key=PHASES.index)

    def waiting_reason(self, run_id: str) -> str | None:
        """Why Slurm holds the run's job, in a sentence; None when it does not."""
        job_id = self._job_id(run_id)
        job = self._jobs().get(job_id or "")
        return slurm.describe_wait(job) if job and job.waiting else None


def _parse(handle: str) -> tuple[str, int, str]:
    job_id, learner, run_id = handle.split("/", 2)
    return job_id, int(learner), run_id


def _port(run_id: str) -> int:
    """Learner 1's port for the torchrun rendezvous: fixed by the run, so every node
    agrees without asking, and runs on the same nodes rarely meet."""
    return 20000 + int(hashlib.sha256(run_id.encode()).hexdigest(), 16) % 20000


def _url(config: Config) -> str:
    return config.store.endpoint.rstrip("/")


def _exit(report: Report, job: slurm.SlurmJob | None) -> Exit:
    """A learner's end as its node reported it, with what Slurm adds: the job's time
    limit (its SIGTERM ended the container) or a node failure."""
    state = job.state if job else ""
    timed_out = state in ("TIMEOUT", "DEADLINE")
    if report.error and report.error.get("code"):
        return Exit(-1, error=report.error["message"], error_code=report.error["code"])
    if report.exit is None:  # halted while it staged: no container ever ran
        return Exit(143, error=(report.error or {}).get("message", ""), timed_out=timed_out)
    e = report.exit
    return Exit(
        e["code"],
        e["oom_killed"],
        e.get("error", ""),
        started=e.get("started", True),
        timed_out=timed_out,
    )


def _slurm_exit(
    job: slurm.SlurmJob | None, job_id: str, report: Report | None, node_dir: Path
) -> Exit:
    """A learner that never reported its end: what Slurm says of the job."""
    state = job.state if job else "gone from squeue"
    if state in ("TIMEOUT", "DEADLINE"):
        return Exit(-1, timed_out=True, started=report is not None)
    if state in slurm.FAILURES:
        code, why = slurm.FAILURES[state]
        return Exit(-1, error=f"Slurm job {job_id}: {why}", error_code=code)
    tail = _tail(node_dir / "slurm.out")
    return Exit(
        -1,
        error=(
            f"Slurm job {job_id} ended ({state}) before its node reported this learner"
            + (f": {tail}" if tail else "")
            + "; check that the nodes have dlaasd's Python (slurm.python) and Docker"
        ),
        error_code=Code.CONTAINER_NOT_STARTED,
    )


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def _refused(exc: slurm.SlurmError) -> Exception:
    text = str(exc)
    if "not available" in text or "Invalid" in text or "exceed" in text.lower():
        return RunError(
            Code.IMPOSSIBLE_REQUEST,
            f"Slurm refused the job: {text}; ask for what a node of the partition has",
        )
    if "Unable to contact" in text or "did not answer" in text or "not installed" in text:
        return SlurmUnavailable(text)
    return RunError(Code.CONTAINER_NOT_STARTED, f"sbatch failed: {text}")
