"""Metrics while runs train, and experiments: sweeps, ranking, ASHA, bad files."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.harness import manifest, model
from tests.unit.tb_writer_snippet import tfevent_record

pytestmark = pytest.mark.integration

EMETRICS = """
import json, os, time
path = os.path.join(os.environ["LOG_DIR"], "evaluation-metrics.txt")
for step in range(1, 7):
    line = {"meta": {"time": int(time.time() * 1000)}, "grouplabel": "test",
            "etimes": {"iteration": {"type": "INT", "value": step}},
            "values": {"loss": {"type": "FLOAT", "value": 1.0 / step},
                       "accuracy": {"type": "FLOAT", "value": 0.1 * step}}}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\\n")
    time.sleep(0.7)
"""

LOGGED = """
import time
for epoch in range(1, 7):
    print(f"epoch {epoch} loss={1.0 / epoch:.4f} noise", flush=True)
    time.sleep(0.7)
"""

TENSORBOARD = (
    inspect.getsource(tfevent_record)
    + """
import os, time
folder = os.path.join(os.environ["LOG_DIR"], "tb")
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "events.out.tfevents.1.test"), "ab") as f:
    for step in range(1, 7):
        f.write(tfevent_record(step, "loss", 1.0 / step, time.time()))
        f.flush()
        time.sleep(0.7)
"""
)


def points_while_training(d, run_id: str) -> list[dict]:
    """Metric points seen while the run was still PROCESSING."""
    d.wait(run_id, "PROCESSING")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = d.api.json("GET", f"/v1/runs/{run_id}/metrics")
        if data["points"] and d.run(run_id)["status"] == "PROCESSING":
            return data["points"]
        time.sleep(0.2)
    raise AssertionError("no metrics while the run trained")


@pytest.mark.parametrize(
    "source, code, metrics, name",
    [
        ("emetrics", EMETRICS, None, "test.loss"),
        (
            "log",
            LOGGED,
            {"type": "log", "pattern": r"epoch (?P<epoch>\d+) loss=(?P<loss>[0-9.]+)"},
            "loss",
        ),
        ("tensorboard", TENSORBOARD, {"type": "tensorboard", "in": "$LOG_DIR/tb"}, "loss"),
    ],
)
def test_metrics_are_read_while_the_run_trains(daemon, tmp_path, source, code, metrics, name):
    extra = {"evaluation_metrics": metrics} if metrics else {}
    run_id = daemon.submit(
        model(tmp_path / "m", manifest("python3 train.py", **extra), {"train.py": code})
    )
    early = points_while_training(daemon, run_id)
    assert 1 <= len([p for p in early if p["name"] == name]) < 6
    assert daemon.wait(run_id)["status"] == "COMPLETED"
    points = [
        p
        for p in daemon.api.json("GET", f"/v1/runs/{run_id}/metrics")["points"]
        if p["name"] == name
    ]
    assert [p["step"] for p in points] == [1, 2, 3, 4, 5, 6]
    assert points[-1]["value"] == pytest.approx(1 / 6, rel=1e-3)
    table = daemon.ctl("metrics", run_id)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.strip()}
    assert rows[name][1:3] == ["6", "6"], table.stdout  # six points, the last at step 6
    plot = tmp_path / "metrics.png"
    assert daemon.ctl("metrics", run_id, "--plot", str(plot)).returncode == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # kept with the results too
    out = tmp_path / "out"
    assert daemon.ctl("download", run_id, "--dest", str(out)).returncode == 0
    saved = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [p["step"] for p in saved if p["name"] == name] == [1, 2, 3, 4, 5, 6]


def test_metrics_follow_streams_until_the_end(daemon, tmp_path):
    run_id = daemon.submit(
        model(tmp_path / "m", manifest("python3 train.py"), {"train.py": EMETRICS})
    )
    daemon.wait(run_id, "PROCESSING")
    r = daemon.ctl("metrics", run_id, "--follow", "--json", timeout=120)
    assert r.returncode == 0
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len([p for p in lines if p["name"] == "test.accuracy"]) == 6


TRIAL = """
import json, os, time
q = float(os.environ["quality"])
config = json.load(open("config.json"))
assert config["quality"] == q, config
print("trial", os.environ["SUBID"], "quality", q, flush=True)
for step in range(1, STEPS + 1):
    line = {"grouplabel": "test", "etimes": {"iteration": {"value": step}},
            "values": {"score": {"value": q * step}}}
    with open(os.path.join(os.environ["LOG_DIR"], "evaluation-metrics.txt"), "a") as f:
        f.write(json.dumps(line) + "\\n")
    time.sleep(PAUSE)
