"""Runs on Kubernetes, against a real API server, Job controller, scheduler and Kueue
(tests/k8s_testbed.py). kwok plays the nodes: pods go through their phases without
containers, for as long as their KWOK_RUN_FOR says; the node-side program that runs in
a real pod is tested by the Slurm and local executors' tests.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import string
import subprocess
import sys
import time
import zipfile

import pytest
import yaml

from dlaasd import k8s_objects as ko
from dlaasd.codes import PROCESSING
from dlaasd.executors import Location
from dlaasd.k8s_cluster import Cluster
from dlaasd.node import NodeJob
from dlaasd.objectstore import Endpoint
from tests.harness import Dlaasd, dlaasctl, manifest, model
from tests.k8s_testbed import LOCAL_QUEUE, MISSING_IMAGE, NAMESPACE, NODES, POD_LOG, QUOTA
from tests.test_inbox import wait_for

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
    token = {"env": {"HF_TOKEN": "hf_exported"}}  # a secret env value: in the Secret
    for fields in ({}, {"learners": 3, "gpus": 1, "gpu_type": "h100", "timeout": "2h", **token}):
        folder = model(tmp_path / f"m{len(fields)}", manifest("python train.py", **fields))
        out = dlaasctl("export", "k8s", str(folder), "--config", str(config), env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        objects = list(yaml.safe_load_all(out.stdout))
        kinds = ["Secret", "Service", "Job"] if fields else ["Secret", "Job"]
        assert [o["kind"] for o in objects] == kinds
        # what the pods' node program reads, the keys left as placeholders
        node_job = NodeJob.from_json(objects[0]["stringData"]["node-job.json"])
        run_id = objects[0]["metadata"]["labels"]["dlaas.run-id"]
        assert node_job.model and node_job.model.prefix == f"{run_id}/model.zip"
        assert node_job.results.endpoint.secret_key == "<secret key>"
        assert "hf_exported" not in yaml.safe_dump(objects[-1])
        if fields:
            assert objects[0]["stringData"]["env.HF_TOKEN"] == "hf_exported"
        # the Role of examples/kubernetes/rbac.yaml may make every one of them
        applied = kube.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=out.stdout, user="dlaasd"
        )
        for o in objects:
            kind = {"Job": "job.batch"}.get(o["kind"], o["kind"].lower())
            assert f"{kind}/{o['metadata']['name']} created (server dry run)" in applied


def test_statuses_follow_the_pods_and_exits_are_reported(cluster):
    ok = submit(cluster, shape("1s"))
    failed = submit(cluster, shape("1s", exit_code=3))
    long = submit(cluster, shape("10m"))
    wait_for(lambda: cluster.state(long).phase == PROCESSING, 300, "PROCESSING")
    ended = wait_for(lambda: (s := cluster.state(ok)) and s.phase == "ENDED" and s, 300, "the end")
    assert ended.exits[1].code == 0
    ended = wait_for(
        lambda: (s := cluster.state(failed)) and s.phase == "ENDED" and s, 300, "the end"
    )
    assert ended.exits[1].code == 3 and not ended.timed_out
    assert set(cluster.states()) == {ok, failed, long}  # one listing, by run


def test_gpu_requests_land_on_fake_nodes_with_the_gpu_type(kube, cluster):
    run = submit(cluster, shape("30s", gpus=2, gpu_type="h100"))
    pod = wait_for(
        lambda: [
            p for p in kube.get("pods", selector=f"dlaas.run-id={run}") if p["spec"].get("nodeName")
        ],
        180,
        "the pod placed",
    )[0]
    assert pod["spec"]["nodeName"] == "gpu-node-2"
    learner = pod["spec"]["containers"][0]
    assert learner["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_halt_deletes_the_job_and_a_new_client_finds_runs_by_label(kube, cluster):
    run = submit(cluster, shape("10m"))
    wait_for(lambda: cluster.state(run).phase == PROCESSING, 300, "PROCESSING")
    # a restarted dlaasd finds its runs by label, and handing one over again duplicates nothing
    again = Cluster(str(kube.daemon_kubeconfig), NAMESPACE, daemon_label=cluster.daemon_label)
    assert run in again.runs()
    again.submit(ko.objects(shape("10m", run_id=run), SETTINGS, "{}", cluster.daemon_label))
    assert len(kube.get("jobs", selector=f"dlaas.run-id={run}")) == 1
    assert len(kube.get("pods", selector=f"dlaas.run-id={run}")) == 1
    again.halt(run)
    wait_for(lambda: cluster.state(run) is None, 300, "the Job gone")
    assert run not in cluster.runs()


# --- runs through dlaasd with `executor: kubernetes` ------------------------------------


@pytest.fixture
def on_kube(kube, make_daemon):
    """A daemon whose runs go to the test cluster; its objects are removed afterwards."""
    made: list[Dlaasd] = []

    def make(**kw) -> Dlaasd:
        section = kube.daemon_config(gpu_types=H100)
        d = make_daemon(executor="kubernetes", kubernetes=section, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
        kube.kubectl(
            "delete", "jobs,secrets,services", "-n", NAMESPACE, "-l", f"dlaas.daemon={label(d)}",
            "--wait=false",
        )  # fmt: skip


def label(d: Dlaasd) -> str:
    return ko.daemon_label(str(d.state))


def kwok_run(run_for: str, exit_code: int | None = None, **fields) -> dict:
    """A manifest whose pod kwok keeps "training" for `run_for`, then ends with `exit_code`."""
    env = {"KWOK_RUN_FOR": run_for}
    if exit_code is not None:
        env["KWOK_EXIT_CODE"] = str(exit_code)
    return manifest("python3 train.py", env=env, **fields)


def story(d: Dlaasd, run: dict, kube=None) -> str:
    """What a failed assertion shows: the run, the daemon's log, the cluster's Jobs."""
    out = f"{json.dumps(run, indent=1)}\n--- dlaasd\n{d.log_tail(60)}"
    if kube is not None:
        out += "\n--- jobs\n" + kube.kubectl("get", "jobs,pods", "-n", NAMESPACE, "-o", "wide")
    return out


def history(d: Dlaasd, run_id: str) -> list[str]:
    return [e["status"] for e in d.ctl_json("show", run_id)["history"]]


def jobs_of(kube, d: Dlaasd, run_id: str = "") -> list[dict]:
    selector = f"dlaas.daemon={label(d)}" + (f",dlaas.run-id={run_id}" if run_id else "")
    return kube.get("jobs", selector=selector)


def test_runs_on_kubernetes_end_as_their_pods_did(on_kube, kube, minio, tmp_path):
    """A completed and a failed pod, and two learners: the run goes through every phase
    (the history says so even where they passed between two looks), and ends with the
    pod's exit code; the model code went to the definitions bucket for the pods."""
    d = on_kube()
    ok = d.submit(model(tmp_path / "ok", kwok_run("2s"), {"train.py": "print('hi')\n"}))
    failed = d.submit(model(tmp_path / "bad", kwok_run("1s", exit_code=3)))
    two = d.submit(model(tmp_path / "two", kwok_run("1s", learners=2)))
    run = d.wait(ok, timeout=300)
    assert run["status"] == "COMPLETED", story(d, run, kube)
    assert history(d, ok) == ["QUEUED", "DOWNLOADING", "PROCESSING", "STORING", "COMPLETED"]
    assert run["results"] == f"s3://dlaas-results/{ok}/", run
    run = d.wait(failed, timeout=300)
    assert (run["status"], run["error_code"], run["exit_code"]) == ("FAILED", "C201", 3), story(
        d, run, kube
    )
    run = d.wait(two, timeout=300)  # two pods of one Indexed Job, and its Service
    assert run["status"] == "COMPLETED", story(d, run, kube)
    assert len(kube.get("pods", selector=f"dlaas.run-id={two}")) == 2
    keys = {o.object_name for o in minio.client().list_objects("dlaas-definitions", f"{ok}/")}
    assert f"{ok}/model.zip" in keys
    # the finished Jobs stay for the cluster's admins; the store's keys do not
    assert len(jobs_of(kube, d, ok)) == 1
    assert kube.get("secrets", selector=f"dlaas.daemon={label(d)}") == []


