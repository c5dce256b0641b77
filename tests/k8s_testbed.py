"""A real Kubernetes control plane for the tests, on loopback, without containers.

etcd, kube-apiserver, kube-controller-manager (the Job controller) and kube-scheduler are
the real programs; kwok plays the nodes and moves pods through their phases; Kueue runs
out of the cluster and admits the suspended Jobs against a ClusterQueue's quota. All are
built once per machine by scripts/build-k8s-testbed (see ../shared/testbeds/kubernetes.md).

kwok runs no containers: a pod's "training" lasts as long as its first container's
environment variable KWOK_RUN_FOR says (a Go duration such as "3s"; DEFAULT_RUN_FOR without
it), then ends with the exit code in KWOK_EXIT_CODE (0 without it). A pod whose first
container's image is MISSING_IMAGE never starts: its container waits with ErrImagePull,
as a node that cannot pull the image shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from dlaasd.minio_server import free_port
from tests.harness import stop_in_reverse

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "scripts" / "build-k8s-testbed"
EXAMPLES = REPO / "examples" / "kubernetes"

NAMESPACE = "dlaas"  # where dlaasd's Jobs go (examples/kubernetes/*.yaml)
LOCAL_QUEUE = "dlaas"
CLUSTER_QUEUE = "dlaas"
DAEMON_USER = f"system:serviceaccount:{NAMESPACE}:dlaasd"  # the Role's subject
DEFAULT_RUN_FOR = "2s"
MISSING_IMAGE = "registry.invalid/dlaas/no-such-image:1"
POD_LOG = "epoch 1: loss 0.5 (kwok's log of every learner container)\n"
STAGE_DELAY_MS = 300  # each of kwok's other steps (init containers, ready, delete)
# fake nodes: name -> labels; each has NODE_CAPACITY
NODES = {
    "gpu-node-1": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "gpu-node-2": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
}
NODE_CAPACITY = {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "4", "pods": "110"}
QUOTA = {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "2"}  # the ClusterQueue's


def bin_dir() -> Path:
    """The built programs, or a failure that says how to build them."""
    path = Path(subprocess.run([BUILD, "--path"], capture_output=True, text=True).stdout.strip())
    if not (path / "complete").is_file():
        raise RuntimeError(
            f"the Kubernetes testbed is not built (no {path}); build it once per machine "
            f"(about 15 minutes on 2 cores) with: {BUILD.relative_to(REPO)}"
        )
    return path


class KubeTestbed:
    def __init__(self, root: Path):
        self.root = root
        self.bin = bin_dir()
        self.procs: dict[str, subprocess.Popen] = {}
        self.admin_token = secrets.token_hex(16)
        self.daemon_token = secrets.token_hex(16)
        self.api_port = free_port()
        self.admin_kubeconfig = root / "admin.kubeconfig"
        self.daemon_kubeconfig = root / "dlaasd.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    # --- starting and stopping -------------------------------------------------------

    def start(self) -> KubeTestbed:
        try:
            self._etcd()
            self._apiserver()
            self._write_kubeconfig(self.admin_kubeconfig, "admin", self.admin_token)
            self._write_kubeconfig(self.daemon_kubeconfig, "dlaasd", self.daemon_token)
            kube = ["--kubeconfig", str(self.admin_kubeconfig), "--leader-elect=false"]
            self._spawn(
                "kube-controller-manager",
                *kube,
                f"--secure-port={free_port()}",
                "--bind-address=127.0.0.1",
                f"--service-account-private-key-file={self.root / 'sa.key'}",
            )
            self._spawn(
                "kube-scheduler", *kube, f"--secure-port={free_port()}", "--bind-address=127.0.0.1"
            )
            self._kwok()
            self.kubectl("apply", "--server-side", "-f", str(self.bin / "kueue-crds"))
            # Kueue exits at start when its kinds are not served yet
            self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            self.kubectl("apply", "-f", str(EXAMPLES / "rbac.yaml"))
            self._kueue()
            self._nodes()
            self.apply(*self.kueue_objects())
            self._wait("the ClusterQueue to be active", self._cluster_queue_active)
            self._wait("the namespace's default ServiceAccount", self._service_account)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Each process by the pid recorded, the last started first."""
        stop_in_reverse(list(self.procs.values()))
        self.procs.clear()

    def _spawn(self, name: str, *args: str, env: dict | None = None) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.procs[name] = subprocess.Popen(
            [str(self.bin / "bin" / name), *args],
            stdout=log,
            stderr=log,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=self.root,
        )

    def _wait(self, what: str, ready, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                        + self.log_tail(name)
                    )
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.root}")

    def log_tail(self, name: str, n: int = 30) -> str:
        lines = (self.root / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def _etcd(self) -> None:
        client, peer = free_port(), free_port()
        self._spawn(
            "etcd",
            "--name=testbed",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=testbed=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # a throwaway store: no need to wait for the disk
        )
        self.etcd_url = f"http://127.0.0.1:{client}"

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                return json.load(r).get("health") == "true"

        self._wait("etcd", healthy)

    def _apiserver(self) -> None:
        key = self.root / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        pub = self.root / "sa.pub"
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
            check=True,
            capture_output=True,
        )
        tokens = self.root / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f'{self.daemon_token},{DAEMON_USER},dlaasd,"system:serviceaccounts"\n'
        )
        tokens.chmod(0o600)
        self._spawn(
            "kube-apiserver",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={self.root / 'certs'}",
            "--authorization-mode=RBAC",
            f"--token-auth-file={tokens}",
            f"--service-account-key-file={pub}",
            f"--service-account-signing-key-file={key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        def ready() -> bool:
            request = urllib.request.Request(
                f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
            )
            with urllib.request.urlopen(request, timeout=2, context=context) as r:
                return r.status == 200

        self._wait("kube-apiserver", ready)

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {"server": self.server, "insecure-skip-tls-verify": True},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": user,
                    "context": {"cluster": "testbed", "user": user, "namespace": NAMESPACE},
                }
            ],
            "current-context": user,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _kwok(self) -> None:
        """kwok, also serving the nodes' kubelet API (HTTPS, self-signed: the API server
        does not check a kubelet's certificate without --kubelet-certificate-authority),
        where every learner container's log is POD_LOG's text."""
        # in the CRI's log format, which kwok serves from (time, stream, F: a full line)
        (self.root / "pod.log").write_text(f"2026-11-30T12:00:00.000000000Z stdout F {POD_LOG}")
        logs = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": "learners"},
            "spec": {
                "selector": {"matchNamespaces": [NAMESPACE]},
                "logs": [{"containers": ["learner"], "logsFile": str(self.root / "pod.log")}],
            },
        }
        config = self.root / "kwok.yaml"
        config.write_text(yaml.safe_dump_all([*kwok_stages(self.bin / "kwok-stages"), logs]))
        key, cert = self.root / "kwok.key", self.root / "kwok.crt"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=kwok", "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        port = free_port()
        self._spawn(
            "kwok",
            f"--kubeconfig={self.admin_kubeconfig}",
            f"--config={config}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{port}",
            f"--node-port={port}",
            f"--tls-cert-file={cert}",
            f"--tls-private-key-file={key}",
            "--node-ip=127.0.0.1",
            "--cidr=10.244.0.0/16",
        )

    def _kueue(self) -> None:
        certs = self.root / "kueue-certs"
        certs.mkdir()
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=kueue-webhook", "-keyout", str(certs / "tls.key"),
                "-out", str(certs / "tls.crt"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": "kueue-system",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{free_port()}"},
            "metrics": {"bindAddress": f"127.0.0.1:{free_port()}"},
            "webhook": {"port": free_port(), "host": "127.0.0.1", "certDir": str(certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "integrations": {"frameworks": ["batch/job"]},
        }
        path = self.root / "kueue.yaml"
        path.write_text(yaml.safe_dump(config))
        self.kubectl("create", "namespace", "kueue-system")
        self._spawn(
            "kueue",
            f"--config={path}",
            "--feature-gates=VisibilityOnDemand=false",
            f"--visibility-server-port={free_port()}",
            env={"KUBECONFIG": str(self.admin_kubeconfig)},
        )

    def _nodes(self) -> None:
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {"kubernetes.io/hostname": name, "type": "kwok", **labels},
                },
                "status": {"capacity": NODE_CAPACITY, "allocatable": NODE_CAPACITY},
            }
            for name, labels in NODES.items()
        ]
        self.apply(*nodes)

        def all_ready() -> bool:
            listed = json.loads(self.kubectl("get", "nodes", "-o", "json"))
            ready = [
                n
                for n in listed["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n["status"].get("conditions", [])
                )
            ]
            return len(ready) == len(NODES)

        self._wait("the fake nodes to be ready", all_ready)

    def kueue_objects(self, quota: dict[str, str] | None = None) -> list[dict]:
        """examples/kubernetes/kueue.yaml, with the tests' quota."""
        docs = list(yaml.safe_load_all((EXAMPLES / "kueue.yaml").read_text()))
        for doc in docs:
            if doc["kind"] == "ClusterQueue":
                for flavor in doc["spec"]["resourceGroups"][0]["flavors"]:
                    for resource in flavor["resources"]:
                        resource["nominalQuota"] = (quota or QUOTA)[resource["name"]]
        return docs

    def _cluster_queue_active(self) -> bool:
        cq = json.loads(self.kubectl("get", "clusterqueue", CLUSTER_QUEUE, "-o", "json"))
        return any(
            c["type"] == "Active" and c["status"] == "True"
            for c in cq.get("status", {}).get("conditions", [])
        )

    def _service_account(self) -> bool:
        self.kubectl("get", "serviceaccount", "default", "-n", NAMESPACE)
        return True

    # --- using it ------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, user: str = "admin") -> str:
        """kubectl as the cluster's admin (or as dlaasd, user="dlaasd"); its output, or
        RuntimeError with its error output."""
        config = self.admin_kubeconfig if user == "admin" else self.daemon_kubeconfig
        done = subprocess.run(
            [str(self.bin / "bin" / "kubectl"), f"--kubeconfig={config}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, *objects: dict, user: str = "admin", dry_run: bool = False) -> str:
        args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
        return self.kubectl(*args, input=yaml.safe_dump_all(objects), user=user)

    def get(self, kind: str, *names: str, selector: str = "") -> list[dict]:
        args = ["get", kind, *names, "-n", NAMESPACE, "-o", "json"]
        if selector:
            args += ["-l", selector]
        out = json.loads(self.kubectl(*args))
        return out.get("items", [out])

    def daemon_config(self, **overrides) -> dict:
        """The `kubernetes:` section of a dlaasd config that uses this cluster."""
        return {
            "kubeconfig": str(self.daemon_kubeconfig),
            "namespace": NAMESPACE,
            "local_queue": LOCAL_QUEUE,
            **overrides,
        }


def kwok_stages(folder: Path) -> list[dict]:
    """kwok's own stages (copied from its module by the build), with short delays, and the
    training's length and exit code taken from the pod's first container's environment."""
    stages = []
    for path in sorted(folder.glob("*.yaml")):
        for stage in yaml.safe_load_all(path.read_text()):
            if not stage or stage.get("kind") != "Stage":
                continue
            delay = stage["spec"].get("delay")
            if delay:
                delay["durationMilliseconds"] = STAGE_DELAY_MS
                delay.pop("jitterDurationMilliseconds", None)
                delay.pop("jitterDurationFrom", None)
            if stage["metadata"]["name"] == "pod-complete":
                delay["durationMilliseconds"] = _ms(DEFAULT_RUN_FOR)
                delay["durationFrom"] = {"expressionFrom": _env_expression("KWOK_RUN_FOR")}
                stages.append(_pod_fail(stage))
                stage["spec"]["selector"]["matchExpressions"].append(
                    {"key": _env_expression("KWOK_EXIT_CODE"), "operator": "DoesNotExist"}
                )
            if stage["metadata"]["name"] == "pod-ready":
                stages.append(_image_pull_error(stage))
                stage["spec"]["selector"]["matchExpressions"].append(
                    {"key": IMAGE, "operator": "NotIn", "values": [MISSING_IMAGE]}
                )
            stages.append(stage)
    return stages


IMAGE = ".spec.containers.[0].image"


def _image_pull_error(ready: dict) -> dict:
    """pod-ready's twin for a pod of MISSING_IMAGE: its container waits, ErrImagePull."""
    stage = json.loads(json.dumps(ready))
    stage["metadata"]["name"] = "pod-image-pull-error"
    selector = stage["spec"]["selector"]["matchExpressions"]
    selector.append({"key": IMAGE, "operator": "In", "values": [MISSING_IMAGE]})
    selector.append({"key": ".status.message", "operator": "DoesNotExist"})
    stage["spec"]["next"]["statusTemplate"] = (
        "message: kwok cannot pull this image\n"
        "containerStatuses:\n"
        "{{ range .spec.containers }}\n"
        "- image: {{ .image | Quote }}\n"
        "  name: {{ .name | Quote }}\n"
        "  ready: false\n"
        "  restartCount: 0\n"
        "  state:\n"
        "    waiting:\n"
        "      reason: ErrImagePull\n"
        "      message: 'pull access denied for {{ .image }}'\n"
        "{{ end }}\n"
        "phase: Pending\n"
    )
    return stage


def _env_expression(name: str) -> str:
    return f'.spec.containers.[0].env.[] | select( .name == "{name}" ) | .value'


def _ms(duration: str) -> int:
    return int(float(duration.rstrip("s")) * 1000)


def _pod_fail(complete: dict) -> dict:
    """pod-complete's twin for a pod whose KWOK_EXIT_CODE is set: it fails with that code."""
    fail = json.loads(json.dumps(complete))
    fail["metadata"]["name"] = "pod-fail"
    fail["spec"]["selector"]["matchExpressions"].append(
        {"key": _env_expression("KWOK_EXIT_CODE"), "operator": "Exists"}
    )
    template = fail["spec"]["next"]["statusTemplate"]
    code = (
        "{{ range (index $root.spec.containers 0).env }}"
        '{{ if eq .name "KWOK_EXIT_CODE" }}{{ .value }}{{ end }}{{ end }}'
    )
    fail["spec"]["next"]["statusTemplate"] = (
        template.replace("exitCode: 0", f"exitCode: {code}")
        .replace("reason: Completed", "reason: Error")
        .replace("phase: Succeeded", "phase: Failed")
    )
    return fail
