"""The Docker Engine killed while a run trains: the run ends clearly, with what it wrote
kept, and the queue goes on once the engine is back. (Marked `alone`: it restarts the
engine every other test uses, so it runs after all of them.)"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import docker
import pytest

from tests.harness import manifest, model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.needs_root,
    pytest.mark.alone,
    pytest.mark.skipif(
        Path("/run/systemd/system").exists() or not shutil.which("dockerd"),
        reason="restarts a dockerd started by hand (as scripts/setup does)",
    ),
]


def engine_up(timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            docker.from_env().ping()
            return
        except docker.errors.DockerException:
            time.sleep(0.5)
    raise AssertionError("the Docker Engine did not come back")


def test_docker_killed_mid_run(make_daemon, tmp_path):
    d = make_daemon()
    cmd = "echo started; echo partial > $RESULT_DIR/partial.txt; sleep 60"
    run_id = d.submit(model(tmp_path / "m", manifest(cmd)))
    d.wait(run_id, "PROCESSING")
    deadline = time.monotonic() + 30
    while "started" not in d.ctl("logs", run_id).stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["pkill", "-KILL", "-x", "dockerd"], check=False)
    subprocess.run(["pkill", "-KILL", "-x", "containerd"], check=False)
    try:
        time.sleep(3)
        run = d.run(run_id)
        assert run["status"] == "PROCESSING" and "Docker Engine" in run["status_message"]
        assert d.api.json("GET", "/v1/health")["status"] == "ok"  # the daemon keeps serving
    finally:
        with open("/var/log/dockerd.log", "ab") as log:
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
        engine_up()
    run = d.wait(run_id, timeout=120)
    assert run["status"] == "FAILED" and "Docker Engine stopped" in run["status_message"]
    out = tmp_path / "out"
    assert d.ctl("download", run_id, "--dest", str(out)).returncode == 0
    assert (out / "partial.txt").read_text() == "partial\n"
    assert "started" in (out / "training-log.txt").read_text()
    after = d.wait(d.submit(model(tmp_path / "n", manifest("echo fine"))))
    assert after["status"] == "COMPLETED"
