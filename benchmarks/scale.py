"""A cost that stays flat as history grows. With 100,000 finished runs in the history:
`dlaasctl list` (default page) and `show` latency as a ratio to the same with 10 runs
(target at most 1.5); the daemon's resident memory when idle (target at most 80 MB); its
start-up time (to answering on its socket) as a ratio to the start with 10 runs (a start
reads what it must: the runs not ended, not the history); and a burst of 1,000
submissions from 10 clients at once, all accepted.

The state folders lie in /dev/shm (memory): making 100,000 run folders on a disk takes
minutes, in memory seconds. Both histories lie there alike, both daemons run at once,
and the calls to them take turns."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from benchmarks.common import ensure_image, object_store, parse, report
from dlaasd.database import Database, now
from tests.harness import Dlaasd, Minio, manifest

TARGET_RATIO = 1.5
TARGET_RSS_MB = 80
HISTORY = 100_000
STATUSES = ("QUEUED", "DOWNLOADING", "PROCESSING", "STORING", "COMPLETED")


def seed(state: Path, n: int) -> list[str]:
    """n finished runs, as dlaasd leaves them, straight into a stopped daemon's state: the
    database's rows and events, and each run's folder (its manifest and model archive,
    hard links to one copy: what start-up could visit is per file, not per byte)."""
    Database(state / "dlaas.db").db.conn.close()  # the schema, as dlaasd makes it
    vault = state / "secrets"  # this release's state: no older dlaasd's to upgrade
    vault.mkdir(mode=0o700)
    (vault / ".upgraded").touch(mode=0o600)
    text = yaml.safe_dump(manifest("python3 train.py", name="seeded"))
    ids = [f"training-s{i:08d}" for i in range(n)]
    t = now()
    template = state / "seed-template"
    template.mkdir()
    for name in ("manifest.yml", "model.zip"):
        (template / name).write_text(text)
    runs_dir = state / "runs"
    runs_dir.mkdir(mode=0o711, exist_ok=True)
    base, files = str(runs_dir), [str(template / n) for n in ("manifest.yml", "model.zip")]

    def folder(run_id: str) -> None:  # what start-up could visit: the folder, its files, job/
        root = f"{base}/{run_id}"
        os.makedirs(f"{root}/job", mode=0o700)
        for f in files:
            os.link(f, f"{root}/{os.path.basename(f)}")

    with ThreadPoolExecutor(8) as pool:  # mkdir waits on the file system's journal
        list(pool.map(folder, ids))
    shutil.rmtree(template)
    row = {
        "name": "",
        "description": "",
        "owner_uid": 0,
        "owner_name": "root",
        "status": "COMPLETED",
        "status_message": "training completed",
        "exit_code": 0,
        "gpus": "[]",
        "cpus": 1.0,
        "memory": 1024**3,
        "gpu_count": 0,
        "gpu_type": "",
        "learners": 1,
        "framework": "python 3",
        "image": "dlaas/python:bookworm",
        "manifest": text,
        "submitted": t,
        "started": t,
        "completed": t,
        "halt_requested": 0,
        "staging": "{}",
        "source": "api",
    }
    columns = ["id", "results", *row]
    runs = (
        (i, f"s3://dlaas-results/{i}/", *({**row, "name": f"seeded-{k}"}.values()))
        for k, i in enumerate(ids)
    )
    events = ((i, t, s, "") for i in ids for s in STATUSES)
    with sqlite3.connect(state / "dlaas.db") as db:
        marks = ", ".join("?" * len(columns))
        db.executemany(f"insert into runs ({', '.join(columns)}) values ({marks})", runs)
        db.executemany(
            "insert into events (run_id, time, status, message) values (?, ?, ?, ?)", events
        )
    db.close()
    return ids


def calls(daemon: Dlaasd, some_id: str) -> dict[str, Callable[[], object]]:
    api = daemon.api
    cli = [sys.executable, "-m", "dlaasctl.cli"]

    def ctl(*args: str) -> None:
        subprocess.run([*cli, *args], env=daemon.env, check=True, stdout=subprocess.DEVNULL)

    return {
        # the same page size in both histories: what grows is the history, not the page
        "list_api": lambda: api.json("GET", "/v1/runs?limit=10"),
        "show_api": lambda: api.json("GET", f"/v1/runs/{some_id}"),
        "list_cli": lambda: ctl("list"),
        "show_cli": lambda: ctl("show", some_id),
    }


def measure(
    small: dict[str, Callable[[], object]], big: dict[str, Callable[[], object]], repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds of each call to the two daemons, taking turns (the one that goes
    first alternates), so a load that comes and goes hits both alike."""
    few: dict[str, float] = {}
    many: dict[str, float] = {}
    for name in small:
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(repeat * 5 if name.endswith("_api") else repeat):
            for which in (0, 1) if i % 2 else (1, 0):
                fn = (small, big)[which][name]
                start = time.perf_counter()
                fn()
                times[which].append(time.perf_counter() - start)
        few[name], many[name] = statistics.median(times[0]), statistics.median(times[1])
    return few, many


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def seeded_daemon(minio: Minio, n: int):
    """A daemon with n finished runs, and the seconds its start took."""
    root = Path(tempfile.mkdtemp(prefix="dlaas-bench-scale-", dir="/dev/shm"))
    daemon = Dlaasd(root, minio, log_level="warning", simulate_gpus=1)
    daemon.state.mkdir(parents=True)
    ids = seed(daemon.state, n)
    try:
        start = time.perf_counter()
        daemon.start()
        started = time.perf_counter() - start
        yield daemon, ids, started
    finally:
        daemon.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def burst(daemon: Dlaasd, clients: int, each: int) -> tuple[int, int, float]:
    """(accepted, errors, seconds) for clients x each submissions at once. The runs wait
    for the one GPU, which a long run holds, so the burst measures acceptance only."""
    folder = daemon.root / "burst"
    folder.mkdir()
    holder = manifest("sleep 600", name="holder", gpus=1, cpus=0.1)
    (folder / "manifest.yml").write_text(yaml.safe_dump(holder))
    daemon.wait(daemon.submit(folder), "PROCESSING")
    text = yaml.safe_dump(manifest("true", name="burst", gpus=1, cpus=0.1)).encode()

    def client(_: int) -> tuple[int, int]:
        ok = errors = 0
        for _ in range(each):
            try:
                daemon.api.multipart("/v1/runs", {"manifest": text}, {})
                ok += 1
            except Exception:
                errors += 1
        return ok, errors

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    seconds = time.perf_counter() - start
    return sum(r[0] for r in results), sum(r[1] for r in results), seconds


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    repeat = 5 if args.quick else 20
    big_n = 10_000 if args.quick else HISTORY
    with (
        object_store() as minio,
        seeded_daemon(minio, 10) as (small, small_ids, small_start),
        seeded_daemon(minio, big_n) as (big, ids, big_start),
    ):
        few, many = measure(calls(small, small_ids[5]), calls(big, ids[big_n // 2]), repeat)
        listed = big.api.json("GET", "/v1/runs")
        assert listed["total"] == big_n and len(listed["runs"]) == 50
        time.sleep(2)
        rss = rss_mb(big.proc.pid)
        accepted, errors, burst_s = burst(big, 10, 100)
        total = big.api.json("GET", "/v1/runs?limit=1")["total"]
        rss_after = rss_mb(big.proc.pid)
    ratios = {k: many[k] / few[k] for k in few}
    ratio = max(ratios["list_api"], ratios["show_api"], ratios["list_cli"], ratios["show_cli"])
    start_ratio = big_start / small_start
    ok = (
        ratio <= TARGET_RATIO
        and start_ratio <= TARGET_RATIO
        and rss <= TARGET_RSS_MB
        and errors == 0
        and accepted == 1000
    )
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    h = f"{big_n:,}"
    report(
        "scale",
        [
            (f"list 10, API (10 -> {h} runs)", f"{ms(few['list_api'])} -> {ms(many['list_api'])}"),
            ("show, API", f"{ms(few['show_api'])} -> {ms(many['show_api'])}"),
            ("dlaasctl list (default page)", f"{ms(few['list_cli'])} -> {ms(many['list_cli'])}"),
            ("dlaasctl show", f"{ms(few['show_cli'])} -> {ms(many['show_cli'])}"),
            ("start-up, to answering", f"{ms(small_start)} -> {ms(big_start)}: {start_ratio:.2f}x"),
            ("idle resident memory", f"{rss:.0f} MB (after the burst: {rss_after:.0f} MB)"),
            (
                "burst: 1,000 submissions, 10 clients",
                f"{accepted} accepted, {errors} errors, "
                f"{burst_s:.1f} s ({accepted / burst_s:.0f}/s); {total:,} runs in history",
            ),
        ],
        ratio,
        f"<= {TARGET_RATIO} (latency, start-up), <= {TARGET_RSS_MB} MB, 1000 accepted",
        ok,
        history=big_n,
        ratios={k: round(v, 3) for k, v in ratios.items()},
        start_ratio=round(start_ratio, 3),
        start_s=round(big_start, 3),
        rss_mb=round(rss, 1),
        burst_accepted=accepted,
        burst_errors=errors,
    )


if __name__ == "__main__":
    main()
