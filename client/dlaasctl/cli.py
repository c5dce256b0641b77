"""`dlaasctl`: the command line for dlaasd. Speaks JSON over the daemon's Unix socket.

Exit codes: 0 ok, 1 refused or failed, 2 usage, 3 daemon not reachable.

Modules only some commands need (fmt, zipfile, tqdm...) are imported inside them: scripts
call dlaasctl in loops, and its start time is most of a quick command's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

from .http import ApiError, Client, Unreachable, default_socket, start_hint


class Failed(Exception):
    """The command ran but its outcome is a failure (exit code 1)."""


def out_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def err(message: str) -> None:
    print(message, file=sys.stderr)


def q(value: str) -> str:
    return quote(value, safe="")


# --- runs -------------------------------------------------------------------------------


IN_MEMORY = 16 * 1024 * 1024  # model folders smaller than this are zipped in memory


def send_with_model(c: Client, path: str, fields: dict[str, bytes], model: Path, quiet: bool):
    """POST a form with the model code as a zip: a .zip as it is; a folder zipped, in
    memory when small (no temporary file), else into a temporary file removed after."""
    import zipfile  # imported where needed: dlaasctl starts faster

    if model.is_file():
        if not zipfile.is_zipfile(model):
            raise Failed(f"{model} is not a zip file; give a folder or a .zip")
        return c.multipart(path, fields, {"model": model})
    if not model.is_dir():
        raise Failed(f"no model code at {model}; give a folder or a .zip")
    files = []
    for dirpath, dirnames, filenames in os.walk(model):
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__"))
        files += [p for p in (Path(dirpath) / f for f in sorted(filenames)) if p.is_file()]
    small = sum(p.stat().st_size for p in files) < IN_MEMORY
    if small:
        import io

        target = io.BytesIO()
    else:
        import tempfile

        target = tempfile.NamedTemporaryFile(suffix=".zip", prefix="dlaas-model-")  # noqa: SIM115
    with target:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for p in files:
                zf.write(p, p.relative_to(model).as_posix())
        size = target.tell()
        if not quiet:
            from . import fmt

            err(f"model code: {model} ({len(files)} files, {fmt.size(size)} zipped)")
        target.flush()
        archive = target.getvalue() if small else Path(target.name)
        return c.multipart(path, fields, {"model": archive})


def manifest_file(path: Path) -> Path:
    """A manifest.yml, or the one in a folder."""
    manifest = path / "manifest.yml" if path.is_dir() else path
    if not manifest.is_file():
        raise Failed(f"no manifest at {path}; give the path of a manifest.yml (or its folder)")
    return manifest


def warn(result: dict) -> None:
    for warning in result.get("warnings", []):
        err(f"warning: {warning}")


def cmd_train(c: Client, a) -> int:
    manifest = manifest_file(Path(a.manifest))
    model = Path(a.model) if a.model else manifest.parent
    from .routes import SUBMIT

    result = send_with_model(
        c, SUBMIT.url(priority=a.priority), {"manifest": manifest.read_bytes()}, model, a.json
    )
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


def stream_log(c: Client, run_id: str, follow: bool, learner: int = 1, quiet: bool = False) -> None:
    """Print the log; when following, ride out a daemon restart (runs keep training while
    dlaasd is down) by reconnecting where the stream broke off."""
    offset, gave_up_at = 0, None
    while True:
        path = f"/v1/runs/{q(run_id)}/logs?follow={int(follow)}&learner={learner}&offset={offset}"
        try:
            for chunk in c.stream(path):
                offset, gave_up_at = offset + len(chunk), None
                if not quiet:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            return
        except Unreachable:
            if not follow:
                raise
            now = time.monotonic()
            if gave_up_at is None:
                gave_up_at = now + 120
                err("dlaasctl: the daemon went away; waiting for it to come back...")
            if now > gave_up_at:
                raise
            time.sleep(1)


def follow(c: Client, run_id: str, quiet: bool = False) -> int:
    """Stream the log until the run ends; 0 only if it COMPLETED."""
    stream_log(c, run_id, follow=True, quiet=quiet)
    run = c.json("GET", f"/v1/runs/{q(run_id)}")
    if quiet:
        out_json(run)
    else:
        err(_outcome_line(run))
    return 0 if run["status"] == "COMPLETED" else 1


def _outcome_line(run: dict) -> str:
    code = f" {run['error_code']}" if run.get("error_code") else ""
    msg = f": {run['status_message']}" if run.get("status_message") else ""
    return f"{run['id']} {run['status']}{code}{msg}"


def cmd_list(c: Client, a) -> int:
    from . import fmt

    params = {"limit": a.limit, "offset": a.offset}
    if a.status:
        params["status"] = a.status
    data = c.json("GET", f"/v1/runs?{urlencode(params)}")
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


def cmd_show(c: Client, a) -> int:
    from . import fmt

    run = c.json("GET", f"/v1/runs/{q(a.run)}")
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


def cmd_logs(c: Client, a) -> int:
    stream_log(c, a.run, a.follow, a.learner)
    return 0


def cmd_halt(c: Client, a) -> int:
    run = c.json("POST", f"/v1/runs/{q(a.run)}/halt")
    if a.json:
        out_json(run)
    else:
        print(f"{run['id']} {run['status']}: {run['status_message']}")
    return 0


def cmd_delete(c: Client, a) -> int:
    result = c.json("DELETE", f"/v1/runs/{q(a.run)}?purge={int(a.purge)}")
    if a.json:
        out_json(result)
    else:
        extra = f", {result['objects_removed']} objects removed from the store" if a.purge else ""
        print(f"{result['id']} deleted{extra}")
    return 0


def cmd_download(c: Client, a) -> int:
    kind = "definition" if a.definition else "results"
    listing = c.json("GET", f"/v1/runs/{q(a.run)}/{kind}")
    run_id = listing["id"]
    dest = Path(a.dest or (run_id + ("-definition" if a.definition else "")))
    if not listing["files"]:
        raise Failed(f"{run_id} has no {kind} yet")
    items = [
        (f"/v1/runs/{q(run_id)}/{kind}/{quote(f['path'])}", f["path"], f["size"])
        for f in listing["files"]
    ]
    written = fetch_all(c, items, dest, f"{run_id} {kind}", a.json)
    if a.json:
        out_json({"id": run_id, "from": listing["location"], "dest": str(dest), "files": written})
    else:
        print(f"{len(written)} files from {listing['location']} -> {dest}/")
    return 0


def fetch_all(
    c: Client, items: list[tuple[str, str, int]], dest: Path, desc: str, quiet: bool
) -> list[str]:
    """Download (url, relative path, size) items under `dest`, with a progress bar."""
    bar = _progress(sum(size for _, _, size in items), desc, quiet)
    written = []
    for url, rel, _ in items:
        target = _inside(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for chunk in c.stream(url):
                out.write(chunk)
                bar.update(len(chunk))
        written.append(str(target))
    bar.close()
    return written


def _inside(dest: Path, rel: str) -> Path:
    target = (dest / rel).resolve()
    if dest.resolve() not in target.parents:
        raise Failed(f"refusing to write {rel!r} outside {dest}")
    return target


class _NoBar:
    """Where tqdm is not installed (dlaasctl run by a system Python): no progress bar."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, quiet: bool):
    try:
        from tqdm import tqdm  # imported here: only the transfer commands need it
    except ImportError:
        return _NoBar()
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=True if quiet else None,
        file=sys.stderr,
        leave=False,
    )


