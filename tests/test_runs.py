"""Runs end to end: the real daemon, over its socket, with real containers and MinIO."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import threading
import time
import zipfile

import pytest

from tests.harness import DockerGate, dlaasctl, manifest, model, no_daemon

pytestmark = pytest.mark.integration

# A training that saves a checkpoint when told to stop, else trains for {seconds}
SIGTERM_AWARE_FOR = """
import os, signal, sys, time
def stop(*_):
    print("got SIGTERM, saving a checkpoint", flush=True)
    open(os.path.join(os.environ["CHECKPOINT_DIR"], "ckpt.txt"), "w").write("saved")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("training", flush=True)
time.sleep({seconds})
"""
SIGTERM_AWARE = SIGTERM_AWARE_FOR.format(seconds=120)


def test_hello_completes_with_results_and_contract(daemon, tmp_path):
    code = """
import json, os
keys = ["JOB_STATE_DIR", "MODEL_DIR", "DATA_DIR", "RESULT_DIR", "CHECKPOINT_DIR", "LOG_DIR",
        "TRAINING_ID", "GPU_COUNT", "LEARNER_ID", "NUM_LEARNERS", "CUDA_VISIBLE_DEVICES",
        "GREETING"]
env = {k: os.environ.get(k) for k in keys}
env["cwd"] = os.getcwd()
env["uid"] = os.getuid()
print("hello from", env["TRAINING_ID"])
json.dump(env, open(os.path.join(os.environ["RESULT_DIR"], "env.json"), "w"))
"""
    folder = model(
        tmp_path / "m", manifest("python3 hello.py", env={"GREETING": "hi"}), {"hello.py": code}
    )
    r = daemon.ctl("train", str(folder / "manifest.yml"), "--follow")
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.splitlines()[0]
    assert run_id.startswith("training-")
    assert "hello from " + run_id in r.stdout
    assert "COMPLETED" in r.stderr

    run = daemon.ctl_json("show", run_id)
    for key in (
        "id",
        "name",
        "status",
        "error_code",
        "status_message",
        "gpus",
        "exit_code",
        "submitted",
        "started",
        "completed",
    ):
        assert key in run
    assert run["status"] == "COMPLETED" and run["exit_code"] == 0 and run["error_code"] is None
    assert [e["status"] for e in run["history"]] == [
        "QUEUED",
        "DOWNLOADING",
        "PROCESSING",
        "STORING",
        "COMPLETED",
    ]
    assert run["submitted"] <= run["started"] <= run["completed"]

    dest = tmp_path / "out"
    assert daemon.ctl("download", run_id, "--dest", str(dest)).returncode == 0
    env = json.loads((dest / "env.json").read_text())
    assert env["TRAINING_ID"] == run_id
    assert env["MODEL_DIR"] == env["cwd"] == "/job/model-code"
    assert env["JOB_STATE_DIR"] == "/job" and env["DATA_DIR"] == "/job/data"
    assert env["RESULT_DIR"] == "/job/results" and env["LOG_DIR"] == "/job/logs"
    assert env["LEARNER_ID"] == "1" and env["NUM_LEARNERS"] == "1" and env["GPU_COUNT"] == "0"
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["GREETING"] == "hi"
    assert env["uid"] != 0
    assert "hello from" in (dest / "training-log.txt").read_text()

    logs = daemon.ctl("logs", run_id)
    assert logs.returncode == 0 and "hello from " + run_id in logs.stdout
    listed = daemon.ctl_json("list")
    assert run_id in [r["id"] for r in listed["runs"]]
    assert run_id in daemon.ctl("list").stdout


def test_container_is_locked_down(daemon, tmp_path):
    cmd = (
        "id -u; grep CapEff /proc/self/status; ls /sys/class/net; "
        "grep NoNewPrivs /proc/self/status; touch /etc/x 2>&1 || echo no-root-write"
    )
    run_id = daemon.submit(model(tmp_path / "m", manifest(cmd)))
    assert daemon.wait(run_id)["status"] == "COMPLETED"
    out = daemon.ctl("logs", run_id).stdout.split()
    assert out[0] != "0"  # not root
    assert out[out.index("CapEff:") + 1] == "0000000000000000"  # no capabilities
    assert out[out.index("NoNewPrivs:") + 1] == "1"
    nets = out[out.index("0000000000000000") + 1 : out.index("NoNewPrivs:")]
    assert nets == ["lo"]  # no network
    assert "no-root-write" in out


def test_socket_is_not_world_accessible(daemon):
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode & 0o007 == 0, oct(mode)


def test_failing_command_is_c201_with_the_error(daemon, tmp_path):
    folder = model(tmp_path / "m", manifest("python3 -c 'import sys; print(1/0)'"))
    r = daemon.ctl("train", str(folder / "manifest.yml"), str(folder), "--follow")
    assert r.returncode == 1
    run = daemon.run(r.stdout.splitlines()[0])
    assert run["status"] == "FAILED" and run["error_code"] == "C201"
    assert run["exit_code"] == 1
    assert "ZeroDivisionError" in run["status_message"]
    assert "ZeroDivisionError" in r.stdout  # the log was streamed


def test_missing_command_is_c201(daemon, tmp_path):
    run_id = daemon.submit(model(tmp_path / "m", manifest("no-such-program --x")))
    run = daemon.wait(run_id)
    assert run["error_code"] == "C201" and run["exit_code"] == 127
    assert "not found" in run["status_message"]


def test_out_of_memory_is_c202(daemon, tmp_path):
    code = "x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))\n"
    run_id = daemon.submit(
        model(tmp_path / "m", manifest("python3 eat.py", memory="64MiB"), {"eat.py": code})
    )
    run = daemon.wait(run_id)
    assert run["status"] == "FAILED" and run["error_code"] == "C202", run
    assert "64.0MiB" in run["status_message"]


def test_timeout_is_c203(daemon, tmp_path):
    cmd = "echo started; sleep 60; echo ran-on"
    run_id = daemon.submit(model(tmp_path / "m", manifest(cmd, timeout="2s")))
    run = daemon.wait(run_id, timeout=120)
    assert run["status"] == "FAILED" and run["error_code"] == "C203", run
    assert "timed out" in run["status_message"]
    logs = daemon.ctl("logs", run_id).stdout
    assert "started" in logs and "ran-on" not in logs  # stopped, not waited for


def test_halt_sends_sigterm_and_keeps_what_was_saved(daemon, tmp_path):
    run_id = daemon.submit(
        model(tmp_path / "m", manifest("python3 train.py"), {"train.py": SIGTERM_AWARE})
    )
    daemon.wait(run_id, "PROCESSING")
    deadline = time.monotonic() + 30
    while "training" not in daemon.ctl("logs", run_id).stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    r = daemon.ctl("halt", run_id)
    assert r.returncode == 0, r.stderr
    run = daemon.wait(run_id, timeout=60)
    assert run["status"] == "HALTED"
    assert "got SIGTERM" in daemon.ctl("logs", run_id).stdout
    dest = tmp_path / "out"
    assert daemon.ctl("download", run_id, "--dest", str(dest)).returncode == 0
    assert (dest / "checkpoints" / "ckpt.txt").read_text() == "saved"
    # halting again is refused clearly
    again = daemon.ctl("halt", run_id)
    assert again.returncode == 1 and "already ended" in again.stderr


def test_halt_a_queued_run_and_delete(make_daemon, tmp_path):
    d = make_daemon(capacity={"cpus": 0.5})
    first = d.submit(model(tmp_path / "a", manifest("sleep 30")))
    second = d.submit(model(tmp_path / "b", manifest("true")))
    d.wait(first, "PROCESSING")
    assert d.run(second)["status"] == "QUEUED"
    assert d.ctl("halt", second).returncode == 0
    assert d.run(second)["status"] == "HALTED"
    refused = d.ctl("delete", first)
    assert refused.returncode == 1 and "halt it first" in refused.stderr
    assert d.ctl("halt", first).returncode == 0
    d.wait(first)
    assert d.ctl("delete", first).returncode == 0
    gone = d.ctl("show", first)
    assert gone.returncode == 1 and "no run" in gone.stderr
    assert not (d.state / "runs" / first).exists()


def test_fifo_on_simulated_gpus(make_daemon, tmp_path):
    d = make_daemon(simulate_gpus=2, capacity={"cpus": 2})
    cmd = "echo gpus=$CUDA_VISIBLE_DEVICES count=$GPU_COUNT; sleep 2"
    ids = [
        d.submit(model(tmp_path / f"m{i}", manifest(cmd, name=f"gpu{i}", gpus=1, cpus=0.1)))
        for i in range(3)
    ]
    runs = [d.wait(i, timeout=120) for i in ids]
    assert all(r["status"] == "COMPLETED" for r in runs), runs
    spans = []
    for r in runs:
        times = {e["status"]: e["time"] for e in r["history"]}
        spans.append((times["DOWNLOADING"], times["STORING"]))
        assert len(r["gpus"]) == 1 and r["gpus"][0].startswith("GPU-simulated")
        assert f"gpus={r['gpus'][0]} count=1" in d.ctl("logs", r["id"]).stdout
    assert [s[0] for s in spans] == sorted(s[0] for s in spans)  # started in submit order
    for t, _ in spans:  # never more than two holding a GPU at once
        assert sum(1 for s, e in spans if s <= t < e) <= 2
    assert spans[2][0] >= min(spans[0][1], spans[1][1])  # the third waited for a GPU
    gpus = d.ctl_json("gpus")["gpus"]
    assert len(gpus) == 2 and all(not g["busy"] for g in gpus)


def test_impossible_request_is_c104(make_daemon, tmp_path):
    d = make_daemon(simulate_gpus=2)
    folder = model(tmp_path / "m", manifest("true", gpus=3))
    r = d.ctl("train", str(folder / "manifest.yml"))
    assert r.returncode == 1
    assert "C104" in r.stderr and "gpus" in r.stderr and "3 GPU" in r.stderr
    folder = model(tmp_path / "n", manifest("true", memory="64GiB"))
    r = d.ctl("train", str(folder / "manifest.yml"))
    assert r.returncode == 1 and "C104" in r.stderr and "memory" in r.stderr
    assert d.ctl_json("list")["total"] == 0


def test_queued_runs_survive_a_restart(make_daemon, tmp_path):
    d = make_daemon(capacity={"cpus": 0.5})
    first = d.submit(model(tmp_path / "a", manifest("sleep 4")))
    second = d.submit(model(tmp_path / "b", manifest("echo second")))
    d.wait(first, "PROCESSING")
    d.stop()
    d.start()
    assert d.run(second)["status"] in (
        "QUEUED",
        "DOWNLOADING",
        "PROCESSING",
        "STORING",
        "COMPLETED",
    )
    assert d.wait(first)["status"] == "COMPLETED"
    assert d.wait(second)["status"] == "COMPLETED"
    assert "second" in d.ctl("logs", second).stdout


def test_daemon_killed_mid_run_finishes_the_run(make_daemon, tmp_path):
    code = """
