"""Runs: train, list, show, halt, delete, download, priority."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import routes
from ..console import Failed, err, out_json, warn
from ..http import Client
from . import RUN, Command, arg


def train(c: Client, a: argparse.Namespace) -> int:
    from ..transfer import manifest_file, send_with_model  # list and show start without them
    from .logs import follow

    manifest = manifest_file(Path(a.manifest))
    model = Path(a.model) if a.model else manifest.parent
    fields = {"manifest": manifest.read_bytes()}
    url = routes.SUBMIT.url(priority=a.priority)
    result = send_with_model(c, url, fields, model, a.json, sent=(manifest,))
    warn(result)
    if a.follow:  # with --json, only the final run is printed: one JSON document
        if not a.json:
            print(result["id"], flush=True)
        return follow(c, result["id"], quiet=a.json)
    if a.json:
        out_json(result)
    else:
        print(result["id"], flush=True)
    return 0


def list_runs(c: Client, a: argparse.Namespace) -> int:
    from .. import fmt

    data = c.call(routes.LIST_RUNS, limit=a.limit, offset=a.offset, status=a.status or None)
    if a.json:
        out_json(data)
        return 0
    rows = [
        (
            r["id"],
            r["name"],
            r["status"] + (f" {r['error_code']}" if r["error_code"] else ""),
            r["owner"],
            len(r["gpus"]) or "-",
            fmt.when(r["submitted"]),
            fmt.duration(r["started"], r["completed"]),
        )
        for r in data["runs"]
    ]
    if not rows:
        err(
            "no runs yet; submit one with `dlaasctl train examples/hello`"
            if data["total"] == 0
            else f"none of the {data['total']} runs match"
        )
        return 0
    print(fmt.table(["ID", "NAME", "STATUS", "OWNER", "GPUS", "SUBMITTED", "RAN"], rows))
    if data["total"] > len(rows) + a.offset:
        err(f"({len(rows)} of {data['total']}; see more with --limit or --offset)")
    return 0


def show(c: Client, a: argparse.Namespace) -> int:
    from .. import fmt

    run = c.call(routes.SHOW_RUN, id=a.run)
    if a.json:
        out_json(run)
        return 0
    status = run["status"] + (f" ({run['error_code']})" if run["error_code"] else "")
    st = run.get("staging") or {}
    fields = [
        ("id", run["id"]),
        ("name", run["name"]),
        ("status", status),
        ("message", run["status_message"]),
        ("owner", run["owner"]),
        ("framework", f"{run['framework']}  image {run['image']}"),
        (
            "resources",
            f"{run['cpus']:g} CPUs, {fmt.size(run['memory'])}, "
            f"GPUs: {', '.join(run['gpus']) or 'none'}",
        ),
        ("exit code", run["exit_code"]),
        ("submitted", run["submitted"]),
        ("started", run["started"]),
        ("completed", run["completed"]),
        ("ran for", fmt.duration(run["started"], run["completed"])),
        ("results", run["results"]),
        (
            "data in",
            f"{st.get('files_downloaded', 0)} files, {fmt.size(st.get('bytes_downloaded', 0))}"
            f" downloaded, {st.get('cache_hits', 0)} from cache",
        ),
        (
            "results out",
            f"{st.get('files_uploaded', 0)} files, {fmt.size(st.get('bytes_uploaded', 0))}",
        ),
    ]
    for b in run.get("buckets") or []:  # the manifest's name, and the store's if it differs
        stored = "" if b["store"] == b["manifest"] else f" (stored as {b['store']})"
        fields.append((f"{b['use']} bucket", f"{b['manifest']}{stored}"))
    if run.get("experiment_id"):
        fields.append(("experiment", run["experiment_id"]))
    u = run.get("usage")
    if u:  # allocated from allocation to results stored (so far, if it has not ended)
        fields.append(
            (
                "phases",
                f"waited {u['waiting_seconds']:g}s, staged in {u['staging_in_seconds']:g}s, "
                f"trained {u['training_seconds']:g}s, stored {u['storing_seconds']:g}s",
            )
        )
        used = u.get("cpu_used_seconds")
        fields.append(
            (
                "usage" if u["final"] else "usage so far",
                f"{u['gpu_seconds']:g} GPU-s, {u['cpu_seconds']:g} CPU-s, "
                f"{u['memory_gib_seconds']:g} GiB-s allocated"
                + (f"; used {used:g} CPU-s" if used is not None else "")
                + (
                    f", peak {fmt.size(u['memory_peak_bytes'])}"
                    if u.get("memory_peak_bytes") is not None
                    else ""
                )
                + (
                    f", GPU {u['gpu_utilization']:g}% busy"
                    if u.get("gpu_utilization") is not None
                    else ""
                ),
            )
        )
    if run.get("hyperparameters"):
        fields.append(("hyperparameters", json.dumps(run["hyperparameters"])))
    width = max(len(k) for k, _ in fields)
    for k, v in fields:
        print(f"{k.rjust(width)}: {v if v not in (None, '') else '-'}")
    if run.get("warnings"):
        print("\nwarnings at submit:")
        for w in run["warnings"]:
            print(f"  {w}")
    print("\nhistory:")
    for e in run["history"]:
        print(f"  {e['time']}  {e['status']:<11} {e['message']}")
    return 0


def halt(c: Client, a: argparse.Namespace) -> int:
    run = c.call(routes.HALT_RUN, id=a.run)
    if a.json:
        out_json(run)
    else:
        print(f"{run['id']} {run['status']}: {run['status_message']}")
    return 0


def delete(c: Client, a: argparse.Namespace) -> int:
    result = c.call(routes.DELETE_RUN, id=a.run, purge=int(a.purge))
    if a.json:
        out_json(result)
    else:
        extra = f", {result['objects_removed']} objects removed from the store" if a.purge else ""
        print(f"{result['id']} deleted{extra}")
    return 0


def priority(c: Client, a: argparse.Namespace) -> int:
    run = c.call(routes.SET_PRIORITY, id=a.run, priority=a.priority)
    if a.json:
        out_json(run)
    else:
        print(f"{run['id']}: priority {run['priority']}")
    return 0


def download(c: Client, a: argparse.Namespace) -> int:
    from ..transfer import fetch_all

    kind = "definition" if a.definition else "results"
    files, file = (
        (routes.DEFINITION, routes.DEFINITION_FILE)
        if a.definition
        else (routes.RESULTS, routes.RESULT_FILE)
    )
    listing = c.call(files, id=a.run)
    run_id = listing["id"]
    dest = Path(a.dest or (run_id + ("-definition" if a.definition else "")))
    if not listing["files"]:
        raise Failed(f"{run_id} has no {kind} yet")
    items = [(file.url(id=run_id, path=f["path"]), f["path"], f["size"]) for f in listing["files"]]
    written = fetch_all(c, items, dest, f"{run_id} {kind}", a.json)
    if a.json:
        out_json({"id": run_id, "from": listing["location"], "dest": str(dest), "files": written})
    else:
        print(f"{len(written)} files from {listing['location']} -> {dest}/")
    return 0


COMMANDS = {
    "train": Command(
        train,
        "submit a training run; prints its id",
        [
            arg("manifest", help="manifest.yml (or a folder holding one)"),
            arg(
                "model",
                nargs="?",
                help="model code: a folder or a .zip (default: the manifest's folder)",
            ),
            arg(
                "--follow",
                "-f",
                action="store_true",
                help="stream the log; exit 0 only if the run COMPLETED",
            ),
            arg(
                "--priority",
                type=int,
                help="higher starts first, within the range the config allows you",
            ),
        ],
    ),
    "list": Command(
        list_runs,
        "list runs, newest first",
        [
            arg("--status", help="only these statuses, e.g. QUEUED,PROCESSING"),
            arg("--limit", type=int, default=50),
            arg("--offset", type=int, default=0),
        ],
    ),
    "show": Command(show, "show one run", [RUN]),
    "halt": Command(halt, "halt a run (SIGTERM, then SIGKILL after a grace period)", [RUN]),
    "delete": Command(
        delete,
        "forget a finished run and its local files",
        [RUN, arg("--purge", action="store_true", help="also remove its results from the store")],
    ),
    "download": Command(
        download,
        "download a run's results (or its definition)",
        [
            RUN,
            arg("--dest", help="folder to write to (default: ./<run-id>)"),
            arg(
                "--definition",
                action="store_true",
                help="the submitted manifest and model code instead of the results",
            ),
        ],
    ),
    "priority": Command(
        priority,
        "change a waiting run's priority (root and the admin group); higher starts first",
        [RUN, arg("priority", type=int, metavar="N")],
    ),
}
