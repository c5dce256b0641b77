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
import pytest

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
from dlaasd.slurm import jobs as slurm_jobs
from dlaasd.slurm import submit as submit_script
from tests.harness import PYTHON_IMAGE, Dlaasd, manifest, model, short_tmp
from tests.test_learners import DDP, check_ddp_run, upload_digits
from tests.test_runs import SIGTERM_AWARE_FOR


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
        owner=[65534, 65534],  # the node's prepare step hands the job folder over
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


# --- runs through dlaasd with `executor: slurm` -----------------------------------------


@pytest.fixture
def on_slurm(slurm, make_daemon):
    """A daemon whose runs go to the test cluster (its state folder is the shared one)."""

    def make(**kw) -> Dlaasd:
        settings = {"slurm": {"time_margin": "1s", "node_dir": str(slurm.root / "nodes")}}
        return make_daemon(executor="slurm", **{**settings, **kw})

    return make


def _job_of(d: Dlaasd, run_id: str) -> str:
    return (d.state / "runs" / run_id / "node" / "slurm-job").read_text().strip()


def test_a_run_on_slurm_completes_with_its_data_results_and_logs(on_slurm, minio, tmp_path):
    client = minio.client()
    if not client.bucket_exists("slurm-data"):
        client.make_bucket("slurm-data")
    client.put_object("slurm-data", "set/numbers.txt", io.BytesIO(b"4 5 6\n"), 6)
    d = on_slurm()
    code = (
        "import os, json\n"
        "print('training on', os.environ['TRAINING_ID'], flush=True)\n"
        "data = open(os.path.join(os.environ['DATA_DIR'], 'numbers.txt')).read()\n"
        "env = {k: os.environ.get(k, '') for k in ('CUDA_VISIBLE_DEVICES', 'LEARNER_ID', "
        "'NUM_LEARNERS', 'MASTER_ADDR')}\n"
        "json.dump({'data': data, 'uid': os.getuid(), **env}, "
        "open(os.path.join(os.environ['RESULT_DIR'], 'out.json'), 'w'))\n"
    )
    stores = [
        {
            "id": "s",
            "type": "s3_datastore",
            "training_data": {"container": "slurm-data", "prefix": "set/"},
        }
    ]
    folder = model(
        tmp_path / "m", manifest("python3 train.py", data_stores=stores), {"train.py": code}
    )
    run_id = d.submit(folder)
    run = d.wait(run_id, timeout=240)
    assert run["status"] == "COMPLETED", _story(d, run)
    statuses = [e["status"] for e in d.ctl_json("show", run_id)["history"]]
    assert statuses == ["QUEUED", "DOWNLOADING", "PROCESSING", "STORING", "COMPLETED"], statuses
    dest = tmp_path / "out"
    assert d.ctl("download", run_id, "--dest", str(dest)).returncode == 0
    out = json.loads((dest / "out.json").read_text())
    assert out["data"] == "4 5 6\n" and out["uid"] != 0
    assert out["LEARNER_ID"] == "1" and out["NUM_LEARNERS"] == "1" and out["MASTER_ADDR"] == ""
    assert "training on " + run_id in (dest / "training-log.txt").read_text()
    assert "training on " + run_id in d.ctl("logs", run_id).stdout
    job = _job_of(d, run_id)
    assert [j for j in slurm_jobs() if j.job_id == job][0].state in ("COMPLETING", "COMPLETED")


def _story(d: Dlaasd, run: dict) -> str:
    """What a failed assertion shows: the run, the daemon's log, the job's output."""
    out = _text(d.state / "runs" / run["id"] / "node" / "slurm.out")
    return f"{json.dumps(run, indent=1)}\n--- dlaasd\n{d.log_tail(60)}\n--- slurm.out\n{out}"


SIGTERM_AWARE = SIGTERM_AWARE_FOR.format(seconds=300)  # a cluster job starts slower