import os, time
print("step 1", flush=True)
time.sleep(5)
print("step 2", flush=True)
open(os.path.join(os.environ["RESULT_DIR"], "model.txt"), "w").write("weights")
"""
    d = make_daemon()
    run_id = d.submit(model(tmp_path / "m", manifest("python3 train.py"), {"train.py": code}))
    d.wait(run_id, "PROCESSING")
    time.sleep(1)
    d.kill()
    time.sleep(1)
    d.start()
    run = d.wait(run_id, timeout=60)
    assert run["status"] == "COMPLETED", run
    log = d.ctl("logs", run_id).stdout
    assert "step 1" in log and "step 2" in log
    dest = tmp_path / "out"
    assert d.ctl("download", run_id, "--dest", str(dest)).returncode == 0
    assert (dest / "model.txt").read_text() == "weights"
    assert "event=reattach" in d.log.read_text()


def test_daemon_killed_between_create_and_start_trains_the_run(
    make_daemon, docker_client, tmp_path, monkeypatch
):
    """Docker answers a wait on a container that was only created with exit code 0: the
    restarted daemon must start the training, not report a success that never ran."""
    code = """
import os
print("trained for real", flush=True)
open(os.path.join(os.environ["RESULT_DIR"], "model.txt"), "w").write("weights")
"""
    d = make_daemon(start=False)
    killed = threading.Event()

    def kill_at_start(method: str, path: str) -> bool:
        if method == "POST" and re.search(r"/containers/[^/]+/start$", path):
            d.proc.kill()  # SIGKILL, and the start never reaches Docker
            killed.set()
            return False
        return True

    gate = DockerGate(d.root / "docker.sock", kill_at_start)
    monkeypatch.setenv("DOCKER_HOST", gate.url)
    d.start()
    run_id = d.submit(model(tmp_path / "m", manifest("python3 train.py"), {"train.py": code}))
    assert killed.wait(60), d.log_tail()
    d.proc.wait(timeout=10)
    gate.close()
    (container,) = docker_client.containers.list(
        all=True, filters={"label": f"dlaas.run-id={run_id}"}
    )
    assert container.status == "created"  # made, never started
    monkeypatch.delenv("DOCKER_HOST")
    d.start()
    run = d.wait(run_id, timeout=90)
    assert run["status"] == "COMPLETED" and run["exit_code"] == 0, run
    assert "trained for real" in d.ctl("logs", run_id).stdout
    dest = tmp_path / "out"
    assert d.ctl("download", run_id, "--dest", str(dest)).returncode == 0
    assert (dest / "model.txt").read_text() == "weights"


def test_follow_streams_while_it_runs(daemon, tmp_path):
    cmd = "for i in 1 2 3; do echo line $i; sleep 0.5; done"
    run_id = daemon.submit(model(tmp_path / "m", manifest(cmd)))
    r = daemon.ctl("logs", run_id, "--follow")
    assert r.returncode == 0
    assert r.stdout.split("\n")[:3] == ["line 1", "line 2", "line 3"]
    assert daemon.run(run_id)["status"] == "COMPLETED"


def test_bad_manifests_are_refused_and_the_daemon_keeps_serving(daemon, tmp_path):
    cases = {
        "framwork:\n  name: python\nname: x\n": ("framwork", "did you mean 'framework'"),
        "name: x\nframework: {name: python, version: '3'}\n": ("framework.command", "missing"),
        "name: x\nmemory: 12\nframework: {name: python, command: x}\n": ("memory", "unit"),
        "name: [\n": ("(line ", "YAML syntax error"),
        "name: x\nframework: {name: pytorchh, command: x}\n": (
            "framework.name",
            "did you mean 'pytorch'",
        ),
        "name: x\ngpus: two\nframework: {name: python, command: x}\n": ("gpus", "whole number"),
    }
    for i, (text, (field, words)) in enumerate(cases.items()):
        folder = model(tmp_path / f"bad{i}", text)
        r = daemon.ctl("train", str(folder / "manifest.yml"))
        assert r.returncode == 1, text
        assert field in r.stderr and words in r.stderr, r.stderr
        assert "C101" in r.stderr
    assert daemon.api.json("GET", "/v1/health")["status"] == "ok"


def test_bad_model_archive_is_c102(daemon, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../escape.py", "print('out')")
    archive = tmp_path / "model.zip"
    archive.write_bytes(buf.getvalue())
    folder = model(tmp_path / "m", manifest("true"))
    r = daemon.ctl("train", str(folder / "manifest.yml"), str(archive))
    assert r.returncode == 1
    assert "C102" in r.stderr and "escape.py" in r.stderr and ".." in r.stderr


def test_api_errors_are_json(daemon):
    from dlaasctl.http import ApiError

    for method, path, status, words in [
        ("GET", "/v1/nope", 404, "no such route"),
        ("GET", "/v1/runs?limit=abc", 400, "limit"),
        ("GET", "/v1/runs?status=DONE", 400, "DONE"),
        ("GET", "/v1/runs/training-doesnotexist", 404, "no run"),
        ("POST", "/v1/runs", 400, "multipart"),
        ("DELETE", "/v1/health", 405, "not allowed"),
    ]:
        with pytest.raises(ApiError) as info:
            daemon.api.json(method, path)
        assert info.value.status == status, path
        assert words in info.value.message, info.value.message
    doc = daemon.api.json("GET", "/v1/openapi.json")
    assert doc["openapi"].startswith("3.") and "/v1/runs/{id}/logs" in doc["paths"]


def test_unreachable_daemon_exits_3_with_a_hint(tmp_path):
    r = dlaasctl("list", env=no_daemon(tmp_path))
    assert r.returncode == 3
    assert "not reachable" in r.stderr and "dlaasd" in r.stderr
    assert dlaasctl("frobnicate", env=no_daemon(tmp_path)).returncode == 2


def test_daemon_stops_promptly_and_followers_ride_out_the_restart(
    make_daemon, docker_client, tmp_path
):
    import subprocess
    import sys

    d = make_daemon()
    cmd = "for i in $(seq 12); do echo line $i; sleep 1; done"
    run_id = d.submit(model(tmp_path / "m", manifest(cmd)))
    d.wait(run_id, "PROCESSING")
    follower = subprocess.Popen(
        [sys.executable, "-m", "dlaasctl.cli", "logs", run_id, "--follow"],
        env=d.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    d.stop()  # a run is training: the daemon must not wait for it (nor stop it)
    training = docker_client.containers.list(filters={"label": f"dlaas.run-id={run_id}"})
    assert [c.status for c in training] == ["running"]
    time.sleep(1)
    d.start()
    out, errs = follower.communicate(timeout=60)
    assert follower.returncode == 0, errs
    assert out.splitlines() == [f"line {i}" for i in range(1, 13)]  # each line exactly once
    assert "went away" in errs
    assert d.wait(run_id)["status"] == "COMPLETED"


def test_learners_run_side_by_side_and_one_failing_ends_all(daemon, tmp_path):
    cmd = 'echo "learner $LEARNER_ID of $NUM_LEARNERS"; touch $RESULT_DIR/from-$LEARNER_ID'
    run_id = daemon.submit(model(tmp_path / "ok", manifest(cmd, learners=2, cpus=0.2)))
    run = daemon.wait(run_id)
    assert run["status"] == "COMPLETED" and run["learners"] == 2
    assert "learner 1 of 2" in daemon.ctl("logs", run_id).stdout
    assert "learner 2 of 2" in daemon.ctl("logs", run_id, "--learner", "2").stdout
    out = tmp_path / "out"
    assert daemon.ctl("download", run_id, "--dest", str(out)).returncode == 0
    assert (out / "from-1").exists() and (out / "from-2").exists()
    assert (out / "learner-2" / "training-log.txt").exists()

    cmd = 'if [ "$LEARNER_ID" = 2 ]; then exit 4; fi; echo started; sleep 60; echo ran-on'
    run_id = daemon.submit(model(tmp_path / "bad", manifest(cmd, learners=2, cpus=0.2)))
    run = daemon.wait(run_id, timeout=120)
    assert run["status"] == "FAILED" and run["error_code"] == "C201" and run["exit_code"] == 4
    logs = daemon.ctl("logs", run_id).stdout
    assert "started" in logs and "ran-on" not in logs  # learner 1 was stopped, not waited for


def test_large_model_folder_goes_through_a_temporary_zip(daemon, tmp_path):
    folder = model(tmp_path / "m", manifest("wc -c < weights.bin"))
    (folder / "weights.bin").write_bytes(os.urandom(17 * 1024 * 1024))  # over the in-memory limit
    r = daemon.ctl("train", str(folder), "--follow")
    assert r.returncode == 0, r.stderr
    assert str(17 * 1024 * 1024) in r.stdout
    assert "17.0MiB zipped" in r.stderr