"""


def sweep(tmp_path, method, goal="maximize", values=(1, 3, 2), steps=3, pause=0.2) -> str:
    folder = model(
        tmp_path / "code",
        manifest("python3 trial.py", cpus=0.5),
        {"trial.py": TRIAL.replace("STEPS", str(steps)).replace("PAUSE", str(pause))},
    )
    spec = {
        "name": "quality-sweep",
        "manifest": "manifest.yml",
        "hyper_parameters": [{"name": "quality", "double_values": list(values)}],
        "method": method,
        "objective": {"name": "score", "maximize_or_minimize": goal},
    }
    (folder / "experiment.yml").write_text(yaml.safe_dump(spec))
    return str(folder / "experiment.yml")


def finished(d, exp_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        e = d.ctl_json("experiment", "show", exp_id)
        if e["status"] not in ("QUEUED", "PROCESSING"):
            return e
        time.sleep(0.5)
    raise AssertionError(f"{exp_id} did not finish: {e}")


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_grid_sweep_ranks_trials_by_the_objective(daemon, tmp_path, goal):
    r = daemon.ctl("experiment", "run", sweep(tmp_path, "grid", goal))
    assert r.returncode == 0, r.stderr
    exp_id = r.stdout.strip()
    assert exp_id.startswith("experiment-")
    e = finished(daemon, exp_id)
    assert e["status"] == "COMPLETED" and e["trials"] == 3
    for key in ("id", "name", "status", "objective", "best_run", "runs"):
        assert key in e
    assert e["objective"]["name"] == "score" and e["objective"]["goal"] == goal
    order = [t["hyperparameters"]["quality"] for t in e["runs"]]
    assert order == ([3, 2, 1] if goal == "maximize" else [1, 2, 3])
    assert e["best_run"] == e["runs"][0]["id"]
    assert e["runs"][0]["objective_value"] == pytest.approx(order[0] * 3)
    for t in e["runs"]:
        assert t["status"] == "COMPLETED" and set(t) >= {
            "id",
            "status",
            "hyperparameters",
            "objective_value",
        }
    table = daemon.ctl("experiment", "show", exp_id)
    assert (
        table.stdout.index("quality=3") < table.stdout.index("quality=1")
        if goal == "maximize"
        else table.stdout.index("quality=1") < table.stdout.index("quality=3")
    )
    plot = tmp_path / "sweep.png"
    assert daemon.ctl("experiment", "show", exp_id, "--plot", str(plot)).returncode == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert exp_id in daemon.ctl("experiment", "list").stdout
    trial = daemon.run(e["runs"][0]["id"])
    assert trial["experiment_id"] == exp_id and trial["hyperparameters"] == {"quality": order[0]}


def test_random_sweep_with_a_seed(daemon, tmp_path):
    method = {"name": "random", "num_trials": 2, "seed": 3}
    first = daemon.ctl_json("experiment", "run", sweep(tmp_path / "a", method))
    second = daemon.ctl_json("experiment", "run", sweep(tmp_path / "b", method))
    hps = [[daemon.run(r)["hyperparameters"] for r in x["runs"]] for x in (first, second)]
    assert hps[0] == hps[1] and len(hps[0]) == 2
    for x in (first, second):
        assert finished(daemon, x["id"])["status"] == "COMPLETED"


def test_asha_stops_the_weak_trials_and_keeps_the_best(make_daemon, tmp_path):
    d = make_daemon(capacity={"cpus": 1})  # two trials at a time
    # asha over a grid, in this order: the best trials first, the weak ones reach a rung later
    method = {"name": "asha", "reduction_factor": 2, "min_steps": 2}
    spec = sweep(tmp_path, method, values=(5, 4, 3, 2, 1), steps=12, pause=0.5)
    exp_id = d.ctl_json("experiment", "run", spec)["id"]
    e = finished(d, exp_id, timeout=300)
    by_q = {t["hyperparameters"]["quality"]: t for t in e["runs"]}
    assert e["best_run"] == by_q[max(by_q)]["id"]
    assert by_q[max(by_q)]["status"] == "COMPLETED"
    early = [t for t in e["runs"] if t["halted_early"]]
    assert len(early) >= 2, e["runs"]
    for t in early:
        assert t["status"] == "HALTED" and "stopped early by asha" in t["status_message"]
        assert t["last_step"] < 12
    assert "stopped early" in d.ctl("experiment", "show", exp_id).stdout
    assert "stopped early by asha" in d.ctl("show", early[0]["id"]).stdout


def test_bad_experiment_files_are_refused(daemon, tmp_path):
    folder = model(tmp_path / "code", manifest("true"))
    (folder / "experiment.yml").write_text(
        "name: bad\nmanifest: manifest.yml\nhyperparameters: []\nmethod: gird\n"
        "objective: {name: score, maximize_or_minimize: up}\n"
    )
    r = daemon.ctl("experiment", "run", str(folder / "experiment.yml"))
    assert r.returncode == 1
    for words in (
        "C101",
        "hyperparameters",
        "did you mean 'hyper_parameters'",
        "method.name",
        "did you mean 'grid'",
        "maximize_or_minimize",
    ):
        assert words in r.stderr, r.stderr
    (folder / "broken.yml").write_text(
        "name: x\nmanifest: manifest.yml\nhyper_parameters: [{name: a, int_values: [1]}]\n"
        "method: grid\nobjective: {name: s}\n"
    )
    (folder / "manifest.yml").write_text("name: x\nframework: {name: python}\n")
    r = daemon.ctl("experiment", "run", str(folder / "broken.yml"))
    assert r.returncode == 1 and "framework.command" in r.stderr
    # the trials' data bucket is missing: refused before anything is kept, no empty experiment
    data = {"type": "s3_datastore", "training_data": {"container": "no-such-bucket"}}
    (folder / "manifest.yml").write_text(
        yaml.safe_dump(manifest("true", data_stores=[{"id": "s", **data}]))
    )
    r = daemon.ctl("experiment", "run", str(folder / "broken.yml"))
    assert r.returncode == 1 and "'no-such-bucket' does not exist" in r.stderr, r.stderr
    assert "x" not in [e["name"] for e in daemon.ctl_json("experiment", "list")["experiments"]]
    assert daemon.api.json("GET", "/v1/health")["status"] == "ok"


def test_halting_an_experiment_halts_its_trials(daemon, tmp_path):
    spec = sweep(tmp_path, "grid", values=(1, 2, 3), steps=100, pause=0.5)
    exp_id = daemon.ctl_json("experiment", "run", spec)["id"]
    deadline = time.monotonic() + 60
    while daemon.ctl_json("experiment", "show", exp_id)["status"] != "PROCESSING":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert daemon.ctl("experiment", "halt", exp_id).returncode == 0
    e = finished(daemon, exp_id, timeout=120)
    assert e["status"] == "HALTED"
    assert all(t["status"] == "HALTED" for t in e["runs"])


def test_emetrics_helper_is_on_the_path(daemon, tmp_path):
    code = (
        "from dlaas_emetrics import report\n"
        "for step in (1, 2):\n    report(step=step, accuracy=0.5 * step)\n"
    )
    run_id = daemon.submit(model(tmp_path / "m", manifest("python3 t.py"), {"t.py": code}))
    assert daemon.wait(run_id)["status"] == "COMPLETED", daemon.ctl("logs", run_id).stdout
    points = daemon.api.json("GET", f"/v1/runs/{run_id}/metrics")["points"]
    assert [(p["step"], p["name"], p["value"]) for p in points] == [
        (1, "test.accuracy", 0.5),
        (2, "test.accuracy", 1.0),
    ]


def test_cli_without_plot_dependencies_still_starts():
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import dlaasctl.cli"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "matplotlib" not in r.stderr and "yaml" not in r.stderr


def test_experiment_trials_use_the_mapped_buckets(daemon, minio, tmp_path):
    data = tmp_path / "seen.txt"
    data.write_text("sweep data")
    assert daemon.ctl("data", "upload", "Sweep_Data", str(data)).returncode == 0
    store = {
        "id": "s",
        "type": "mount_cos",
        "training_data": {"container": "Sweep_Data"},
        "training_results": {"container": "Sweep_Results"},
    }
    command = 'cp "$DATA_DIR/seen.txt" "$RESULT_DIR/seen-$SUBID.txt"'
    folder = model(tmp_path / "code", manifest(command, data_stores=[store]))
    (folder / "experiment.yml").write_text(
        "name: mapped\nmanifest: manifest.yml\n"
        "hyper_parameters: [{name: a, int_values: [1, 2]}]\nmethod: grid\n"
        "objective: {name: score, maximize_or_minimize: maximize}\n"
    )
    created = daemon.ctl_json("experiment", "run", str(folder / "experiment.yml"))
    assert any("'Sweep_Data' is stored as 'sweep-data'" in w for w in created["warnings"])
    assert any("'Sweep_Results' is stored as 'sweep-results'" in w for w in created["warnings"])
    for i, run_id in enumerate(created["runs"]):
        assert daemon.wait(run_id)["status"] == "COMPLETED"
        obj = minio.client().get_object("sweep-results", f"{run_id}/seen-{i}.txt")
        assert obj.read() == b"sweep data"