def test_a_halt_ends_a_training_pod_halted_and_deletes_its_job(on_kube, kube, minio, tmp_path):
    """While it trains, the run is PROCESSING on the fake node of its gpu_type, its Secret
    holds the node job (the store's keys) and the Job none of it, `logs` shows the pod's
    log; a halt deletes the Job."""
    d = on_kube()
    run_id = d.submit(model(tmp_path / "m", kwok_run("10m", gpus=1, gpu_type="h100")))
    run = d.wait(run_id, "PROCESSING", "FAILED", "COMPLETED", timeout=300)
    assert run["status"] == "PROCESSING", story(d, run, kube)
    (pod,) = kube.get("pods", selector=f"dlaas.run-id={run_id}")
    assert pod["spec"]["nodeName"] == "gpu-node-2"
    (secret,) = kube.get("secrets", selector=f"dlaas.run-id={run_id}")
    node_job = json.loads(base64.b64decode(secret["data"]["node-job.json"]))
    assert node_job["results"]["endpoint"]["secret_key"] == minio.secret_key
    assert node_job["model"]["prefix"] == f"{run_id}/model.zip"
    (job,) = jobs_of(kube, d, run_id)
    assert minio.secret_key not in json.dumps(job)
    deadline = time.monotonic() + 120  # the pod's log, copied into the run's folder
    while POD_LOG not in d.ctl("logs", run_id).stdout:
        assert time.monotonic() < deadline, story(d, d.run(run_id), kube)
        time.sleep(0.5)
    assert d.ctl("halt", run_id).returncode == 0
    run = d.wait(run_id, timeout=300)
    assert run["status"] == "HALTED", story(d, run, kube)
    deadline = time.monotonic() + 120  # deleted: gone once its pod is (foreground deletion)
    while jobs_of(kube, d, run_id):
        assert time.monotonic() < deadline, story(d, run, kube)
        time.sleep(0.5)
    assert kube.get("secrets", selector=f"dlaas.run-id={run_id}") == []
    followed = d.ctl("logs", run_id, "--follow", timeout=120)  # ended: it returns at once
    assert followed.returncode == 0 and followed.stdout.count(POD_LOG) == 1


