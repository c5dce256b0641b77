"""dlaasd.learners: a run's learner specs from its manifest, the one place for the
container's environment and isolation (the local executor and a cluster's node use it)."""

from __future__ import annotations

import subprocess

from dlaasd import config, learners, manifest, schema
from dlaasd.executors import Mount
from dlaasd.runfolder import OOM_MARK, RunFolder

CONTAINERS = schema.load(config.Config, schema.load_yaml(config.embedded_text())[0]).containers


def _manifest(**extra: object) -> manifest.Manifest:
    head = "name: t\nframework: {name: python, command: python3 train.py}\n"
    lines = "".join(f"{k}: {v}\n" for k, v in extra.items())
    return manifest.parse(head + lines)


def test_each_learner_gets_its_share_of_the_gpus_and_ffdls_variables(tmp_path):
    folder = RunFolder.of(tmp_path, "training-x")
    m = _manifest(learners=2, gpus=2, cpus=1.5, memory="2GiB", env="{PYTHONPATH: /mine}")
    gpus = ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]
    one, two = learners.specs("training-x", m, "img", folder, (1000, 1000), gpus, CONTAINERS)
    assert (one.gpus, two.gpus) == (("GPU-a", "GPU-b"), ("GPU-c", "GPU-d"))
    assert two.env["CUDA_VISIBLE_DEVICES"] == "GPU-c,GPU-d"
    assert (two.learner, two.learners, two.name) == (2, 2, "dlaas-training-x-2")
    assert one.name == "dlaas-training-x"
    assert two.env["LEARNER_ID"] == "2" and two.env["NUM_LEARNERS"] == "2"
    assert two.env["LOG_DIR"] == "/job/logs/learner-2" and one.env["LOG_DIR"] == "/job/logs"
    assert two.env["OMP_NUM_THREADS"] == "2"  # the CPU quota, rounded up
    assert two.env["PYTHONPATH"] == "/job/.dlaas:/mine"  # the helpers first
    assert (two.cpus, two.memory, two.user) == (1.5, 2 * 1024**3, "1000:1000")
    assert folder.learner_logs(2).is_dir()


def test_the_data_is_read_only_and_a_volume_takes_its_place(tmp_path):
    folder = RunFolder.of(tmp_path, "training-x")
    (spec,) = learners.specs("training-x", _manifest(), "img", folder, (1, 1), [], CONTAINERS)
    assert spec.mounts == (
        Mount(str(folder.job), "/job", False),
        Mount(str(folder.data), "/job/data", True),
    )
    assert not spec.network and not spec.gpus and spec.timeout == 0
    (spec,) = learners.specs(
        "training-x", _manifest(), "img", folder, (1, 1), [], CONTAINERS, tmp_path / "vol"
    )
    assert spec.mounts[1] == Mount(str(tmp_path / "vol"), "/job/data", True)


def test_simulated_gpus_are_named_but_not_given_to_the_runtime(tmp_path):
    folder = RunFolder.of(tmp_path, "training-x")
    m = _manifest(gpus=1, timeout="1h")
    (spec,) = learners.specs(
        "training-x", m, "img", folder, (1, 1), ["GPU-simulated-0"], CONTAINERS
    )
    assert spec.gpus == () and spec.env["CUDA_VISIBLE_DEVICES"] == "GPU-simulated-0"
    assert spec.timeout == 3600


def test_the_shell_logs_the_command_and_keeps_its_exit_code(tmp_path):
    script = learners.entrypoint("echo out; echo err >&2; exit 3")
    run = subprocess.run(script, env={"LOG_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 3
    assert (tmp_path / "training-log.txt").read_text() == "out\nerr\n"


def test_the_shell_notes_the_cgroups_oom_kills(tmp_path):
    """The count is read from the cgroup's memory.events (v2) or memory.oom_control (v1):
    here from files standing in for them."""
    v2, v1 = tmp_path / "memory.events", tmp_path / "memory.oom_control"
    script = learners.entrypoint("exit 137")
    script[2] = script[2].replace("/sys/fs/cgroup/memory.events", str(v2))
    script[2] = script[2].replace("/sys/fs/cgroup/memory/memory.oom_control", str(v1))
    env = {"LOG_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    mark = tmp_path / OOM_MARK

    assert subprocess.run(script, env=env).returncode == 137  # neither file: no mark
    assert not mark.exists()
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert subprocess.run(script, env=env).returncode == 137
    assert mark.read_text() == "2\n"
    mark.unlink()
    v2.write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n")  # v2 first: none there
    subprocess.run(script, env=env)
    assert not mark.exists()
    v2.write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    subprocess.run(script, env=env)
    assert mark.read_text() == "1\n"
