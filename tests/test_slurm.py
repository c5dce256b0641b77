"""The Slurm executor against a real Slurm cluster (tests/slurm_testbed.py): munged,
slurmctld and two slurmd on this machine, real Docker, real MinIO, the real daemon."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import docker

from dlaasd.executors import LearnerSpec, Mount
from dlaasd.minio_server import free_port
from dlaasd.node import (
    LABEL_SLURM_JOB,
    Location,
    NodeJob,
    Report,
    report_path,
    stored_path,
)
from dlaasd.objectstore import Endpoint
from dlaasd.runfolder import IN_CONTAINER, RunFolder
from dlaasd.slurm import Request, Site, batch_script
from dlaasd.slurm import submit as submit_script
from tests.harness import PYTHON_IMAGE, short_tmp


def _gone(dc: docker.DockerClient, label: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dc.containers.list(all=True, filters={"label": label}):
            return True
        time.sleep(0.2)
    return False


def test_testbed_epilog_removes_a_jobs_container(slurm, docker_client):
    """A container ignoring SIGTERM outlives its job's processes: the Epilog removes it."""
    script = (
        f"#!/bin/sh\nexec docker run --rm=false --label {LABEL_SLURM_JOB}="
        f"$SLURM_CLUSTER_NAME/$SLURM_JOB_ID {PYTHON_IMAGE} "
        "python3 -c 'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "time.sleep(600)'\n"
    )
    path = slurm.root / "ignore-term.sh"
    path.write_text(script)
    job = slurm.cli("sbatch", "--parsable", "-o", "/dev/null", str(path)).strip()
    label = f"{LABEL_SLURM_JOB}={slurm.name}/{job}"
    deadline = time.monotonic() + 60
    while not docker_client.containers.list(filters={"label": label}):
        assert time.monotonic() < deadline, f"job {job} started no container:\n{slurm.logs()}"
        time.sleep(0.2)
    slurm.cli("scancel", job)
    assert _gone(docker_client, label), f"the container of job {job} is left:\n{slurm.logs()}"


# --- the node program, run by Slurm without a daemon ------------------------------------


def _node_job(root: Path, minio, learners: int, command: str) -> NodeJob:
    """A run folder and node job as dlaasd makes them (the specs as the local executor's)."""
    folder = RunFolder(root / "runs" / "training-node")
    folder.prepare()
    (folder.model_code / "train.sh").write_text(command)
    specs = []
    for learner in range(1, learners + 1):
        logs = folder.learner_logs(learner)
        logs.mkdir(parents=True, exist_ok=True)
        env = {
            **IN_CONTAINER,
            "LOG_DIR": f"/job/{logs.relative_to(folder.job)}",
            "TRAINING_ID": "training-node",
            "LEARNER_ID": str(learner),
            "NUM_LEARNERS": str(learners),
            "HOME": "/tmp",
        }
        specs.append(
            LearnerSpec(
                run_id="training-node",
                learner=learner,
                learners=learners,
                image=PYTHON_IMAGE,
                command="sh train.sh",
                env=env,
                user="65534:65534",
                cpus=0.5,
                memory=256 * 1024**2,
                mounts=(
                    Mount(str(folder.job), "/job", False),
                    Mount(str(folder.data), "/job/data", True),
                ),
            )
        )
    os.chown(folder.job, 65534, 65534)
    for d in (folder.model_code, folder.results, folder.checkpoints, folder.logs):
        for p in [d, *d.rglob("*")]:
            os.chown(p, 65534, 65534)
    endpoint = Endpoint(minio.url, minio.access_key, minio.secret_key)
    reports = folder.root / "node"
    reports.mkdir()
    return NodeJob(
        run_id="training-node",
        run_folder=str(folder.root),
        report_dir=str(reports),
        node_dir=str(root / "node"),
        specs=specs,
        data=Location(endpoint, "node-data", "digits/"),
        results=Location(endpoint, "node-results"),
        daemon_label=f"test-node-{os.getpid()}",
        network="host" if learners > 1 else "",
    )


def test_the_node_program_trains_two_learners_on_two_nodes(slurm, minio, docker_client, tmp_path):
    """Data staged in on each node, the torchrun variables, each learner reaching learner
    1's address and port, the reports and the results in the bucket."""
    client = minio.client()
    for bucket in ("node-data", "node-results"):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    client.put_object("node-data", "digits/part-1.csv", io.BytesIO(b"1,2,3\n"), 6)
    root = Path(short_tmp("dlaas-node-"))
    command = (
        'env | grep -E "^(MASTER_ADDR|MASTER_PORT|WORLD_SIZE|RANK|NODE_RANK|LEARNER_ID)=" '
        '| sort > "$RESULT_DIR/env-$LEARNER_ID.txt"\n'
        'cat "$DATA_DIR/part-1.csv" > "$RESULT_DIR/data-$LEARNER_ID.txt"\n'
        "python3 - <<'PY'\n"
        "import os, socket, time\n"
        "addr, port = os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT'])\n"
        "if os.environ['RANK'] == '0':\n"
        "    s = socket.create_server((addr, port)); c, _ = s.accept()\n"
        "    print('learner 1 heard:', c.recv(100).decode())\n"
        "else:\n"
        "    for _ in range(300):\n"
        "        try: c = socket.create_connection((addr, port)); break\n"
        "        except OSError: time.sleep(0.1)\n"
        "    c.sendall(b'hello from rank 1')\n"
        "PY\n"
    )
    job = _node_job(root, minio, 2, command)
    job.torchrun_port = free_port()
    job_file = root / "job.json"
    job.write(job_file)
    req = Request(
        "training-node",
        2,
        1,
        0.5,
        256 * 1024**2,
        600,
        str(job_file),
        str(root / "slurm.out"),
        sys.executable,
    )
    job_id = submit_script(batch_script(req, Site()))
    reports = Path(job.report_dir)
    deadline = time.monotonic() + 180
    while not stored_path(reports).exists():
        assert time.monotonic() < deadline, f"{slurm.logs()}\n{_text(root / 'slurm.out')}"
        time.sleep(0.2)
    for learner in (1, 2):
        report = Report.read(report_path(reports, learner))
        assert report and report.exit and report.exit["code"] == 0, (
            report,
            _text(root / "slurm.out"),
        )
        assert len(report.gpus) == 1 and report.node == f"node{learner}"  # the GPU Slurm gave
    assert json.loads(stored_path(reports).read_text())["stored"] is True
    results = job.folder.results
    env1 = _text(results / "env-1.txt")
    assert "RANK=0\n" in env1 and "WORLD_SIZE=2\n" in env1 and "NODE_RANK=0\n" in env1
    assert f"MASTER_PORT={job.torchrun_port}\n" in env1 and "MASTER_ADDR=127.0.0.1\n" in env1
    assert "RANK=1\n" in _text(results / "env-2.txt")
    assert _text(results / "data-2.txt") == "1,2,3\n"
    assert "learner 1 heard: hello from rank 1" in _text(job.folder.log_file)
    keys = {o.object_name for o in client.list_objects("node-results", recursive=True)}
    assert {"training-node/env-1.txt", "training-node/training-log.txt"} <= keys
    assert "training-node/learner-2/training-log.txt" in keys
    label = f"{LABEL_SLURM_JOB}={slurm.name}/{job_id}"
    assert _gone(docker_client, label)
    shutil.rmtree(root, ignore_errors=True)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        return f"({exc})"