def test_the_manifests_timeout_is_the_jobs_deadline(on_kube, kube, tmp_path):
    d = on_kube()
    run_id = d.submit(model(tmp_path / "m", kwok_run("10m", timeout="3s")))
    run = d.wait(run_id, timeout=300)
    assert (run["status"], run["error_code"]) == ("FAILED", "C203"), story(d, run, kube)
    # a gpu_type the cluster does not map is refused at submit, nothing queued
    folder = model(tmp_path / "v100", kwok_run("1s", gpus=1, gpu_type="v100"))
    refused = d.ctl("train", str(folder / "manifest.yml"), str(folder))
    assert refused.returncode != 0 and "gpu_type" in refused.stderr and "h100" in refused.stderr


def test_an_image_the_nodes_cannot_pull_fails_the_run_and_its_job_goes(on_kube, kube, tmp_path):
    d = on_kube()
    run_id = d.submit(model(tmp_path / "m", kwok_run("10m", image=MISSING_IMAGE)))
    run = d.wait(run_id, timeout=300)
    assert (run["status"], run["error_code"]) == ("FAILED", "S103"), story(d, run, kube)
    assert MISSING_IMAGE in run["status_message"] and "ErrImagePull" in run["status_message"]
    deadline = time.monotonic() + 120  # it would wait for the image for ever: deleted
    while jobs_of(kube, d, run_id):
        assert time.monotonic() < deadline, story(d, run, kube)
        time.sleep(0.5)


