"""Runs of several learners on the local executor: the torchrun variables, a private
network of the run's own (no route out), and the DistributedDataParallel example."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.harness import REPO, manifest, model

pytestmark = pytest.mark.integration

DDP = REPO / "examples" / "digits-ddp"
DIGITS = REPO / "examples" / "digits-pytorch" / "data" / "digits.csv.gz"


def upload_digits(minio) -> None:
    client = minio.client()
    if not client.bucket_exists("digits-data"):
        client.make_bucket("digits-data")
    client.fput_object("digits-data", "digits.csv.gz", str(DIGITS))


def check_ddp_run(d, run_id: str, tmp_path: Path) -> None:
    """The example's run completed on two learners with a model that learned."""
    run = d.wait(run_id, timeout=280)
    assert run["status"] == "COMPLETED", (run, d.log_tail())
    dest = tmp_path / "out"
    assert d.ctl("download", run_id, "--dest", str(dest)).returncode == 0
    metrics = json.loads((dest / "metrics.json").read_text())
    assert metrics["learners"] == 2 and metrics["accuracy"] > 0.85, metrics
    log = (dest / "training-log.txt").read_text()
    assert (
        "rank 0 of 2" in log
        and "rank 1 of 2" in (dest / "learner-2" / "training-log.txt").read_text()
    )


def test_the_ddp_example_trains_on_two_local_learners(daemon, minio, tmp_path):
    upload_digits(minio)
    folder = tmp_path / "ddp"
    shutil.copytree(DDP, folder)
    check_ddp_run(daemon, daemon.submit(folder), tmp_path)


def test_learners_reach_each_other_on_their_own_network_with_no_route_out(daemon, tmp_path):
    code = (
        "import os, socket, time\n"
        "rank, addr, port = os.environ['RANK'], os.environ['MASTER_ADDR'], "
        "int(os.environ['MASTER_PORT'])\n"
        "print('torchrun', os.environ['WORLD_SIZE'], rank, os.environ['NODE_RANK'], addr, port)\n"
        "try:  # TEST-NET-1 (RFC 5737): no host answers there, and the run has no route\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=5)\n"
        "    print('route out: yes')\n"
        "except OSError:  # unreachable, or dropped on the way (an internal network)\n"
        "    print('route out: no')\n"
        "if rank == '0':\n"
        "    c, _ = socket.create_server(('', port)).accept()\n"
        "    print('rank 0 heard:', c.recv(100).decode(), flush=True)\n"
        "else:\n"
        "    for _ in range(600):\n"
        "        try:\n"
        "            c = socket.create_connection((addr, port)); break\n"
        "        except OSError: time.sleep(0.1)\n"
        "    c.sendall(b'hello from rank 1')\n"
    )
    run_id = daemon.submit(
        model(tmp_path / "m", manifest("python3 t.py", learners=2), {"t.py": code})
    )
    run = daemon.wait(run_id, timeout=120)
    assert run["status"] == "COMPLETED", (run, daemon.log_tail())
    logs = daemon.state / "runs" / run_id / "job" / "logs"
    first, second = (
        (logs / "training-log.txt").read_text(),
        (logs / "learner-2" / "training-log.txt").read_text(),
    )
    assert f"torchrun 2 0 0 dlaas-{run_id} 29500" in first
    assert f"torchrun 2 1 1 dlaas-{run_id} 29500" in second
    assert "rank 0 heard: hello from rank 1" in first
    assert "route out: no" in first and "route out: no" in second