def cmd_gpus(c: Client, a) -> int:
    from . import fmt

    data = c.json("GET", "/v1/gpus")
    if a.json:
        out_json(data)
        return 0
    if not data["gpus"]:
        print("no GPUs (no NVIDIA driver found); runs with `gpus: 0` still work")
        return 0
    rows = [
        (
            g["index"],
            g["uuid"],
            g["name"],
            fmt.size(g["memory_total"]),
            g["run"] or ("busy (not dlaasd)" if g["busy"] else "free"),
        )
        for g in data["gpus"]
    ]
    print(fmt.table(["#", "UUID", "NAME", "MEMORY", "USED BY"], rows))
    return 0


def cmd_status(c: Client, a) -> int:
    from . import fmt

    s = c.json("GET", "/v1/status")
    if a.json:
        out_json(s)
        return 0
    cap = s["capacity"]
    store = s["store"]
    ok = lambda v: "ok" if v else "PROBLEM"  # noqa: E731
    print(f"dlaasd {s['version']} (pid {s['pid']}), up {int(s['uptime_seconds'])}s")
    print(f"  state:    {s['state_dir']}")
    print(f"  socket:   {s['socket']}")
    print(f"  docker:   {ok(s['docker']['ok'])}: {s['docker']['detail']}")
    print(
        f"  store:    {ok(store['ok'])}: {store['mode']} at {store['endpoint']}"
        + ("" if store["ok"] else f" ({store['detail']})")
    )
    print(f"  gpus:     {s['gpus']['count']} ({s['gpus']['source']}), {cap['gpus_used']} in use")
    print(
        f"  capacity: {cap['cpus_used']:g}/{cap['cpus']:g} CPUs, "
        f"{fmt.size(cap['memory_used'])}/{fmt.size(cap['memory'])} memory in use"
    )
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s["runs"].items())) or "none"
    print(f"  runs:     {counts}")
    return 0


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def cmd_doctor(c: Client, a) -> int:
    """What is wrong, each with its fix. The daemon checks what it depends on; this side
    checks that the daemon can be reached at all."""
    try:
        checks = c.json("GET", "/v1/doctor")["checks"]
    except Unreachable as exc:
        detail = str(exc).splitlines()[0]
        denied = detail.startswith("permission denied")
        checks = [
            {
                "name": "daemon",
                "status": "fail",
                "detail": detail,
                "fix": "" if denied else _lower_first(start_hint(c.socket_path)),
            }
        ]
    else:
        checks.insert(
            0,
            {"name": "daemon", "status": "ok", "detail": f"answers on {c.socket_path}", "fix": ""},
        )
    if a.json:
        out_json({"checks": checks})
    else:
        for ch in checks:
            print(f"{ch['status'].upper():<5} {ch['name']}: {ch['detail']}")
            if ch["fix"] and ch["status"] != "ok":
                print(f"      fix: {ch['fix']}")
    return 1 if any(ch["status"] == "fail" for ch in checks) else 0