@pytest.mark.timeout(1200)
def test_twenty_gpu_runs_start_in_submit_order_against_the_quota(on_kube, kube, tmp_path):
    """20 runs of one GPU each against Kueue's quota of 2, handed over by dlaasd. The
    first two hold the quota until halted, so every other run is seen waiting, QUEUED,
    saying why; then they all start in submit order (the Jobs' start times), never more
    than 2 at once, and complete."""
    d = on_kube()
    hold = model(tmp_path / "hold", kwok_run("10m", gpus=1))
    short = model(tmp_path / "short", kwok_run("2s", gpus=1))
    runs = [d.submit(hold) for _ in range(2)] + [d.submit(short) for _ in range(18)]
    # the first to wait says Kueue's reason; the last handed over, its place too
    for run_id, words in (
        (runs[2], "insufficient unused quota for nvidia.com/gpu"),
        (runs[-1], "(17 of dlaasd's runs ahead of it in LocalQueue dlaas)"),
    ):
        deadline = time.monotonic() + 300
        while words not in (run := d.run(run_id))["status_message"]:
            assert run["status"] == "QUEUED", story(d, run, kube)
            assert time.monotonic() < deadline, story(d, run, kube)
            time.sleep(0.3)
        assert run["status"] == "QUEUED", story(d, run, kube)
        assert run["status_message"].startswith("waiting in Kueue's queue"), run
    held = {j["metadata"]["labels"]["dlaas.run-id"]: j["status"] for j in jobs_of(kube, d)}
    assert [r for r in runs if "startTime" in held[r]] == runs[:2]
    for run_id in runs[:2]:
        assert d.ctl("halt", run_id).returncode == 0
    for run_id in runs:
        run = d.wait(run_id, timeout=600)
        want = "HALTED" if run_id in runs[:2] else "COMPLETED"
        assert run["status"] == want, story(d, run, kube)
    deadline = time.monotonic() + 120  # a pod ended: its Job is marked so soon after
    while True:
        jobs = {j["metadata"]["labels"]["dlaas.run-id"]: j["status"] for j in jobs_of(kube, d)}
        if all("completionTime" in j for j in jobs.values()):
            break
        assert time.monotonic() < deadline, story(d, d.run(runs[-1]), kube)
        time.sleep(0.5)
    rest = runs[2:]
    assert set(jobs) == set(rest)  # the halted ones' Jobs were deleted
    # RFC 3339 times of whole seconds: order-preserving as text, never earlier than true
    starts = [held[r]["startTime"] for r in runs[:2]] + [jobs[r]["startTime"] for r in rest]
    assert starts == sorted(starts), f"started out of submit order: {starts}"
    quota = int(QUOTA["nvidia.com/gpu"])
    for r in rest:  # a Job shown ended after another's start truly ran past it
        s = jobs[r]["startTime"]
        running = [o for o in rest if jobs[o]["startTime"] <= s < jobs[o]["completionTime"]]
        assert len(running) <= quota, f"{len(running)} runs held GPUs at once at {s}"


def test_a_daemon_killed_while_jobs_exist_loses_and_duplicates_nothing(on_kube, kube, tmp_path):
    """Four one-GPU runs against the quota of 2 (one or two train, the others wait in
    Kueue or are not handed over yet): kill -9 and start again; each run ends COMPLETED,
    with the same one Job and one pod it had."""
    d = on_kube()
    folder = model(tmp_path / "m", kwok_run("15s", gpus=1))
    runs = [d.submit(folder) for _ in range(4)]
    run = d.wait(runs[0], "PROCESSING", "FAILED", "COMPLETED", timeout=300)
    assert run["status"] != "FAILED", story(d, run, kube)  # the last two wait for quota
    before = {
        j["metadata"]["labels"]["dlaas.run-id"]: j["metadata"]["uid"] for j in jobs_of(kube, d)
    }
    d.kill()
    d.start()
    for run_id in runs:
        run = d.wait(run_id, timeout=600)
        assert run["status"] == "COMPLETED", story(d, run, kube)
        assert history(d, run_id).count("PROCESSING") == 1
    after = {
        j["metadata"]["labels"]["dlaas.run-id"]: j["metadata"]["uid"] for j in jobs_of(kube, d)
    }
    assert set(after) == set(runs)
    assert {r: after[r] for r in before} == before  # the same Jobs, never made again
    for run_id in runs:
        assert len(kube.get("pods", selector=f"dlaas.run-id={run_id}")) == 1


