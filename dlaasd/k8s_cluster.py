"""A Kubernetes cluster with Kueue, through lightkube: hand a run's objects over, follow
its Job and pods, halt it, find it again by label after a restart.

Kueue orders a ClusterQueue's waiting Workloads by the second each was made (then by a
random UID), so runs handed over within one second could start in any order. dlaasd
keeps its submit order: it makes a run's Job only once the previous run's Workload
exists and its second has passed.

All calls block; the executor runs them in threads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx2
from lightkube import ApiError, Client, KubeConfig, codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod, Secret, Service
from lightkube.types import CascadeType

from .codes import DOWNLOADING, PROCESSING, QUEUED, STORING, Code
from .k8s_objects import LABEL_DAEMON, LABEL_RUN, job_name

log = logging.getLogger(__name__)

Workload = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "Workload", "workloads")
INDEX = "batch.kubernetes.io/job-completion-index"
TIDIED = "dlaas.tidied"  # on a finished Job whose Secret and Service dlaasd removed
JOB_UID = "kueue.x-k8s.io/job-uid"
# a learner's container waiting for these will not start by itself
IMAGE_ERRORS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CONFIG_ERRORS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


class KubeUnavailable(Exception):
    """The API server does not answer (or refuses dlaasd): try again later."""


@dataclass
class LearnerExit:
    code: int
    oom_killed: bool = False
    reason: str = ""  # Kubernetes' word for it (Completed, Error, OOMKilled, ...)


@dataclass
class RunState:
    """Where a run stands in the cluster."""

    phase: str  # QUEUED, DOWNLOADING, PROCESSING, STORING, or "ENDED"
    message: str = ""  # why it waits, or how it ended
    exits: dict[int, LearnerExit] = field(default_factory=dict)  # learner -> its exit
    failure: tuple[str, str] | None = None  # (code, sentence): the cluster failed it
    timed_out: bool = False
    began: bool = False  # a learner's pod was made: the run left the queue
    created: datetime | None = None  # when its Job was made (states() sets it)
    learners: int = 1  # its Job's completions (states() sets it)
    tidied: bool = False  # ended, its Secret and Service removed (states() sets it)
    finished: bool = False  # the Job says Complete or Failed (its pods ended)


@contextlib.contextmanager
def api(what: str):
    """Transport failures and refusals become KubeUnavailable, with what was being done."""
    try:
        yield
    except ApiError as exc:  # the server answered (an HTTPError too: this goes first)
        if exc.status.code in (401, 403):
            raise KubeUnavailable(
                f"the Kubernetes API server refuses dlaasd ({what}: {exc.status.message}); "
                "give it the Role in examples/kubernetes/rbac.yaml"
            ) from exc
        if exc.status.code is not None and exc.status.code >= 500:
            raise KubeUnavailable(f"the Kubernetes API server failed ({what}: {exc})") from exc
        raise
    except httpx2.HTTPError as exc:
        raise KubeUnavailable(
            f"the Kubernetes API server is not reachable ({what}: {exc})"
        ) from exc


class Cluster:
    def __init__(self, kubeconfig: str, namespace: str, context: str = "", daemon_label: str = ""):
        config: Any  # lightkube's objects are typed loosely (every field optional): Any here
        if kubeconfig:
            config = KubeConfig.from_file(kubeconfig).get(context_name=context or None)
        else:
            config = KubeConfig.from_service_account()
        self.namespace = namespace
        self.daemon_label = daemon_label
        self.client: Any = Client(config, namespace=namespace, field_manager="dlaasd")
        self._handover = threading.Lock()  # one run handed over at a time, in order
        self._last_workload: datetime | None = None

    # --- handing a run over ----------------------------------------------------------

    def submit(self, objects: list[dict]) -> None:
        """Create a run's objects (Secret, Service, Job), in submit order with the runs
        before it. All or none: a failure removes what was made. Objects that exist
        already (a restart during a hand-over) are kept."""
        with self._handover:
            self._after_last_workload()
            made = []
            try:
                for obj in objects:
                    with api(f"creating {obj['kind']} {obj['metadata']['name']}"):
                        try:
                            self.client.create(codecs.from_dict(obj))
                        except ApiError as exc:
                            if exc.status.code != 409:
                                raise
                    made.append(obj)
            except BaseException:
                for obj in reversed(made):
                    with contextlib.suppress(Exception):
                        self._delete(obj["kind"], obj["metadata"]["name"])
                raise
            job = objects[-1]
            self._last_workload = self._workload_made(job["metadata"]["name"])

    def _after_last_workload(self) -> None:
        if self._last_workload is None:
            return
        wait = self._last_workload.timestamp() + 1.05 - time.time()
        if wait > 0:
            time.sleep(wait)

    def _workload_made(self, name: str, timeout: float = 30) -> datetime | None:
        """When Kueue made the Workload of Job `name` (None if it did not within timeout)."""
        with api(f"reading Job {name}"):
            uid = self.client.get(Job, name).metadata.uid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with api(f"listing the Workload of Job {name}"):
                for w in self.client.list(Workload, labels={JOB_UID: uid}):
                    return w.metadata.creationTimestamp
            time.sleep(0.1)
        log.warning("event=no_workload job=%s (is Kueue running?)", name)
        return None

    # --- finding and following -------------------------------------------------------

    def runs(self) -> list[str]:
        """The run ids of the Jobs this dlaasd made that still exist."""
        labels: dict[str, Any] = {LABEL_RUN: None}  # any run of any dlaasd, or this one's:
        if self.daemon_label:
            labels = {LABEL_DAEMON: self.daemon_label}
        with api("listing dlaasd's Jobs"):
            return [j.metadata.labels[LABEL_RUN] for j in self.client.list(Job, labels=labels)]

    def exists(self, run_id: str) -> bool:
        with api(f"reading Job {job_name(run_id)}"):
            try:
                self.client.get(Job, job_name(run_id))
                return True
            except ApiError as exc:
                if exc.status.code == 404:
                    return False
                raise

    def learners(self, run_id: str) -> int:
        """How many learners the run's Job has (0 if it is gone)."""
        with api(f"reading Job {job_name(run_id)}"):
            try:
                return self.client.get(Job, job_name(run_id)).spec.completions or 1
            except ApiError as exc:
                if exc.status.code == 404:
                    return 0
                raise

    def state(self, run_id: str) -> RunState | None:
        """The run's state, from its Job, its Workload and its pods; None if its Job is
        gone."""
        name = job_name(run_id)
        with api(f"reading Job {name}"):
            try:
                job = self.client.get(Job, name)
            except ApiError as exc:
                if exc.status.code == 404:
                    return None
                raise
            pods = list(self.client.list(Pod, labels={LABEL_RUN: run_id}))
            workloads = []
            if job.spec.suspend:
                workloads = list(self.client.list(Workload, labels={JOB_UID: job.metadata.uid}))
        return run_state(job, pods, workloads[0] if workloads else None)

    def states(self) -> dict[str, RunState]:
        """Every run of this dlaasd that has a Job, by run id: three listings in all (Jobs,
        pods, Workloads), however many runs there are."""
        mine = {LABEL_DAEMON: self.daemon_label}
        with api("listing dlaasd's Jobs, pods and Workloads"):
            jobs = list(self.client.list(Job, labels=mine))
            pods = list(self.client.list(Pod, labels=mine))
            workloads = {}
            if any(j.spec.suspend for j in jobs):
                for w in self.client.list(Workload):
                    uid = (w.metadata.labels or {}).get(JOB_UID)
                    if uid:
                        workloads[uid] = w
        by_run: dict[str, list] = {}
        for pod in pods:
            by_run.setdefault((pod.metadata.labels or {}).get(LABEL_RUN, ""), []).append(pod)
        out = {}
        for job in jobs:
            run_id = job.metadata.labels[LABEL_RUN]
            state = run_state(job, by_run.get(run_id, []), workloads.get(job.metadata.uid))
            state.created = job.metadata.creationTimestamp
            state.learners = job.spec.completions or 1
            state.tidied = (job.metadata.labels or {}).get(TIDIED) == "true"
            out[run_id] = state
        return out

    # --- ending ------------------------------------------------------------------------

    def halt(self, run_id: str) -> None:
        """Delete the run's Job: its pods get SIGTERM, then SIGKILL after the grace period
        their spec gives. Nothing if it is gone already."""
        self._delete("Job", job_name(run_id), cascade=CascadeType.FOREGROUND)

    def remove(self, run_id: str, job: bool = True) -> None:
        """What is left of the run: its Service and Secret, and its Job with its pods
        unless `job` is False (a finished Job stays until its ttlSecondsAfterFinished)."""
        for kind in ("Job", "Service", "Secret") if job else ("Service", "Secret"):
            self._delete(kind, job_name(run_id), cascade=CascadeType.BACKGROUND)
        if not job:  # marked done with: a restarted dlaasd does not take it for a leftover
            with api(f"labelling Job {job_name(run_id)}"):
                try:
                    patch = {"metadata": {"labels": {TIDIED: "true"}}}
                    self.client.patch(Job, job_name(run_id), patch)
                except ApiError as exc:
                    if exc.status.code != 404:
                        raise

    def _delete(self, kind: str, name: str, cascade: CascadeType = CascadeType.BACKGROUND) -> None:
        resource = {"Job": Job, "Service": Service, "Secret": Secret}[kind]
        with api(f"deleting {kind} {name}"):
            try:
                self.client.delete(resource, name, cascade=cascade)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise

    def logs(self, run_id: str, learner: int, follow: bool = False):
        """The learner's pod's output, line by line."""
        pods = [
            p
            for p in self.client.list(Pod, labels={LABEL_RUN: run_id})
            if (p.metadata.annotations or {}).get(INDEX) == str(learner - 1)
        ]
        if not pods:
            return iter(())
        return self.client.log(pods[0].metadata.name, container="learner", follow=follow)


