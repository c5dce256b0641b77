"""The daemon image (Dockerfile): built, run against the host's Docker Engine, one run.

Building takes minutes when nothing is cached (MinIO is compiled from source), so the
test that builds and runs the image only runs with DLAAS_TEST_DAEMON_IMAGE=1. It builds
with scripts/build-daemon-image, which reuses its base images and Docker's layer cache.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import docker
import pytest

from tests.harness import REPO, dlaasctl, short_tmp

IMAGE = os.environ.get("DLAAS_TEST_DAEMON_IMAGE_TAG", "dlaas/dlaasd:latest")

needs_image = pytest.mark.skipif(
    os.environ.get("DLAAS_TEST_DAEMON_IMAGE") != "1",
    reason="builds the daemon image (minutes when not cached): set DLAAS_TEST_DAEMON_IMAGE=1",
)

HELLO = """\
name: hello
framework:
  name: python
  version: "3"
  command: echo hello from the container
cpus: 0.5
memory: 256MiB
"""


def _pin(text: str, pattern: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no match for {pattern!r}"
    return found.group(1)


def test_dockerfile_builds_the_minio_that_install_minio_pins():
    """One MinIO for both ways of installing dlaasd (the build script passes the pin too)."""
    install = (REPO / "scripts" / "install-minio").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert _pin(dockerfile, r"^ARG MINIO_VERSION=(\S+)") == _pin(install, r"^MINIO_VERSION=(\S+)")
    assert _pin(dockerfile, r"^ARG MINIO_MODULE=(\S+)") == _pin(install, r"^MINIO_MODULE=(\S+)")


def ctl(socket: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real dlaasctl, on the host, against the daemon in the container."""
    return dlaasctl(*args, env={**os.environ, "DLAAS_SOCKET": str(socket)}, timeout=timeout)


def container_logs(name: str) -> str:
    r = subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True, text=True)
    return (r.stdout + r.stderr).strip()


@pytest.fixture(scope="module")
def daemon_image():
    """scripts/build-daemon-image: stand-in bases when no registry is reachable, reused."""
    args = [str(REPO / "scripts" / "build-daemon-image"), "--tag", IMAGE]
    if os.environ.get("DLAAS_TEST_PUBLIC_BASES") == "1":
        args.append("--public-bases")
    r = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    print(r.stdout)  # its timings, shown with -s or on failure
    assert r.returncode == 0, f"build-daemon-image failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return IMAGE


@pytest.fixture
def daemon_container(daemon_image, docker_client):
    """The image run as the README says: the host's Docker socket, the state folder at the
    same path inside and outside, the socket folder shared with the host."""
    root = short_tmp("dlaas-img-")
    state, run_dir = root / "state", root / "run"
    state.mkdir()
    run_dir.mkdir()
    name = f"dlaasd-test-{secrets.token_hex(4)}"
    r = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--init",
            "--label",
            "dlaas.test=daemon-image",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            f"{state}:{state}",
            "-v",
            f"{run_dir}:/run/dlaas",
            daemon_image,
            "--state-dir",
            str(state),
            "--socket",
            "/run/dlaas/dlaasd.sock",
            "--log-level",
            "debug",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"docker run failed: {r.stderr}"
    socket = run_dir / "dlaasd.sock"
    try:
        yield name, state, socket
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)
        # containers of runs the daemon left (a test that failed mid-run)
        for c in docker_client.containers.list(
            all=True, filters={"label": f"dlaas.daemon={state}"}
        ):
            c.remove(force=True)
        shutil.rmtree(root, ignore_errors=True)


@needs_image
@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_daemon_in_a_container_completes_a_run(daemon_container, tmp_path):
    name, state, socket = daemon_container

    deadline = time.monotonic() + 90
    while True:
        r = ctl(socket, "status", "--json", timeout=30)
        if r.returncode == 0:
            break
        assert r.returncode == 3, f"dlaasctl status: {r.returncode} {r.stderr}"
        assert time.monotonic() < deadline, f"no daemon on {socket}:\n{container_logs(name)}"
        time.sleep(0.2)
    status = json.loads(r.stdout)
    assert status["docker"]["ok"], status["docker"]
    assert status["store"]["ok"], status["store"]
    assert status["store"]["mode"] == "bundled"  # the MinIO inside the daemon's container
    assert status["state_dir"] == str(state)

    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "manifest.yml").write_text(HELLO)
    r = ctl(socket, "train", str(folder / "manifest.yml"), "--follow", timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{container_logs(name)}"
    run_id = r.stdout.strip().splitlines()[0]
    assert "hello from the container" in r.stdout

    r = ctl(socket, "show", run_id, "--json")
    assert r.returncode == 0, r.stderr
    run = json.loads(r.stdout)
    assert run["status"] == "COMPLETED", f"{run}\n{container_logs(name)}"
    assert run["exit_code"] == 0
    # The run folder the host's Docker Engine mounted is where the daemon wrote it.
    log = state / "runs" / run_id / "job" / "logs" / "training-log.txt"
    assert "hello from the container" in log.read_text()
    # The daemon's container stops cleanly on SIGTERM (docker stop).
    r = subprocess.run(["docker", "stop", name], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    exit_code = docker.from_env().containers.get(name).attrs["State"]["ExitCode"]
    assert exit_code == 0, container_logs(name)
