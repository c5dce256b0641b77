"""The node side of a run on a cluster: stage in, train in the framework container, store.

dlaasd writes a run's node job (`NodeJob`, JSON, mode 0600) beside its run folder; a
cluster job then runs on each of its nodes:

    python -m dlaasd.node prepare JOB.json
        The run's job folder, once, before its learners start: the model code unpacked,
        the helpers, an experiment trial's config.json (the daemon's own stage-in code),
        handed to the container's user.

    python -m dlaasd.node train JOB.json [--learner N]
        Stage the run's training data in from the object store into a folder on this
        node (through a data cache there), start the framework container of learner N
        (default: Slurm's SLURM_PROCID + 1) with the GPUs the cluster gave this node, wait
        for it, and report its exit. SIGTERM (a halt, a time limit) stops the container
        with the run's grace period; its exit is still reported.

    python -m dlaasd.node store JOB.json
        Upload the run's results, checkpoints and logs to the results bucket (once, after
        every learner ended), and report it.

    python -m dlaasd.node stage-in JOB.json DEST [--message-to FILE]
        For an executor whose runtime starts the container (a Kubernetes pod's init
        step): the job folder made where the node job says (the model code fetched from
        the store and unpacked, the helpers, an experiment trial's config.json) when the
        job names its model, then the training data staged into DEST. A failure is
        written to FILE as "CODE: sentence" (the pod's termination message).

    python -m dlaasd.node store JOB.json [--after EXIT_FILE --done DONE_FILE]
        With --after (a pod's store sidecar): wait until the training wrote EXIT_FILE
        (or a SIGTERM came), upload, create DONE_FILE, then stay until SIGTERM (a
        sidecar that exits is started again).

Every step reports to the job's report folder, one JSON file per learner
(`learner-N.json`: phase, exit, error) and `stored.json`, written whole (a rename), which
dlaasd reads. The exit status is 0 when the report says how it went (even a failed
training), non-zero only when nothing could be reported.

The staging and the container are the daemon's own code (objectstore, the local executor): the same
cache, the same container spec, environment and isolation as a run on the local executor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import archive
from .codes import DOWNLOADING, PROCESSING, STORING, Code
from .errors import RunError
from .executors import Exit, LearnerSpec, Location, Mount
from .executors.local import LocalExecutor
from .learners import HELPERS, torchrun_env
from .objectstore import DataCache, Endpoint, ObjectStore, StoreUnavailable, Transfer
from .phases.stage_in import prepare_job
from .runfolder import IN_CONTAINER, RunFolder

log = logging.getLogger("dlaasd.node")

# A container started for a Slurm job carries <cluster>/<job id> in this label, so the
# cluster's Epilog can remove it (docker runs it outside the job's processes).
LABEL_SLURM_JOB = "dlaas.slurm-job"


@dataclass
class NodeJob:
    """What a node needs to run its learner of a run (dlaasd writes it, the node reads it)."""

    run_id: str
    run_folder: str  # the run's folder (its job/ is mounted at /job); shared with dlaasd
    report_dir: str  # where the node reports (outside the job folder: not the training's)
    node_dir: str  # a folder on each node: its data cache, the runs' staged data
    specs: list[LearnerSpec]  # one per learner, as the local executor would start them
    data: Location | None  # the training data, or None (no data, or a mounted volume)
    results: Location
    hyperparameters: dict | None = None  # an experiment trial's (config.json)
    owner: list[int] | None = None  # uid, gid the job folder is given to (dlaasd as root)
    daemon_label: str = ""  # dlaasd's state folder, on the containers it owns
    halt_grace: float = 10.0
    pull_images: bool = False
    cache_max: int = 100 * 1024**3
    workers: int = 8
    network: str = ""  # "host" for learners > 1 (they reach each other across nodes)
    torchrun_port: int = 29500
    # the model archive in the store, for nodes that do not share the run folder (a pod)
    model: Location | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> NodeJob:
        raw = json.loads(text)
        raw["specs"] = [_spec(s) for s in raw["specs"]]
        for key in ("data", "results", "model"):
            if raw.get(key):
                raw[key] = Location(**{**raw[key], "endpoint": Endpoint(**raw[key]["endpoint"])})
        return cls(**raw)

    @property
    def folder(self) -> RunFolder:
        return RunFolder(Path(self.run_folder))

    def write(self, path: Path) -> None:
        """Whole or not at all, readable by its owner alone (it holds credentials)."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)


