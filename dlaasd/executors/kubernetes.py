"""The Kubernetes executor: each run is one suspended Indexed Job queued in Kueue
(dlaasd/k8s_objects.py makes the objects, dlaasd/k8s_cluster.py talks to the API);
Kueue decides when it starts.

The pods do not share the run folder with dlaasd. The run's definition (its model.zip)
goes to the store's definitions bucket before the Job is made; the node job (where the
model, the data and the results are, with the store's keys) goes in the run's Secret.
In each pod the node program (dlaasd/node.py) stages the model and data in as an init
step, and a store sidecar uploads the results and logs once the training ended. dlaasd
follows the Job, its pods and its Workload, and copies each learner's pod log into the
run folder while it runs (what `dlaasctl logs --follow` reads).

A learner's handle is `<run id>/<learner>`; learner N is the Job's completion index N - 1.
Every object carries the label `dlaas.daemon` (a hash of the state folder): a restarted
dlaasd finds its Jobs by it, and a run whose Job exists is never handed over again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .. import k8s_objects
from ..codes import DOWNLOADING, PROCESSING, QUEUED, STORING, Code
from ..errors import RunError
from ..k8s_cluster import Cluster, KubeUnavailable, RunState
from ..node import NodeJob
from ..objectstore import ObjectStore, StoreUnavailable, Transfer
from ..runfolder import RunFolder
from . import Executor, ExecutorUnavailable, Exit, Found, Health, LearnerSpec, Location

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks at a run while waiting for it
REFRESH = 1.0  # seconds one listing of the cluster serves every caller


def create(config: Config, daemon_label: str) -> KubernetesExecutor:
    return KubernetesExecutor(config, daemon_label)


class KubeApiUnavailable(ExecutorUnavailable):
    place = "the Kubernetes API server"


class KubernetesExecutor(Executor):
    places_runs = True  # Kueue's queue, quotas and priorities decide
    stages_data = True  # each pod stages in and out with the node program

    def __init__(self, config: Config, daemon_label: str) -> None:
        self.config = config
        kube = config.kubernetes
        self.settings = k8s_objects.settings(kube, config.containers.halt_grace)
        self.label = k8s_objects.daemon_label(daemon_label)
        self.cluster = Cluster(kube.kubeconfig, kube.namespace, kube.context, self.label)
        self._lock = threading.Lock()
        self._seen: tuple[float, dict[str, RunState]] = (0.0, {})
        self._halting: set[str] = set()  # runs dlaasd stopped (a halt, a learner's failure)
        self._copying: set[str] = set()  # handles whose pod log is being copied

    # --- the cluster, as one listing every REFRESH seconds ------------------------------

    def _call(self, fn, *args) -> Any:
        try:
            return fn(*args)
        except KubeUnavailable as exc:
            raise KubeApiUnavailable(str(exc)) from exc

    def _states(self, fresh: bool = False) -> dict[str, RunState]:
        with self._lock:
            at, states = self._seen
            if fresh or time.monotonic() - at > REFRESH:
                states = self._call(self.cluster.states)
                self._seen = (time.monotonic(), states)
            return states

    def _state(self, run_id: str) -> RunState | None:
        """The run's state; a run not in the last listing is looked for again (made since)."""
        state = self._states().get(run_id)
        return state if state is not None else self._states(fresh=True).get(run_id)

    # --- the contract ---------------------------------------------------------------------

    def health(self) -> Health:
        try:
            self._states(fresh=True)
        except KubeApiUnavailable as exc:
            return Health(False, f"{exc}; check kubernetes.kubeconfig and the cluster")
        return Health(True, f"Kubernetes: namespace {self.settings.namespace}, "
                      f"Kueue LocalQueue {self.settings.local_queue}")  # fmt: skip

    def image_present(self, image: str, fresh: bool = False) -> bool | None:
        return None  # the nodes pull it; a pull that fails ends the run (S103)

    def prepare(self, image: str, pull: bool) -> None:
        return None

    def start(self, specs: Sequence[LearnerSpec]) -> list[str]:
        first = specs[0]
        run_id = first.run_id
        handles = [f"{run_id}/{n}" for n in range(1, first.learners + 1)]
        if self._state(run_id) is not None:  # handed over before a restart: never twice
            return handles
        staging = first.staging
        if staging is None:
            raise RunError(Code.INTERNAL, "dlaasd gave the Kubernetes executor no staging (a bug)")
        shape = k8s_objects.JobShape(
            run_id=run_id,
            image=first.image,
            command=first.command,
            env=first.env,
            learners=first.learners,
            cpus=first.cpus,
            memory=first.memory,
            gpus=int(first.env.get("GPU_COUNT", "0") or 0),
            gpu_type=first.gpu_type,
            timeout=first.timeout,
            user=first.user,
            secret_env=k8s_objects.secret_names(first.env, self.config.secret_env),
        )
        try:
            k8s_objects.node_selector(shape, self.settings)
        except k8s_objects.UnknownGpuType as exc:
            raise RunError(Code.IMPOSSIBLE_REQUEST, str(exc)) from exc
        model = self._upload_definition(run_id, staging.definition)
        ours = staging.definition.endpoint.url if staging.definition else ""
        job = NodeJob(
            run_id=run_id,
            run_folder=k8s_objects.POD_RUN_FOLDER,
            report_dir=k8s_objects.POD_REPORTS,
            node_dir=k8s_objects.POD_NODE_DIR,
            specs=[replace(s, staging=None) for s in specs],
            data=self._for_pods(staging.data, ours),
            results=self._for_pods(staging.results, ours),  # type: ignore[arg-type]
            hyperparameters=staging.hyperparameters,
            daemon_label=self.label,
            halt_grace=self.config.containers.halt_grace,
            cache_max=self.config.cache.max_size,
            workers=self.config.store.transfer_workers,
            model=self._for_pods(model, ours),
        )
        objects = k8s_objects.objects(shape, self.settings, job.to_json(), self.label)
        try:
            self._call(self.cluster.submit, objects)
        except Exception as exc:
            if isinstance(exc, KubeApiUnavailable):
                raise
            # the API server refused an object: a request no node can meet, or a bad value
            raise RunError(
                Code.CONTAINER_NOT_STARTED, f"the Kubernetes API server refused the run: {exc}"
            ) from exc
        self._states(fresh=True)
        log.info("event=k8s_submit run=%s learners=%d", run_id, first.learners)
        return handles

    def _upload_definition(self, run_id: str, where: Location | None) -> Location | None:
        """The run's definition (manifest.yml, model.zip) into the definitions bucket,
        where the pods fetch the model from: its location there."""
        folder = RunFolder.of(self.config.state_path, run_id)
        if where is None or not folder.model_zip.exists():
            return None
        files = [(p, f"{where.prefix}{p.name}") for p in folder.definition]
        try:
            ObjectStore(where.endpoint, 2).stage_out(files, where.bucket, Transfer())
        except StoreUnavailable as exc:
            raise RunError(
                Code.UPLOAD_FAILED,
                f"uploading the model code for the cluster's pods failed: {exc}",
            ) from exc
        return replace(where, prefix=f"{where.prefix}{folder.model_zip.name}")

    def _for_pods(self, location: Location | None, ours: str) -> Location | None:
        """A location on the configured store (whose URL is `ours`, as dlaasd reaches it)
        as the pods reach it: kubernetes.store_endpoint, when set."""
        url = self.config.kubernetes.store_endpoint
        if location is None or not url or location.endpoint.url != ours:
            return location  # a manifest's own store: the pods reach it as it says
        return replace(location, endpoint=replace(location.endpoint, url=url.rstrip("/")))

    def find(self, run_id: str) -> dict[int, Found]:
        state = self._states(fresh=True).get(run_id)
        if state is None:
            return {}
        return {n: Found(f"{run_id}/{n}") for n in range(1, state.learners + 1)}

    def wait(self, handle: str, timeout: float | None) -> Exit | None:
        run_id, learner = _parse(handle)
        self._copy_log(run_id, learner)
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            state = self._state(run_id)
            ended = _exit(state, learner, run_id in self._halting)
            if ended is not None:
                return ended
            time.sleep(POLL)
        return None

    def stop(self, handle: str, grace: float) -> None:
        """Delete the run's Job: its pods get SIGTERM, and SIGKILL after the grace period
        their spec gives (containers.halt_grace); the store sidecar uploads what the
        training wrote meanwhile. A Job Kueue still holds goes at once."""
        run_id, _ = _parse(handle)
        state = self._state(run_id)
        stopped_before = run_id in self._halting
        self._halting.add(run_id)  # its learners still waited on end now (see _exit)
        if state is None or (state.phase == "ENDED" and not stopped_before):
            return
        self._call(self.cluster.halt, run_id)
        log.info("event=k8s_halt run=%s", run_id)

    def remove(self, handle: str) -> None:
        """The run ended: its Secret (the store's keys) and Service go. Its finished Job
        stays, with its pods, for the cluster's admins until ttlSecondsAfterFinished
        (kubernetes.ttl_after_finished); one still running (a leftover of a run deleted
        meanwhile) is deleted."""
        run_id, _ = _parse(handle)
        state = self._states(fresh=True).get(run_id)
        self._call(self.cluster.remove, run_id, state is not None and unfinished(state))
        self._halting.discard(run_id)

    def usage(self, handle: str) -> dict[str, int]:
        """Nothing known here: the pod's cgroup is on its node (the cluster's metrics have
        it)."""
        return {}

    def leftovers(self) -> list[tuple[str, str]]:
        """Every run of this dlaasd whose Job has not ended (or whose Secret is left)."""
        states = self._states(fresh=True)
        return [(run_id, f"{run_id}/1") for run_id, s in states.items() if not s.tidied]

    def phase(self, run_id: str) -> str | None:
        state = self._state(run_id)
        if state is None:
            return None
        if state.phase in (DOWNLOADING, PROCESSING, STORING):
            return state.phase
        # ended: if a learner ran, it went through every phase (maybe between two looks)
        return STORING if state.phase == "ENDED" and state.exits else None

    def waiting_reason(self, run_id: str) -> str | None:
        """Why Kueue holds the run (its Workload's condition), and where it stands among
        this dlaasd's runs Kueue holds."""
        states = self._states()
        state = states.get(run_id)
        if state is None or state.phase != QUEUED:
            return None
        ahead = sum(
            1
            for other, s in states.items()
            if other != run_id
            and s.phase == QUEUED
            and s.created is not None
            and state.created is not None
            and s.created < state.created
        )
        where = f"{ahead} of dlaasd's runs ahead of it" if ahead else "first of dlaasd's runs"
        return f"{state.message} ({where} in LocalQueue {self.settings.local_queue})"

    # --- logs ------------------------------------------------------------------------------

    def _copy_log(self, run_id: str, learner: int) -> None:
        """Copy the learner's pod log into the run folder's training log while it runs
        (once per learner; a restart copies it again from the start)."""
        handle = f"{run_id}/{learner}"
        with self._lock:
            if handle in self._copying:
                return
            self._copying.add(handle)
        threading.Thread(
            target=self._copy, args=(run_id, learner), daemon=True, name=f"k8s-log-{handle}"
        ).start()

    def _copy(self, run_id: str, learner: int) -> None:
        folder = RunFolder.of(self.config.state_path, run_id)
        path = folder.learner_log(learner)
        try:
            while True:
                state = self._state(run_id)
                if state is None or (state.phase == "ENDED" and not state.exits):
                    return  # gone, or ended before it trained: no log to read
                if state.phase in (PROCESSING, STORING) or state.exits:
                    try:
                        self._stream(run_id, learner, folder, path)
                        return
                    except Exception as exc:  # noqa: BLE001 - no log served (yet): later
                        log.debug("event=k8s_log_wait run=%s error=%r", run_id, str(exc))
                        if state.phase == "ENDED":
                            return
                time.sleep(5 * POLL)
        except Exception:
            log.exception("event=k8s_log_failed run=%s learner=%d", run_id, learner)
        finally:
            with self._lock:
                self._copying.discard(f"{run_id}/{learner}")

    def _stream(self, run_id: str, learner: int, folder: RunFolder, path) -> None:
        """The pod's log from its start into `path`, as it grows; the file is written
        over only once the cluster serves the log (a restart copies it whole again)."""
        f = None
        try:
            for line in self.cluster.logs(run_id, learner, follow=True):
                if f is None:
                    f = folder.open(path, write=True)
                f.write(line.encode() if isinstance(line, str) else line)
                f.flush()
        finally:
            if f is not None:
                f.close()