# --- the pod's steps of the node program, with the real store (kwok runs no pods) --------


def test_a_pods_stage_in_and_store_sidecar_work_against_the_store(minio, tmp_path):
    """What a pod's init step and store sidecar run, as processes: the model fetched from
    the definitions bucket and unpacked, the data staged in; the outputs uploaded once
    the training wrote its exit code, then the sidecar stays until SIGTERM. A missing
    model is a termination message with its code."""
    client = minio.client()
    for bucket in ("k8s-defs", "k8s-data", "k8s-results"):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("model/train.py", "print('hello')\n")
    client.put_object("k8s-defs", "run-1/model.zip", io.BytesIO(archive.getvalue()), -1,
                      part_size=5 * 1024**2)  # fmt: skip
    client.put_object("k8s-data", "set/a.csv", io.BytesIO(b"1,2\n"), 4)
    endpoint = Endpoint(minio.url, minio.access_key, minio.secret_key)
    root = tmp_path / "pod"
    (root / "job").mkdir(parents=True)
    job = NodeJob(
        run_id="run-1",
        run_folder=str(root),
        report_dir=str(tmp_path / "reports"),
        node_dir=str(tmp_path / "node"),
        specs=[],
        data=Location(endpoint, "k8s-data", "set/"),
        results=Location(endpoint, "k8s-results", "run-1/"),
        model=Location(endpoint, "k8s-defs", "run-1/model.zip"),
    )
    job_file = tmp_path / "node-job.json"
    job.write(job_file)
    node = [sys.executable, "-m", "dlaasd.node"]
    data, message = root / "job" / "data", tmp_path / "termination-log"
    done = subprocess.run(
        [*node, "stage-in", str(job_file), str(data), "--message-to", str(message)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (root / "job" / "model-code" / "train.py").read_text() == "print('hello')\n"
    assert (data / "a.csv").read_text() == "1,2\n"
    assert not message.exists()
    # the training writes its results and log, then its exit code: the sidecar stores them
    (root / "job" / "results" / "out.txt").write_text("42")
    (root / "job" / "logs" / "training-log.txt").write_text("hello\n")
    exit_file, stored = root / "job" / ".dlaas" / "exit-code", root / "job" / ".dlaas" / "stored"
    sidecar = subprocess.Popen(
        [*node, "store", str(job_file), "--after", str(exit_file), "--done", str(stored)]
    )
    try:
        exit_file.parent.mkdir(exist_ok=True)
        exit_file.write_text("0\n")
        deadline = time.monotonic() + 120
        while not stored.exists():
            assert time.monotonic() < deadline and sidecar.poll() is None
            time.sleep(0.2)
        assert json.loads(stored.read_text())["stored"] is True
        assert sidecar.poll() is None  # a sidecar stays until the pod ends
    finally:
        sidecar.terminate()
    assert sidecar.wait(60) == 0
    keys = {o.object_name for o in client.list_objects("k8s-results", "run-1/", recursive=True)}
    assert keys == {"run-1/out.txt", "run-1/training-log.txt"}
    # a model that is not there: the init step fails, saying why with its code
    job.model = Location(endpoint, "k8s-defs", "run-1/none.zip")
    job.write(job_file)
    done = subprocess.run(
        [*node, "stage-in", str(job_file), str(data), "--message-to", str(message)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    code, _, sentence = message.read_text().partition(": ")
    assert code == "S302" and "none.zip" in sentence, message.read_text()