def _spec(raw: dict) -> LearnerSpec:
    return LearnerSpec(
        **{
            **raw,
            "mounts": tuple(Mount(**m) for m in raw["mounts"]),
            "gpus": tuple(raw["gpus"]),
            "cap_add": tuple(raw["cap_add"]),
            "staging": None,  # the job's own data and results say it
        }
    )


# --- reports ------------------------------------------------------------------------


@dataclass
class Report:
    """A learner's progress, as dlaasd reads it."""

    learner: int
    phase: str  # DOWNLOADING, PROCESSING, STORING (its container ended)
    node: str = ""
    gpus: list[str] = field(default_factory=list)
    exit: dict | None = None  # Exit's fields once the container ended
    error: dict | None = None  # {"code", "message"}: it failed before or around training
    staging: dict = field(default_factory=dict)  # the stage-in's statistics

    @classmethod
    def read(cls, path: Path) -> Report | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None  # not written yet


def report_path(report_dir: Path, learner: int) -> Path:
    return report_dir / f"learner-{learner}.json"


def stored_path(report_dir: Path) -> Path:
    return report_dir / "stored.json"


def write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


# --- what a node adds to the container spec ------------------------------------------------


def slurm_gpus(env: dict[str, str]) -> list[str]:
    """The GPU indices Slurm gave this job on this node (none for a CPU job)."""
    raw = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") or ""
    return [g for g in raw.split(",") if g.strip()]


def gpu_uuids(indices: list[str]) -> list[str] | None:
    """The UUIDs of these GPU indices through NVML; None where NVML is not available (the
    indices are all there is)."""
    if not indices:
        return []
    from .gpus import GpuInventory

    inventory = GpuInventory()
    if not inventory.nvml:
        return None
    by_index = {str(g.index): g.uuid for g in inventory.list()}
    return [by_index[i] for i in indices if i in by_index]


def node_spec(
    job: NodeJob,
    learner: int,
    data_dir: Path | None,
    gpus: list[str],
    visible: list[str],
    master: str,
    labels: dict[str, str],
) -> LearnerSpec:
    """The daemon's spec for this learner, on this node: the data staged here, the GPUs
    the cluster gave (`gpus` for the runtime, `visible` for CUDA_VISIBLE_DEVICES), the
    torchrun variables and the cluster's label."""
    spec = job.specs[learner - 1]
    mounts = tuple(
        replace(m, source=str(data_dir)) if m.target == IN_CONTAINER["DATA_DIR"] and data_dir else m
        for m in spec.mounts
    )
    env = {
        **spec.env,
        "CUDA_VISIBLE_DEVICES": ",".join(visible),
        **torchrun_env(learner, len(job.specs), master, job.torchrun_port),
    }
    return replace(
        spec,
        mounts=mounts,
        env=env,
        gpus=tuple(gpus),
        labels={**spec.labels, **labels},
        network_mode=job.network or spec.network_mode,
    )


# --- the steps ------------------------------------------------------------------------


def stage_in(job: NodeJob, dest: Path, stop=lambda: False) -> Transfer:
    """The run's training data into `dest`, through this node's data cache."""
    stats = Transfer()
    if job.data is None:
        dest.mkdir(parents=True, exist_ok=True)
        return stats
    cache = DataCache(Path(job.node_dir) / "cache", job.cache_max)
    store = ObjectStore(job.data.endpoint, job.workers)
    try:
        store.stage_in(job.data.bucket, job.data.prefix, dest, cache, stats, stop=stop)
    except StoreUnavailable as exc:
        raise RunError(
            Code.DOWNLOAD_FAILED, f"downloading the training data on this node failed: {exc}"
        ) from exc
    dest.mkdir(parents=True, exist_ok=True)  # an empty prefix still makes a DATA_DIR
    with contextlib.suppress(OSError):
        cache.evict()
    return stats