# --- metrics and experiments -------------------------------------------------------------


def cmd_metrics(c: Client, a) -> int:
    if a.follow:
        for line in _lines(c.stream(f"/v1/runs/{q(a.run)}/metrics?follow=1")):
            p = json.loads(line)
            if a.json:
                print(line, flush=True)
            else:
                print(f"step {p['step']:>6}  {p['name']}  {p['value']:.6g}", flush=True)
        return 0
    data = c.json("GET", f"/v1/runs/{q(a.run)}/metrics")
    run_id = data["id"]
    series: dict[str, list] = {}
    for p in data["points"]:
        series.setdefault(p["name"], []).append((p["step"], p["value"]))
    if a.plot:
        from .plots import plot_metrics

        plot_metrics(run_id, series, a.plot)
        err(f"wrote {a.plot}")
    if a.json:
        out_json(data)
    elif not series:
        print(f"{run_id} has reported no metrics (yet); see `evaluation_metrics` in the README")
    else:
        from . import fmt

        rows = [
            (
                name,
                len(pts),
                pts[-1][0],
                f"{pts[-1][1]:.6g}",
                f"{min(v for _, v in pts):.6g}",
                f"{max(v for _, v in pts):.6g}",
            )
            for name, pts in sorted(series.items())
        ]
        print(fmt.table(["METRIC", "POINTS", "LAST STEP", "LAST", "MIN", "MAX"], rows))
    return 0


def _lines(chunks) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line.decode() for line in complete if line)


def cmd_experiment_run(c: Client, a) -> int:
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
    model = Path(a.model) if a.model else path.parent
    if isinstance(spec, dict) and isinstance(spec.get("manifest"), str):
        manifest = manifest_file((path.parent / spec["manifest"]).resolve())
        fields["manifest"] = manifest.read_bytes()
        model = Path(a.model) if a.model else manifest.parent
    result = send_with_model(c, "/v1/experiments", fields, model, a.json)
    warn(result)
    if a.json:
        out_json(result)
    else:
        print(result["id"])
        err(f"{result['trials']} trials queued; see them: dlaasctl experiment show {result['id']}")
    return 0


def cmd_experiment_list(c: Client, a) -> int:
    from . import fmt

    data = c.json("GET", "/v1/experiments")
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


def cmd_experiment_show(c: Client, a) -> int:
    from . import fmt

    e = c.json("GET", f"/v1/experiments/{q(a.experiment)}?curves={int(bool(a.plot))}")
    if a.plot:
        from .plots import plot_experiment

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


