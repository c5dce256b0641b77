"""A run as Kubernetes objects: pure, no cluster needed (`dlaasctl export k8s` prints them).

One run is one `batch/v1` Job, created suspended and labelled with Kueue's queue, so
Kueue's queue decides when it starts; one pod per learner (an Indexed Job: learner N is
completion index N - 1). Beside it, a Secret with what the node-side program needs (the
object store's keys among it: never in the Job's spec) and, for learners > 1, the
headless Service that gives pod 0 the name the others reach it by (MASTER_ADDR).

A learner's pod:
    init container `stage-in` (dlaasd's image): the node-side program stages the run's
        training data into the pod's job folder (/job/data)
    init container `store` (dlaasd's image, a sidecar: restartPolicy Always): waits
        until the training ended, then uploads its results, checkpoints and logs
    container `learner` (the framework's image): the training command, as the local
        executor runs it; once it ended, it waits for `store` before the pod ends
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .runfolder import IN_CONTAINER
from .secret import is_secret_name

LABEL_RUN = "dlaas.run-id"
LABEL_DAEMON = "dlaas.daemon"  # which dlaasd made it (a hash of its state folder)
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU = "nvidia.com/gpu"

JOB_DIR = IN_CONTAINER["JOB_STATE_DIR"]  # /job: the pod's own folder (an emptyDir)
NODE_JOB_DIR = "/etc/dlaas"  # the Secret, read-only
NODE_JOB = f"{NODE_JOB_DIR}/node-job.json"
# The learner and the store sidecar talk through files in the job folder: the training's
# exit code when it ended, and the sidecar's word that the outputs are stored.
EXIT_FILE = f"{JOB_DIR}/.dlaas/exit-code"
STORED_FILE = f"{JOB_DIR}/.dlaas/stored"
STORE_WAIT = 3600  # seconds the learner waits for the store sidecar at most
# The node job's folders in a pod: its RunFolder root (the job folder is the volume at
# /job), its scratch (the data cache, the model archive) and its reports
POD_RUN_FOLDER = "/"
POD_NODE_DIR = "/tmp/dlaas-node"
POD_REPORTS = "/tmp/dlaas-reports"

# The node-side program (dlaasd/node.py), run in dlaasd's own image
NODE = ("python", "-m", "dlaasd.node")
# a step that fails says why in its termination message, which dlaasd reads ("S302: ...")
TERMINATION_LOG = "/dev/termination-log"
STAGE_IN = (
    *NODE, "stage-in", NODE_JOB, IN_CONTAINER["DATA_DIR"], "--message-to", TERMINATION_LOG
)  # fmt: skip
STORE = (*NODE, "store", NODE_JOB, "--after", EXIT_FILE, "--done", STORED_FILE)
NODE_RESOURCES = {"cpu": "250m", "memory": "512Mi"}  # the sidecar's, beside the learner


@dataclass(frozen=True)
class KubeSettings:
    """The config's `kubernetes` section, as far as the objects need it."""

    namespace: str = "dlaas"
    local_queue: str = "dlaas"
    node_image: str = "dlaas/dlaasd:latest"  # dlaasd's image: the node-side program
    image_pull_policy: str = "IfNotPresent"
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping, ...] = ()
    # a manifest's gpu_type -> the node labels that pick such GPUs
    gpu_types: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    ttl_after_finished: int = 3600  # seconds a finished Job stays for `logs`
    master_port: int = 29500  # torchrun's rendezvous on learner 1's pod
    halt_grace: int = 10  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class JobShape:
    """What a run asks for, per learner (the same for every learner of it)."""

    run_id: str
    image: str
    command: str  # the manifest's, run by `sh -c` in MODEL_DIR
    env: Mapping[str, str]  # learner 1's container environment, as the local executor's
    learners: int = 1
    cpus: float = 1.0
    memory: int = 1024**3  # bytes
    gpus: int = 0  # per learner
    gpu_type: str = ""
    timeout: float = 0  # seconds; 0: none
    user: str = "65534:65534"  # uid:gid the training runs as, never root
    # env names whose values are secrets (config's secret_env): kept in the run's Secret,
    # the Job refers to them, so whoever may read Jobs does not read them
    secret_env: frozenset[str] = frozenset()


class UnknownGpuType(ValueError):
    pass


def job_name(run_id: str) -> str:
    return f"dlaas-{run_id}"


def daemon_label(state_dir: str) -> str:
    """A label value (63 characters at most) telling this dlaasd's objects apart: a hash
    of its state folder."""
    return "d-" + hashlib.sha256(state_dir.encode()).hexdigest()[:20]