def train(job: NodeJob, learner: int, env: dict[str, str]) -> Report:
    """Stage in, run learner `learner`'s container, wait for it: its report."""
    reports = Path(job.report_dir)
    indices = slurm_gpus(env)
    uuids = gpu_uuids(indices)
    node = env.get("SLURMD_NODENAME") or socket.gethostname()
    report = Report(learner, DOWNLOADING, node=node, gpus=uuids or indices)
    save = lambda: write_json(report_path(reports, learner), asdict(report))  # noqa: E731
    save()
    stopping = threading.Event()
    container: list[str] = []  # the container once started: what a SIGTERM stops
    runner = LocalExecutor(daemon_label=job.daemon_label)

    def on_term(signum, frame) -> None:
        stopping.set()
        if container:
            threading.Thread(target=runner.stop, args=(container[0], job.halt_grace)).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    scratch = Path(job.node_dir) / "runs" / f"{job.run_id}-{learner}"
    try:
        stats = stage_in(job, scratch / "data", stop=stopping.is_set) if job.data else None
        if stats:
            report.staging = {
                "bytes_downloaded": stats.bytes,
                "files_downloaded": stats.files,
                "cache_hits": stats.cache_hits,
                "download_seconds": round(stats.seconds, 3),
            }
        if stopping.is_set():
            report.phase, report.error = STORING, {"code": "", "message": "halted while staging"}
            save()
            return report
        labels = {}
        if env.get("SLURM_JOB_ID"):
            labels[LABEL_SLURM_JOB] = f"{env.get('SLURM_CLUSTER_NAME', '')}/{env['SLURM_JOB_ID']}"
        spec = node_spec(
            job,
            learner,
            scratch / "data" if job.data else None,
            uuids or [],
            uuids if uuids is not None else indices,
            env.get("DLAAS_MASTER_ADDR", "127.0.0.1"),
            labels,
        )
        runner.prepare(spec.image, job.pull_images)
        report.phase = PROCESSING
        save()
        container.extend(runner.start([spec]))
        if stopping.is_set():  # the signal came while the container was being made
            runner.stop(container[0], job.halt_grace)
        ended = None
        while ended is None:
            ended = runner.wait(container[0], None)
        report.exit = asdict(ended)
    except RunError as exc:
        report.error = {"code": exc.code, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - whatever it was, dlaasd must hear of it
        log.exception("event=node_error run=%s learner=%d", job.run_id, learner)
        report.error = {
            "code": Code.CONTAINER_NOT_STARTED,
            "message": f"the node could not run learner {learner}: {exc}",
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if container:
            with contextlib.suppress(Exception):
                runner.remove(container[0])
    report.phase = STORING
    save()
    return report


def store(job: NodeJob) -> dict:
    """Upload the run's outputs to the results bucket; report it in stored.json."""
    folder = job.folder
    outputs = [(p, f"{job.run_id}/{rel}") for p, rel in folder.outputs()]
    stats = Transfer()
    result: dict = {"stored": False}
    try:
        objects = ObjectStore(job.results.endpoint, job.workers)
        objects.stage_out(outputs, job.results.bucket, stats, True, opener=folder.open)
        result = {
            "stored": True,
            "bytes_uploaded": stats.bytes,
            "files_uploaded": stats.files,
            "upload_seconds": round(stats.seconds, 3),
        }
    except (RunError, StoreUnavailable) as exc:  # dlaasd uploads them itself, later
        result["error"] = str(exc)
    write_json(stored_path(Path(job.report_dir)), result)
    return result


# --- a pod's steps (the kubernetes executor): no folder shared with dlaasd ---------------


def prepare_pod(job: NodeJob) -> None:
    """The job folder where no dlaasd made it: the model archive fetched from the store
    and unpacked, the helpers, an experiment trial's config.json. The folder is the pod's
    own (an empty volume): nothing in it was put there by anyone else."""
    folder = job.folder
    for d in (folder.model_code, folder.results, folder.checkpoints, folder.logs):
        d.mkdir(parents=True, exist_ok=True)
    helpers = folder.job / ".dlaas"
    helpers.mkdir(exist_ok=True)
    for module in HELPERS.glob("*.py"):
        shutil.copyfile(module, helpers / module.name)
    if job.model:
        archive_path = Path(job.node_dir) / "model.zip"
        archive_path.parent.mkdir(parents=True, exist_ok=True)
        fetch(job.model, archive_path)
        try:
            archive.unpack(archive_path, folder.model_code)
        except archive.ArchiveError as exc:
            raise RunError(Code.BAD_MODEL, "; ".join(exc.problems)) from None
        finally:
            archive_path.unlink(missing_ok=True)
    if job.hyperparameters:  # an experiment's trial: Watson ML's config.json in MODEL_DIR
        (folder.model_code / "config.json").write_text(json.dumps(job.hyperparameters, indent=2))


def fetch(location: Location, dest: Path) -> None:
    """One object (`location.prefix` is its key) into the file `dest`."""
    store = ObjectStore(location.endpoint, 1)
    try:
        response = store.get(location.bucket, location.prefix)
        try:
            with open(dest, "wb") as f:
                for chunk in response.stream(1024 * 1024):
                    f.write(chunk)
        finally:
            response.close()
            response.release_conn()
    except StoreUnavailable as exc:
        raise RunError(
            Code.DOWNLOAD_FAILED, f"fetching the model code on this node failed: {exc}"
        ) from exc


def await_file(path: Path, stop: threading.Event, every: float = 0.5) -> bool:
    """Wait until `path` exists (True) or `stop` is set (False)."""
    while not path.exists():
        if stop.wait(every):
            return path.exists()
    return True


def store_beside(job: NodeJob, after: Path, done: Path, stop: threading.Event) -> dict:
    """A pod's store sidecar: once the training ended (it wrote `after`) or the pod is
    being stopped, upload the outputs and say so in `done`. Stored once: a sidecar
    started again finds `done` there."""
    if done.exists():
        return {"stored": True}
    await_file(after, stop)
    Path(job.report_dir).mkdir(parents=True, exist_ok=True)
    result = store(job)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result))
    return result