def unfinished(state: RunState) -> bool:
    """Whether a run's Job would go on by itself: still queued or training, or stuck on
    the cluster's failure (a pod whose image cannot be pulled waits for ever). One whose
    learners all ended is about to be marked finished."""
    return not state.finished and state.phase != STORING


def _parse(handle: str) -> tuple[str, int]:
    run_id, learner = handle.rsplit("/", 1)
    return run_id, int(learner)


def _exit(state: RunState | None, learner: int, halting: bool) -> Exit | None:
    """How the learner ended, from its run's state; None while it has not. `halting`:
    dlaasd stopped the run (a halt, or another learner's failure)."""
    if state is None:  # the Job is gone
        if halting:
            return Exit(143, error="halted: its Job was deleted", started=False)
        return Exit(
            -1,
            error="the run's Job was deleted in the cluster (not by dlaasd)",
            error_code=Code.CLUSTER_ENDED_JOB,
        )
    ended = state.exits.get(learner)
    if state.failure:  # the cluster failed it (an image, an eviction, the stage-in)
        code, sentence = state.failure
        return Exit(ended.code if ended else -1, error=sentence, error_code=code)
    if state.timed_out:  # its deadline counts from when Kueue started it
        return Exit(ended.code if ended else -1, timed_out=True)
    if ended is not None:
        return Exit(ended.code, ended.oom_killed, "" if ended.code == 0 else ended.reason)
    if state.phase == "ENDED":
        if halting:
            return Exit(143, error="stopped by dlaasd")
        if any(e.code != 0 for e in state.exits.values()):
            # another learner's failure ended the Job (backoffLimit 0): its end is the
            # run's cause, reported first; dlaasd then stops this one (halting)
            return None
        return Exit(137, error=state.message or "ended by the cluster")
    return None