def cmd_experiment_halt(c: Client, a) -> int:
    e = c.json("POST", f"/v1/experiments/{q(a.experiment)}/halt")
    if a.json:
        out_json(e)
    else:
        print(f"{e['id']} halting: {e['counts']}")
    return 0


# --- data in the object store ------------------------------------------------------------


def s3_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives an object uploaded with parts of `part_size`."""
    import hashlib

    digests = []
    with open(path, "rb") as f:
        while chunk := f.read(part_size):
            digests.append(hashlib.md5(chunk).digest())
    if len(digests) <= 1:
        return digests[0].hex() if digests else hashlib.md5(b"").hexdigest()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _split(target: str) -> tuple[str, str]:
    bucket, _, prefix = target.partition("/")
    return bucket, prefix


def listing(c: Client, bucket: str, prefix: str = "", missing_ok: bool = False) -> dict:
    """The objects under a prefix, the bucket's name in the store (a name S3 refuses is
    mapped, with a warning) and the part size the daemon uploads with."""
    query = {"prefix": prefix, **({"missing": "empty"} if missing_ok else {})}
    try:
        there = c.json("GET", f"/v1/data/{q(bucket)}?{urlencode(query)}")
    except ApiError as exc:
        if missing_ok and exc.status == 404:  # a daemon from before missing=empty
            return {"bucket": bucket, "objects": [], "part_size": 0}
        raise
    warn(there)
    return there


def cmd_data_upload(c: Client, a) -> int:
    prefix = a.prefix.strip("/") + "/" if a.prefix and a.prefix.strip("/") else ""
    plan: list[tuple[Path, str]] = []
    for raw in a.paths:
        p = Path(raw)
        if p.is_dir():
            plan += [
                (f, prefix + f.relative_to(p).as_posix())
                for f in sorted(p.rglob("*"))
                if f.is_file()
            ]
        elif p.is_file():
            plan.append((p, prefix + p.name))
        else:
            raise Failed(f"{raw}: no such file or folder")
    there = listing(c, a.bucket, prefix, missing_ok=True)
    objects = {o["key"]: o for o in there["objects"]}
    todo, skipped = [], []
    for path, key in plan:
        o = objects.get(key)
        if (
            o
            and o["size"] == path.stat().st_size
            and o["etag"] == s3_etag(path, there["part_size"])
        ):
            skipped.append(key)
        else:
            todo.append((path, key))
    stored = there.get("bucket", a.bucket)
    bar = _progress(sum(p.stat().st_size for p, _ in todo), f"upload to {stored}", a.json)
    for path, key in todo:
        c.upload(f"/v1/data/{q(a.bucket)}/{quote(key)}", path, progress=bar.update)
    bar.close()
    if a.json:
        out_json(
            {
                "bucket": stored,
                "requested": a.bucket,
                "uploaded": [k for _, k in todo],
                "skipped": skipped,
                "warnings": there.get("warnings", []),
            }
        )
    else:
        print(f"{len(todo)} uploaded, {len(skipped)} unchanged (skipped) -> s3://{stored}/{prefix}")
    return 0


def cmd_data_ls(c: Client, a) -> int:
    from . import fmt

    if not a.target:
        data = c.json("GET", "/v1/data")
        if a.json:
            out_json(data)
        else:
            for b in data["buckets"]:
                print(b["name"])
        return 0
    bucket, prefix = _split(a.target)
    data = listing(c, bucket, prefix)
    if a.json:
        out_json(data)
        return 0
    rows = [(o["key"], fmt.size(o["size"]), fmt.when(o["modified"])) for o in data["objects"]]
    where = f"{data.get('bucket', bucket)}/{prefix}"
    print(fmt.table(["KEY", "SIZE", "MODIFIED"], rows) if rows else f"(nothing under s3://{where})")
    return 0


def cmd_data_download(c: Client, a) -> int:
    bucket, prefix = _split(a.source)
    there = listing(c, bucket, prefix)
    objects = [o for o in there["objects"] if not o["dir"]]
    if not objects:
        raise Failed(f"nothing under s3://{there.get('bucket', bucket)}/{prefix}")
    items = [
        (
            f"/v1/data/{q(bucket)}/{quote(o['key'])}",
            o["key"][len(prefix) :].lstrip("/") or Path(o["key"]).name,  # a key asked by name
            o["size"],
        )
        for o in objects
    ]
    dest = Path(a.dest)
    stored = there.get("bucket", bucket)
    written = fetch_all(c, items, dest, f"download from {stored}", a.json)
    if a.json:
        out_json({"bucket": stored, "prefix": prefix, "dest": str(dest), "files": written})
    else:
        print(f"{len(written)} files -> {dest}/")
    return 0


def cmd_ui(c: Client, a) -> int:
    if a.daemon:  # the daemon's own dashboard: just this user's URL of it
        answer = c.json("GET", "/v1/dashboard")
        print(f"the daemon's dashboard, for {answer['user']}:\n    {answer['url']}")
        return 0
    c.json("GET", "/v1/health")  # no daemon: say so now, not in the browser
    from .ui.command import main  # aiohttp: only this command pays for importing it

    return main(c.socket_path, a.port, not a.no_browser)


# --- parser -------------------------------------------------------------------------------


def arg(*names: str, **kw) -> tuple:
    return names, kw


RUN = arg("run", help="run id (or a unique prefix)")
EXP = arg("experiment", metavar="EXP", help="experiment id (or a unique prefix)")
# command -> (function, help, arguments, takes --json); "group command" for data/experiment
COMMANDS: dict[str, tuple] = {
    "train": (
        cmd_train,
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
        True,
    ),
    "list": (
        cmd_list,
        "list runs, newest first",
        [
            arg("--status", help="only these statuses, e.g. QUEUED,PROCESSING"),
            arg("--limit", type=int, default=50),
            arg("--offset", type=int, default=0),
        ],
        True,
    ),
    "show": (cmd_show, "show one run", [RUN], True),
    "logs": (
        cmd_logs,
        "print a run's training log",
        [
            RUN,
            arg("--follow", "-f", action="store_true", help="keep streaming until the run ends"),
            arg("--learner", type=int, default=1, help="learner number, for multi-learner runs"),
        ],
        False,
    ),
    "halt": (cmd_halt, "halt a run (SIGTERM, then SIGKILL after a grace period)", [RUN], True),
    "delete": (
        cmd_delete,
        "forget a finished run and its local files",
        [RUN, arg("--purge", action="store_true", help="also remove its results from the store")],
        True,
    ),
    "download": (
        cmd_download,
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
        True,
    ),
    "metrics": (
        cmd_metrics,
        "a run's metrics: a table, a live stream, or a plot",
        [
            RUN,
            arg("--follow", "-f", action="store_true", help="print points as they come"),
            arg("--plot", metavar="FILE.png", help="draw each metric against the step"),
        ],
        True,
    ),
    "gpus": (cmd_gpus, "list the GPUs and the run using each", [], True),
    "status": (cmd_status, "the daemon's health: Docker, object store, GPUs, capacity", [], True),
    "doctor": (cmd_doctor, "check everything dlaasd needs; each problem with its fix", [], True),
    "ui": (
        cmd_ui,
        "the web dashboard on 127.0.0.1 (a URL with a token; pages update live)",
        [
            arg(
                "--port",
                type=int,
                help="listen on this port; 0: any free one (default: 8470 or the next free)",
            ),
            arg("--no-browser", action="store_true", help="print the URL, open no browser"),
            arg(
                "--daemon",
                action="store_true",
                help="print your URL of the dashboard the daemon serves (dashboard.address)",
            ),
        ],
        False,
    ),
    "experiment run": (
        cmd_experiment_run,
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
        True,
    ),
    "experiment list": (cmd_experiment_list, "list experiments", [], True),
    "experiment show": (
        cmd_experiment_show,
        "an experiment's trials, best first",
        [EXP, arg("--plot", metavar="FILE.png", help="draw every trial's objective curve")],
        True,
    ),
    "experiment halt": (
        cmd_experiment_halt,
        "halt every trial still queued or running",
        [EXP],
        True,
    ),
    "data upload": (
        cmd_data_upload,
        "upload files or folders (their contents) to a bucket; unchanged files are skipped",
        [
            arg("bucket"),
            arg("paths", nargs="+", metavar="PATH"),
            arg("--prefix", default="", help="put everything under this key prefix"),
        ],
        True,
    ),
    "data ls": (
        cmd_data_ls,
        "list buckets, or the objects under BUCKET[/PREFIX]",
        [arg("target", nargs="?", metavar="BUCKET[/PREFIX]")],
        True,
    ),
    "data download": (
        cmd_data_download,
        "download BUCKET[/PREFIX] into DEST",
        [arg("source", metavar="BUCKET[/PREFIX]"), arg("dest", metavar="DEST")],
        True,
    ),
}


def cmd_priority(c: Client, a) -> int:
    from .routes import SET_PRIORITY

    run = c.json("POST", SET_PRIORITY.url(id=a.run, priority=a.priority))
    if a.json:
        out_json(run)
    else:
        print(f"{run['id']}: priority {run['priority']}")
    return 0


def cmd_usage(c: Client, a) -> int:
    from .usage import cmd_usage as usage  # only this command needs csv

    return usage(c, a)


COMMANDS["priority"] = (
    cmd_priority,
    "change a waiting run's priority (root and the admin group); higher starts first",
    [RUN, arg("priority", type=int, metavar="N")],
    True,
)
COMMANDS["usage"] = (
    cmd_usage,
    "resources used by runs that ended: yours (root and the admin group: everyone's)",
    [
        arg("--since", help="ended at or after: 2026-11-01, 2026-11-30T12:00Z, or 7d ago"),
        arg("--until", help="ended before (same forms)"),
        arg("--by", choices=["owner", "day", "experiment", "framework"], default="owner"),
        arg("--csv", action="store_true", help="CSV of the groups and the total, in seconds"),
    ],
    True,
)
GROUPS = {"experiment": "hyperparameter sweeps", "data": "training data in the object store"}


def _common() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        # SUPPRESS: given before the command or after it, a subcommand must not reset it
        default=argparse.SUPPRESS,
        help="the daemon's socket (default: $DLAAS_SOCKET, then the "
        "user's and the system's usual places)",
    )
    jsonflag = argparse.ArgumentParser(add_help=False)
    jsonflag.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common, jsonflag


def _command_parser(name: str, target, common, jsonflag) -> argparse.ArgumentParser:
    fn, help, args, json_flag = COMMANDS[name]
    parents = [common, jsonflag] if json_flag else [common]
    if target is None:
        sp = argparse.ArgumentParser(prog=f"dlaasctl {name}", description=help, parents=parents)
    else:
        sp = target.add_parser(
            name.rpartition(" ")[2], help=help, description=help, parents=parents
        )
    for names, kw in args:
        sp.add_argument(*names, **kw)
    sp.set_defaults(fn=fn)
    return sp


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: for help and for usage errors."""
    common, jsonflag = _common()
    p = argparse.ArgumentParser(
        prog="dlaasctl", parents=[common], description="Submit and follow training runs on dlaasd."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name in COMMANDS:
        group = name.rpartition(" ")[0]
        if group and group not in groups:
            gp = sub.add_parser(group, help=GROUPS[group], parents=[common])
            groups[group] = gp.add_subparsers(
                dest=f"{group}_command", required=True, metavar="COMMAND"
            )
        _command_parser(name, groups[group] if group else sub, common, jsonflag)
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Only the parser of the command at hand (building all of them is a noticeable part
    of a quick command's time); the whole one for help and mistakes."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-h", "--help"):
        i += 2 if argv[i] == "--socket" else 1
    words = argv[i : i + 2]
    name = " ".join(words) if " ".join(words) in COMMANDS else (words[:1] or [""])[0]
    if name not in COMMANDS or "-h" in argv or "--help" in argv:
        return build_parser().parse_args(argv)
    rest = argv[:i] + argv[i + len(name.split()) :]
    return _command_parser(name, None, *_common()).parse_args(rest)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    socket = getattr(args, "socket", None)
    client = Client(Path(socket) if socket else default_socket())
    try:
        return args.fn(client, args)
    except Unreachable as exc:
        err(f"dlaasctl: {exc}")
        return 3
    except ApiError as exc:
        code = f" [{exc.code}]" if exc.code else ""
        err(f"dlaasctl: error{code}: {exc.message}")
        for p in exc.problems:
            where = p.get("field") or "(document)"
            if p.get("line"):
                where += f" (line {p['line']})"
            err(f"  - {where}: {p['message']}")
        warn({"warnings": exc.warnings})
        if getattr(args, "json", False):
            out_json(
                {
                    "error": {
                        "status": exc.status,
                        "code": exc.code,
                        "message": exc.message,
                        "problems": exc.problems,
                        "warnings": exc.warnings,
                    }
                }
            )
        return 1
    except Failed as exc:
        err(f"dlaasctl: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
