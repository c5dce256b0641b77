"""Experiments (hyperparameter sweeps): experiment run, list, show, halt."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import routes
from ..console import Failed, err, out_json, warn
from ..http import Client
from ..transfer import manifest_file, send_with_model
from . import EXP, Command, arg


def run(c: Client, a: argparse.Namespace) -> int:
    import yaml  # only this command reads YAML on this side: to find the manifest

    path = Path(a.file)
    if not path.is_file():
        raise Failed(f"no experiment file at {path}")
    text = path.read_bytes()
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError:
        spec = None  # the daemon says what is wrong, with the line
    fields = {"experiment": text}
    sent = [path]
    model = Path(a.model) if a.model else path.parent
    if isinstance(spec, dict) and isinstance(spec.get("manifest"), str):
        manifest = manifest_file((path.parent / spec["manifest"]).resolve())
        fields["manifest"] = manifest.read_bytes()
        sent.append(manifest)
        model = Path(a.model) if a.model else manifest.parent
    url = routes.CREATE_EXPERIMENT.url()
    result = send_with_model(c, url, fields, model, a.json, sent=tuple(sent))
    warn(result)
    if a.json:
        out_json(result)
    else:
        print(result["id"])
        err(f"{result['trials']} trials queued; see them: dlaasctl experiment show {result['id']}")
    return 0


def list_experiments(c: Client, a: argparse.Namespace) -> int:
    from .. import fmt

    data = c.call(routes.LIST_EXPERIMENTS)
    if a.json:
        out_json(data)
        return 0
    rows = [
        (
            e["id"],
            e["name"],
            e["status"],
            e["method"],
            e["trials"],
            f"{e['objective']['name']} ({e['objective']['goal']})",
            e["best_run"] or "-",
            "-" if e["best_value"] is None else f"{e['best_value']:.4g}",
            fmt.when(e["submitted"]),
        )
        for e in data["experiments"]
    ]
    if not rows:
        err(
            "no experiments yet; try `dlaasctl experiment run examples/sweep-digits/experiment.yml`"
        )
        return 0
    headers = [
        "ID",
        "NAME",
        "STATUS",
        "METHOD",
        "TRIALS",
        "OBJECTIVE",
        "BEST",
        "VALUE",
        "SUBMITTED",
    ]
    print(fmt.table(headers, rows))
    return 0


def show(c: Client, a: argparse.Namespace) -> int:
    from .. import fmt

    e = c.call(routes.SHOW_EXPERIMENT, id=a.experiment, curves=int(bool(a.plot)))
    if a.plot:
        from ..plots import plot_experiment

        plot_experiment(e, a.plot)
        err(f"wrote {a.plot}")
    if a.json:
        for trial in e["runs"]:
            trial.pop("curve", None)
        out_json(e)
        return 0
    goal = e["objective"]["goal"]
    print(f"{e['id']}  {e['name']}  {e['status']}  ({e['method']}, {e['trials']} trials)")
    print(
        f"objective: {e['objective']['name']} ({goal})"
        + (f", read from metric {e['objective']['metric']!r}" if e["objective"]["metric"] else "")
    )
    if e["best_run"]:
        hp = " ".join(f"{k}={v}" for k, v in e["best_hyperparameters"].items())
        print(f"best:      {e['best_run']}  {hp}  ->  {e['best_value']:.6g}")
    else:
        print("best:      - (no trial has reported the objective yet)")
    rows = []
    for rank, t in enumerate(e["runs"], 1):
        status = t["status"] + (" (stopped early)" if t["halted_early"] else "")
        if t["error_code"]:
            status += f" {t['error_code']}"
        value = "-" if t["objective_value"] is None else f"{t['objective_value']:.6g}"
        hp = " ".join(f"{k}={v}" for k, v in t["hyperparameters"].items())
        rows.append(
            (rank, t["id"], status, value, "-" if t["last_step"] is None else t["last_step"], hp)
        )
    print()
    print(
        fmt.table(
            ["#", "TRIAL", "STATUS", e["objective"]["name"].upper(), "STEP", "HYPERPARAMETERS"],
            rows,
        )
    )
    return 0


def halt(c: Client, a: argparse.Namespace) -> int:
    e = c.call(routes.HALT_EXPERIMENT, id=a.experiment)
    if a.json:
        out_json(e)
    else:
        print(f"{e['id']} halting: {e['counts']}")
    return 0


COMMANDS = {
    "experiment run": Command(
        run,
        "start an experiment; prints its id",
        [
            arg("file", metavar="FILE", help="the experiment file (YAML)"),
            arg(
                "model",
                nargs="?",
                metavar="MODEL_DIR",
                help="model code (default: the folder of the manifest it names)",
            ),
        ],
    ),
    "experiment list": Command(list_experiments, "list experiments"),
    "experiment show": Command(
        show,
        "an experiment's trials, best first",
        [EXP, arg("--plot", metavar="FILE.png", help="draw every trial's objective curve")],
    ),
    "experiment halt": Command(halt, "halt every trial still queued or running", [EXP]),
}
