"""Runs on Kubernetes, against a real API server, Job controller, scheduler and Kueue
(tests/k8s_testbed.py). kwok plays the nodes: pods go through their phases without
containers, for as long as their KWOK_RUN_FOR says; the node-side program that runs in
a real pod is tested by the Slurm and local executors' tests.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time

import pytest
import yaml

from dlaasd import k8s_objects as ko
from dlaasd.codes import PROCESSING, QUEUED
from dlaasd.k8s_cluster import Cluster
from tests.harness import dlaasctl, manifest, model
from tests.k8s_testbed import LOCAL_QUEUE, NAMESPACE, NODES, QUOTA

pytestmark = pytest.mark.timeout(600)

H100 = {"h100": {"nvidia.com/gpu.product": NODES["gpu-node-2"]["nvidia.com/gpu.product"]}}
SETTINGS = ko.KubeSettings(namespace=NAMESPACE, local_queue=LOCAL_QUEUE, gpu_types=H100)


def run_id() -> str:
    return "training-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(9))


def shape(run_for: str = "1s", exit_code: int | None = None, **kw) -> ko.JobShape:
    env = {"KWOK_RUN_FOR": run_for, "MODEL_DIR": "/job/model-code", "LOG_DIR": "/job/logs"}
    if exit_code is not None:
        env["KWOK_EXIT_CODE"] = str(exit_code)
    fields = dict(
        run_id=run_id(), image="dlaas/python:bookworm", command="python train.py", env=env
    )
    return ko.JobShape(**{**fields, "user": "1000:1000", **kw})


@pytest.fixture
def cluster(kube):
    """dlaasd's client of the cluster, with the Role of examples/kubernetes/rbac.yaml;
    removes the runs it made afterwards."""
    label = "test-" + secrets.token_hex(4)
    c = Cluster(str(kube.daemon_kubeconfig), NAMESPACE, daemon_label=label)
    yield c
    for run in c.runs():
        c.remove(run)


def submit(c: Cluster, s: ko.JobShape) -> str:
    c.submit(ko.objects(s, SETTINGS, json.dumps({"run_id": s.run_id}), c.daemon_label))
    return s.run_id


def wait_for(what: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_exported_objects_are_accepted_by_the_api_server_as_dlaasd(kube, tmp_path):
    config = tmp_path / "dlaasd.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "kubernetes": {
                    "namespace": NAMESPACE,
                    "local_queue": LOCAL_QUEUE,
                    "gpu_types": H100,
                },
            }
        )
    )
    for fields in ({}, {"learners": 3, "gpus": 1, "gpu_type": "h100", "timeout": "2h"}):
        folder = model(tmp_path / f"m{len(fields)}", manifest("python train.py", **fields))
        out = dlaasctl("export", "k8s", str(folder), "--config", str(config), env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        objects = list(yaml.safe_load_all(out.stdout))
        kinds = ["Secret", "Service", "Job"] if fields else ["Secret", "Job"]
        assert [o["kind"] for o in objects] == kinds
        # the Role of examples/kubernetes/rbac.yaml may make every one of them
        applied = kube.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=out.stdout, user="dlaasd"
        )
        for o in objects:
            kind = {"Job": "job.batch"}.get(o["kind"], o["kind"].lower())
            assert f"{kind}/{o['metadata']['name']} created (server dry run)" in applied


def test_kueue_starts_runs_in_submit_order_as_the_gpu_quota_frees(kube, cluster):
    """20 runs of one GPU each against a quota of 2: never more than 2 at once, each one
    waits while the quota is used (QUEUED, saying why) and they start in submit order."""
    runs = [submit(cluster, shape("1s", gpus=1)) for _ in range(20)]
    quota = int(QUOTA["nvidia.com/gpu"])
    started: dict[str, int] = {}  # run -> the tick it was first seen started
    said_why = ""
    tick = 0
    deadline = time.monotonic() + 400
    while len(started) < len(runs) and time.monotonic() < deadline:
        jobs = {
            j["metadata"]["labels"]["dlaas.run-id"]: j
            for j in kube.get("jobs", selector=f"dlaas.daemon={cluster.daemon_label}")
        }
        running = 0
        for run in runs:
            job = jobs.get(run)
            if job is None or job["spec"].get("suspend"):
                continue
            started.setdefault(run, tick)
            done = any(
                c["type"] in ("Complete", "Failed") and c["status"] == "True"
                for c in job.get("status", {}).get("conditions", [])
            )
            running += not done
        assert running <= quota, f"{running} runs hold GPUs at once; the quota is {quota}"
        waiting = [r for r in runs if r not in started]
        if waiting and not said_why:
            state = cluster.state(waiting[-1])
            if state and "insufficient" in state.message:
                assert state.phase == QUEUED
                said_why = state.message
        tick += 1
        time.sleep(0.2)
    assert len(started) == len(runs), f"only {len(started)} of {len(runs)} started"
    order = [started[r] for r in runs]
    assert order == sorted(order), f"started out of submit order: {order}"
    assert "nvidia.com/gpu" in said_why, said_why


def test_statuses_follow_the_pods_and_exits_are_reported(cluster):
    ok = submit(cluster, shape("4s"))
    failed = submit(cluster, shape("1s", exit_code=3))
    wait_for("PROCESSING", lambda: cluster.state(ok).phase == PROCESSING)
    ended = wait_for("the end", lambda: (s := cluster.state(ok)) and s.phase == "ENDED" and s)
    assert ended.exits[1].code == 0
    ended = wait_for("the end", lambda: (s := cluster.state(failed)) and s.phase == "ENDED" and s)
    assert ended.exits[1].code == 3 and not ended.timed_out


def test_gpu_requests_land_on_fake_nodes_with_the_gpu_type(kube, cluster):
    run = submit(cluster, shape("30s", gpus=2, gpu_type="h100"))
    pod = wait_for(
        "the pod placed",
        lambda: [
            p for p in kube.get("pods", selector=f"dlaas.run-id={run}") if p["spec"].get("nodeName")
        ],
    )[0]
    assert pod["spec"]["nodeName"] == "gpu-node-2"
    learner = pod["spec"]["containers"][0]
    assert learner["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_halt_deletes_the_job_and_a_new_client_finds_runs_by_label(kube, cluster):
    run = submit(cluster, shape("10m"))
    wait_for("PROCESSING", lambda: cluster.state(run).phase == PROCESSING)
    # a restarted dlaasd finds its runs by label, and handing one over again duplicates nothing
    again = Cluster(str(kube.daemon_kubeconfig), NAMESPACE, daemon_label=cluster.daemon_label)
    assert run in again.runs()
    again.submit(ko.objects(shape("10m", run_id=run), SETTINGS, "{}", cluster.daemon_label))
    assert len(kube.get("jobs", selector=f"dlaas.run-id={run}")) == 1
    assert len(kube.get("pods", selector=f"dlaas.run-id={run}")) == 1
    again.halt(run)
    wait_for("the Job gone", lambda: cluster.state(run) is None)
    assert run not in cluster.runs()