def run_state(job, pods, workload) -> RunState:
    """Where a run stands, from its Job, its pods and (while suspended) its Workload."""
    conditions = {c.type: c for c in (job.status.conditions or []) if c.status == "True"}
    exits = _exits(pods)
    began = any(_learner_status(p) is not None for p in pods)
    if "Failed" in conditions:
        failed = conditions["Failed"]
        if failed.reason == "DeadlineExceeded":
            why = "Kubernetes ended it at the manifest's timeout (activeDeadlineSeconds)"
            return RunState("ENDED", why, exits, timed_out=True, began=began, finished=True)
        failure = next(filter(None, (_pod_failure(p) for p in pods)), None)
        message = failed.message or failed.reason or ""
        return RunState("ENDED", message, exits, failure=failure, began=began, finished=True)
    if "Complete" in conditions:
        return RunState("ENDED", "", exits, began=began, finished=True)
    for pod in pods:
        failure = _pod_failure(pod)
        if failure:
            return RunState("ENDED", failure[1], exits, failure=failure, began=began)
    if job.spec.suspend:
        return RunState(QUEUED, why_waiting(job, workload))
    return RunState(_phase(pods), "", exits, began=began)


def why_waiting(job, workload) -> str:
    """Kueue's reason for holding a suspended Job, from its Workload."""
    if workload is None:
        return "handed to Kueue; it has not queued the run yet"
    status = workload.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "QuotaReserved" and c.get("status") == "False":
            return f"waiting in Kueue's queue: {c.get('message', '')}".rstrip(": ")
        if c.get("type") == "QuotaReserved" and c.get("status") == "True":
            return "Kueue admitted it; its pods are being made"
    return "waiting in Kueue's queue"


