"""The Slurm executor against a real Slurm cluster (tests/slurm_testbed.py): munged,
slurmctld and two slurmd on this machine, real Docker, real MinIO, the real daemon."""

from __future__ import annotations

import time

import docker

from tests.harness import PYTHON_IMAGE
from tests.slurm_testbed import LABEL_SLURM_JOB


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