def _until_logged(d: Dlaasd, run_id: str, text: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in d.ctl("logs", run_id).stdout:
        assert time.monotonic() < deadline, _story(d, d.run(run_id))
        time.sleep(0.3)


def test_halt_reaches_the_training_as_sigterm_and_leaves_no_container(
    on_slurm, slurm, docker_client, tmp_path
):
    d = on_slurm()
    folder = model(tmp_path / "m", manifest("python3 train.py"), {"train.py": SIGTERM_AWARE})
    run_id = d.submit(folder)
    _until_logged(d, run_id, "training")
    # the node's report of the phase reaches dlaasd a poll after the log line
    d.wait(run_id, "PROCESSING", timeout=60)
    assert d.ctl("halt", run_id).returncode == 0
    run = d.wait(run_id, timeout=120)
    assert run["status"] == "HALTED", _story(d, run)
    assert "got SIGTERM, saving a checkpoint" in d.ctl("logs", run_id).stdout
    dest = tmp_path / "out"
    assert d.ctl("download", run_id, "--dest", str(dest)).returncode == 0
    assert (dest / "checkpoints" / "ckpt.txt").read_text() == "saved"
    assert _gone(docker_client, f"dlaas.run-id={run_id}"), "a container of the run is left"


def test_a_run_slurm_ends_at_its_time_limit_fails_with_the_timeout_code(
    on_slurm, docker_client, tmp_path
):
    """timeout 1s + time_margin 1s: Slurm's --time=1 (minutes), which Slurm enforces."""
    d = on_slurm()
    folder = model(tmp_path / "m", manifest("sleep 600", timeout="1s"))
    run_id = d.submit(folder)
    run = d.wait(run_id, timeout=300)
    assert (run["status"], run["error_code"]) == ("FAILED", "C203"), _story(d, run)
    job = _job_of(d, run_id)
    assert [j.state for j in slurm_jobs() if j.job_id == job] == ["TIMEOUT"]
    assert _gone(docker_client, f"dlaas.run-id={run_id}")


def test_two_learners_on_two_nodes_get_the_torchrun_variables_and_reach_each_other(
    on_slurm, tmp_path
):
    d = on_slurm()
    code = (
        "import os, socket, time\n"
        "keys = ('MASTER_ADDR', 'MASTER_PORT', 'WORLD_SIZE', 'RANK', 'NODE_RANK', "
        "'LEARNER_ID', 'NUM_LEARNERS')\n"
        "rank = os.environ['RANK']\n"
        "with open(os.path.join(os.environ['RESULT_DIR'], f'env-{rank}.txt'), 'w') as f:\n"
        "    f.write(''.join(f'{k}={os.environ[k]}\\n' for k in keys))\n"
        "addr, port = os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT'])\n"
        "if rank == '0':\n"
        "    c, _ = socket.create_server((addr, port)).accept()\n"
        "    print('rank 0 heard:', c.recv(100).decode(), flush=True)\n"
        "else:\n"
        "    for _ in range(600):\n"
        "        try:\n"
        "            c = socket.create_connection((addr, port)); break\n"
        "        except OSError: time.sleep(0.1)\n"
        "    c.sendall(b'hello from rank ' + rank.encode())\n"
    )
    folder = model(tmp_path / "m", manifest("python3 ddp.py", learners=2), {"ddp.py": code})
    run_id = d.submit(folder)
    run = d.wait(run_id, timeout=240)
    assert run["status"] == "COMPLETED", _story(d, run)
    dest = tmp_path / "out"
    assert d.ctl("download", run_id, "--dest", str(dest)).returncode == 0
    env0, env1 = (_text(dest / f"env-{r}.txt") for r in (0, 1))
    assert "RANK=0\nNODE_RANK=0\nLEARNER_ID=1\nNUM_LEARNERS=2\n" in env0
    assert "RANK=1\nNODE_RANK=1\nLEARNER_ID=2\nNUM_LEARNERS=2\n" in env1
    assert "WORLD_SIZE=2\n" in env0 and "MASTER_ADDR=127.0.0.1\n" in env0
    assert env0.split("RANK")[0] == env1.split("RANK")[0]  # the same master for both
    assert "rank 0 heard: hello from rank 1" in _text(dest / "training-log.txt")
    nodes = {Report.read(report_path(d.state / "runs" / run_id / "node", n)).node for n in (1, 2)}
    assert nodes == {"node1", "node2"}


def test_gpu_runs_get_the_gpus_slurm_assigned_and_no_others(on_slurm, tmp_path):
    """Three runs of one GPU each at once over two nodes of two: each sees exactly the
    GPU Slurm gave its job, and no two runs on one node share one."""
    d = on_slurm()
    code = (
        "import os, time\n"
        "open(os.path.join(os.environ['RESULT_DIR'], 'gpus.txt'), 'w')"
        ".write(os.environ['CUDA_VISIBLE_DEVICES'])\n"
        "time.sleep(8)\n"
    )
    runs = [
        d.submit(model(tmp_path / f"m{i}", manifest("python3 g.py", gpus=1), {"g.py": code}))
        for i in range(3)
    ]
    seen = set()
    for run_id in runs:
        run = d.wait(run_id, timeout=240)
        assert run["status"] == "COMPLETED", _story(d, run)
        report = Report.read(report_path(d.state / "runs" / run_id / "node", 1))
        dest = tmp_path / f"out-{run_id}"
        assert d.ctl("download", run_id, "--dest", str(dest)).returncode == 0
        assert len(report.gpus) == 1 and _text(dest / "gpus.txt") == report.gpus[0]
        seen.add((report.node, report.gpus[0]))
    assert len(seen) == 3  # they ran at once (8 s each): never one GPU twice


def test_a_daemon_killed_while_jobs_run_loses_and_duplicates_nothing(on_slurm, tmp_path):
    d = on_slurm()
    code = "import time\nprint('ran once', flush=True)\ntime.sleep(10)\n"
    runs = [
        d.submit(model(tmp_path / f"m{i}", manifest("python3 t.py"), {"t.py": code}))
        for i in range(3)
    ]
    _until_logged(d, runs[0], "ran once")
    d.kill()
    d.start()
    for run_id in runs:
        run = d.wait(run_id, timeout=240)
        assert run["status"] == "COMPLETED", _story(d, run)
        assert d.ctl("logs", run_id).stdout.count("ran once") == 1
        assert [j.run_id for j in slurm_jobs()].count(run_id) == 1  # submitted once


def test_the_ddp_example_trains_on_two_slurm_nodes(on_slurm, minio, tmp_path):
    """The same manifest as on the local executor: two learners, gloo, one per node."""
    upload_digits(minio)
    d = on_slurm()
    folder = tmp_path / "ddp"
    shutil.copytree(DDP, folder)
    check_ddp_run(d, d.submit(folder), tmp_path)


def test_a_run_slurm_holds_stays_queued_and_says_why(on_slurm, tmp_path):
    """Two learners of two GPUs take both nodes whole: a second such run waits, QUEUED,
    with Slurm's reason, and starts when the first ends."""
    d = on_slurm()
    big = manifest("sleep 12", learners=2, gpus=2, cpus=1)
    first = d.submit(model(tmp_path / "a", big))
    d.wait(first, "PROCESSING", timeout=120)
    second = d.submit(model(tmp_path / "b", big))
    deadline = time.monotonic() + 60
    # Slurm first says None (not looked at yet), then why: Resources
    while "Resources" not in d.run(second)["status_message"]:
        assert time.monotonic() < deadline, _story(d, d.run(second))
        time.sleep(0.2)
    run = d.run(second)
    assert run["status"] == "QUEUED", run
    assert run["status_message"].startswith("waiting in Slurm's queue (job "), run
    for run_id in (first, second):
        run = d.wait(run_id, timeout=240)
        assert run["status"] == "COMPLETED", _story(d, run)