def _learner_status(pod):
    for s in (pod.status.containerStatuses or []) if pod.status else []:
        if s.name == "learner":
            return s
    return None


def _exits(pods) -> dict[int, LearnerExit]:
    exits = {}
    for pod in pods:
        status = _learner_status(pod)
        index = (pod.metadata.annotations or {}).get(INDEX)
        if status is None or index is None or not status.state.terminated:
            continue
        ended = status.state.terminated
        exits[int(index) + 1] = LearnerExit(
            ended.exitCode, ended.reason == "OOMKilled", ended.reason or ""
        )
    return exits


def _pod_failure(pod) -> tuple[str, str] | None:
    """A failure of the cluster's (not the training's) that ends the run."""
    if pod.status and pod.status.reason == "Evicted":
        return (
            Code.CLUSTER_ENDED_JOB,
            f"Kubernetes evicted learner pod {pod.metadata.name}: {pod.status.message}",
        )
    if not pod.status:
        return None
    for s in pod.status.initContainerStatuses or []:
        ended = s.state.terminated if s.state else None
        if s.name == "stage-in" and ended and ended.exitCode != 0:
            return step_failure(ended.message or "", ended.exitCode, pod.metadata.name)
    statuses = (pod.status.initContainerStatuses or []) + (pod.status.containerStatuses or [])
    for s in statuses:
        waiting = s.state.waiting if s.state else None
        if not waiting:
            continue
        why = waiting.reason + (f": {waiting.message}" if waiting.message else "")
        if waiting.reason in IMAGE_ERRORS:
            return (
                Code.IMAGE_MISSING,
                f"image {s.image!r} cannot be pulled on the cluster's nodes ({why})",
            )
        if waiting.reason in CONFIG_ERRORS:
            return Code.CONTAINER_NOT_STARTED, f"the container {s.name!r} could not start ({why})"
    return None


def step_failure(message: str, exit_code: int, pod: str) -> tuple[str, str]:
    """A failed stage-in step: the code and sentence of its termination message
    ("S302: ...", node.termination_message), or what Kubernetes knows of it."""
    value, _, sentence = message.partition(": ")
    code = next((c for c in Code if c == value), None)
    if code is not None and sentence:
        return code, sentence
    detail = f": {message.strip()}" if message.strip() else ""
    return (
        Code.DOWNLOAD_FAILED,
        f"staging in failed in pod {pod} (exit {exit_code}){detail}; its log: "
        f"kubectl logs {pod} -c stage-in",
    )


def _phase(pods) -> str:
    """DOWNLOADING until every learner's stage-in ended, PROCESSING while a learner
    trains, STORING once they all ended."""
    if not pods:
        return DOWNLOADING
    learners = [_learner_status(p) for p in pods]
    if any(s is None or (s.state and s.state.waiting) for s in learners):
        return DOWNLOADING
    if any(s.state and s.state.running for s in learners):
        return PROCESSING
    return STORING