def objects(shape: JobShape, k: KubeSettings, node_job: str, daemon_label: str = "") -> list[dict]:
    """The run's objects, in the order to create them: Secret, Service (learners > 1), Job.
    `node_job`: the node-side program's job description (JSON; it holds the store's keys)."""
    out = [secret(shape, k, node_job, daemon_label)]
    if shape.learners > 1:
        out.append(service(shape, k, daemon_label))
    out.append(job(shape, k, daemon_label))
    return out


def _meta(shape: JobShape, k: KubeSettings, daemon_label: str, **extra) -> dict:
    labels = {LABEL_RUN: shape.run_id, **extra}
    if daemon_label:
        labels[LABEL_DAEMON] = daemon_label
    return {"name": job_name(shape.run_id), "namespace": k.namespace, "labels": labels}


def secret(shape: JobShape, k: KubeSettings, node_job: str, daemon_label: str = "") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(shape, k, daemon_label),
        "type": "Opaque",
        "stringData": {
            "node-job.json": node_job,
            **{_env_key(n): shape.env[n] for n in sorted(shape.secret_env) if n in shape.env},
        },
    }


def service(shape: JobShape, k: KubeSettings, daemon_label: str = "") -> dict:
    """Headless: each learner's pod gets a name under it, <job>-<index>.<service>."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(shape, k, daemon_label),
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_RUN: shape.run_id},
            "publishNotReadyAddresses": True,  # learners meet before they are "ready"
            "ports": [{"name": "torchrun", "port": k.master_port}],
        },
    }


def node_selector(shape: JobShape, k: KubeSettings) -> dict[str, str]:
    selector = dict(k.node_selector)
    if shape.gpu_type:
        if shape.gpu_type not in k.gpu_types:
            known = ", ".join(sorted(k.gpu_types)) or "none"
            raise UnknownGpuType(
                f"gpu_type {shape.gpu_type!r} is not one the cluster knows (kubernetes.gpu_types "
                f"in dlaasd's config maps: {known}); use one of them or leave gpu_type out"
            )
        selector.update(k.gpu_types[shape.gpu_type])
    return selector


def resources(shape: JobShape) -> dict:
    """Requests equal to limits (the Guaranteed class: nothing borrowed, nothing lost)."""
    amounts = {"cpu": _cpu(shape.cpus), "memory": str(shape.memory)}
    if shape.gpus:
        amounts[GPU] = str(shape.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _cpu(cpus: float) -> str:
    milli = math.ceil(cpus * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def learner_env(shape: JobShape, k: KubeSettings) -> list[dict]:
    """Learner 1's environment; the script sets the learner's own numbers from the pod's
    completion index (LEARNER_ID, RANK, NODE_RANK, LOG_DIR)."""
    env = {k_: v for k_, v in shape.env.items() if k_ not in ("CUDA_VISIBLE_DEVICES",)}
    env["NUM_LEARNERS"] = str(shape.learners)
    if shape.learners > 1:
        env.update(
            {
                "MASTER_ADDR": f"{job_name(shape.run_id)}-0.{job_name(shape.run_id)}",
                "MASTER_PORT": str(k.master_port),
                "WORLD_SIZE": str(shape.learners),
            }
        )
    return [
        {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": job_name(shape.run_id), "key": _env_key(name)}},
        }
        if name in shape.secret_env
        else {"name": name, "value": value}
        for name, value in env.items()
    ]


def _env_key(name: str) -> str:
    return f"env.{name}"


def learner_script(command: str) -> str:
    """The training command as the local executor runs it (output to the training log,
    and here to the pod's log too), then its exit code for the store sidecar, then the
    wait for the outputs to be stored."""
    return f"""export LEARNER_ID=$((JOB_COMPLETION_INDEX + 1)) RANK=$JOB_COMPLETION_INDEX \\
  NODE_RANK=$JOB_COMPLETION_INDEX
[ "$LEARNER_ID" -gt 1 ] && export LOG_DIR="$LOG_DIR/learner-$LEARNER_ID"
mkdir -p "$LOG_DIR" "$(dirname {EXIT_FILE})"
cd "$MODEL_DIR"
mkfifo /tmp/dlaas-log
tee -a "$LOG_DIR/training-log.txt" </tmp/dlaas-log &
trap "exit 143" TERM
(trap "exit 143" TERM
exec >/tmp/dlaas-log 2>&1
{command}
)
rc=$?
echo "$rc" >{EXIT_FILE}
i=0
while [ ! -e {STORED_FILE} ] && [ $i -lt {STORE_WAIT} ]; do sleep 1; i=$((i + 1)); done
exit $rc
"""


def pod_user(shape: JobShape) -> tuple[int, int]:
    uid, gid = (int(p) for p in shape.user.split(":"))
    if uid == 0:
        raise ValueError("a learner never runs as root")
    return uid, gid


def job(shape: JobShape, k: KubeSettings, daemon_label: str = "") -> dict:
    name = job_name(shape.run_id)
    uid, gid = pod_user(shape)
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    job_volume = {"name": "job", "mountPath": JOB_DIR}
    node_volumes = [job_volume, {"name": "node-job", "mountPath": NODE_JOB_DIR, "readOnly": True}]
    node_step = {
        "image": k.node_image,
        "imagePullPolicy": k.image_pull_policy,
        "volumeMounts": node_volumes,
        "securityContext": restricted,
        "resources": {"requests": NODE_RESOURCES, "limits": NODE_RESOURCES},
    }
    pod_spec: dict = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # a training has no business with the API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": k.halt_grace,
        "securityContext": {"runAsUser": uid, "runAsGroup": gid, "fsGroup": gid},
        "initContainers": [
            {"name": "stage-in", "command": list(STAGE_IN), **node_step},
            {"name": "store", "command": list(STORE), "restartPolicy": "Always", **node_step},
        ],
        "containers": [
            {
                "name": "learner",
                "image": shape.image,
                "imagePullPolicy": k.image_pull_policy,
                "command": ["/bin/sh", "-c", learner_script(shape.command)],
                "env": learner_env(shape, k),
                "resources": resources(shape),
                "volumeMounts": [job_volume, {"name": "shm", "mountPath": "/dev/shm"}],
                "securityContext": restricted,
            }
        ],
        "volumes": [
            {"name": "job", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(shape.memory // 4)}},
            {
                "name": "node-job",
                "secret": {"secretName": name, "defaultMode": 0o440},
            },
        ],
    }
    selector = node_selector(shape, k)
    if selector:
        pod_spec["nodeSelector"] = selector
    if k.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in k.tolerations]
    if shape.learners > 1:
        pod_spec["subdomain"] = name  # <job>-<index>.<service> names each learner's pod
    spec: dict = {
        "suspend": True,  # Kueue starts it when the quota allows
        "completionMode": "Indexed",
        "completions": shape.learners,
        "parallelism": shape.learners,
        "backoffLimit": 0,  # a failed learner fails the run; dlaasd never runs it twice
        "ttlSecondsAfterFinished": k.ttl_after_finished,
        "template": {
            "metadata": {"labels": {LABEL_RUN: shape.run_id}},
            "spec": pod_spec,
        },
    }
    if daemon_label:  # a restarted dlaasd lists its pods by it
        spec["template"]["metadata"]["labels"][LABEL_DAEMON] = daemon_label
    if shape.timeout:
        spec["activeDeadlineSeconds"] = math.ceil(shape.timeout)
    meta = _meta(shape, k, daemon_label, **{QUEUE_LABEL: k.local_queue})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def settings(kube, halt_grace: float) -> KubeSettings:
    """KubeSettings from the config's `kubernetes` section (config.Kubernetes)."""
    return KubeSettings(
        namespace=kube.namespace,
        local_queue=kube.local_queue,
        node_image=kube.node_image,
        image_pull_policy=kube.image_pull_policy,
        node_selector=dict(kube.node_selector),
        tolerations=tuple(kube.tolerations),
        gpu_types={name: dict(labels) for name, labels in kube.gpu_types.items()},
        ttl_after_finished=math.ceil(kube.ttl_after_finished),
        master_port=kube.master_port,
        halt_grace=math.ceil(halt_grace),
    )


def manifest_shape(
    run_id: str, m, image: str, user: str = "65534:65534", secret_env: Sequence[str] = ()
) -> JobShape:
    """A manifest's run (dlaasd.manifest.Manifest) as a JobShape, with the container
    environment the local executor gives learner 1; `secret_env`: the config's patterns
    of secret env names."""
    helpers = f"{JOB_DIR}/.dlaas"  # the optional helpers (dlaas_emetrics)
    env = {
        "OMP_NUM_THREADS": str(max(1, math.ceil(m.cpus))),
        **m.env,
        **IN_CONTAINER,
        "TRAINING_ID": run_id,
        "GPU_COUNT": str(m.gpus),
        "LEARNER_ID": "1",
        "NUM_LEARNERS": str(m.learners),
        "HOME": "/tmp",
        "PYTHONPATH": ":".join(p for p in (helpers, m.env.get("PYTHONPATH")) if p),
    }
    return JobShape(
        run_id=run_id,
        image=image,
        command=m.framework.command,
        env=env,
        learners=m.learners,
        cpus=m.cpus,
        memory=m.memory,
        gpus=m.gpus,
        gpu_type=m.gpu_type,
        timeout=float(m.timeout or 0),
        user=user,
        secret_env=secret_names(env, secret_env),
    )


def secret_names(env: Mapping[str, str], patterns: Sequence[str]) -> frozenset[str]:
    return frozenset(n for n in env if is_secret_name(n, list(patterns)))