def termination_message(code: str, message: str, limit: int = 4000) -> str:
    """What a failed step writes as its pod's termination message (Kubernetes keeps 4 KiB):
    "CODE: sentence", which dlaasd reads back (k8s_cluster)."""
    text = f"{code}: {message}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exit_of(report: Report) -> Exit | None:
    return Exit(**report.exit) if report.exit else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlaasd.node", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="unpack the model code into the job folder, once")
    p.add_argument("job", type=Path)
    t = sub.add_parser("train", help="stage in, run this node's learner, report its exit")
    t.add_argument("job", type=Path)
    t.add_argument("--learner", type=int, help="default: SLURM_PROCID + 1")
    s = sub.add_parser("store", help="upload the run's results and logs")
    s.add_argument("job", type=Path)
    s.add_argument("--after", type=Path, help="wait for this file (the training's exit) first")
    s.add_argument("--done", type=Path, help="create this file once stored, then stay")
    i = sub.add_parser("stage-in", help="prepare the job folder if the job says how; stage in")
    i.add_argument("job", type=Path)
    i.add_argument("dest", type=Path)
    i.add_argument("--message-to", type=Path, help='write a failure here, as "CODE: sentence"')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stderr)
    try:
        job = NodeJob.from_json(args.job.read_text())
    except (OSError, ValueError, TypeError) as exc:
        print(f"dlaasd.node: cannot read the node job {args.job}: {exc}", file=sys.stderr)
        return 2
    if args.step == "train":
        learner = args.learner or int(os.environ.get("SLURM_PROCID", "0")) + 1
        if not 1 <= learner <= len(job.specs):
            print(
                f"dlaasd.node: learner {learner} is not one of 1..{len(job.specs)}", file=sys.stderr
            )
            return 2
        train(job, learner, dict(os.environ))
    elif args.step == "prepare":
        try:
            owner = (job.owner[0], job.owner[1]) if job.owner else None
            prepare_job(job.folder, job.hyperparameters, owner)
        except RunError as exc:  # a bad model archive: every learner reports it
            for learner in range(1, len(job.specs) + 1):
                error = {"code": exc.code, "message": exc.message}
                write_json(
                    report_path(Path(job.report_dir), learner),
                    asdict(Report(learner, STORING, error=error)),
                )
            print(f"dlaasd.node: {exc}", file=sys.stderr)
            return 1
    elif args.step == "store":
        if args.after is None or args.done is None:
            store(job)
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
        store_beside(job, args.after, args.done, stop)
        stop.wait()  # a sidecar that exits is started again: stay until the pod ends
    else:
        try:
            if job.model or job.hyperparameters:
                prepare_pod(job)
            stage_in(job, args.dest)
        except RunError as exc:
            print(f"dlaasd.node: {exc}", file=sys.stderr)
            if args.message_to:
                with contextlib.suppress(OSError):
                    args.message_to.write_text(termination_message(exc.code, exc.message))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
