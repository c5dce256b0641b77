"""A cost that stays flat as history grows. With 10,000 finished runs in the history:
`dlaasctl list` (default page) and `show` latency as a ratio to the same with 10 runs
(target at most 3); the daemon's resident memory when idle (target at most 100 MB); and
a burst of 1,000 submissions from 10 clients at once, all accepted."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from benchmarks.common import ensure_image, object_store, parse, report
from dlaasd.database import Database, now
from tests.harness import Dlaasd, Minio, manifest, short_tmp

TARGET_RATIO = 3.0
TARGET_RSS_MB = 100
STATUSES = ("QUEUED", "DOWNLOADING", "PROCESSING", "STORING", "COMPLETED")


def seed(state: Path, n: int) -> list[str]:
    """n finished runs, as dlaasd writes them, straight into a stopped daemon's database."""
    store = Database(state / "dlaas.db")
    text = yaml.safe_dump(manifest("python3 train.py", name="seeded"))
    ids = [f"training-s{i:08d}" for i in range(n)]
    t = now()
    runs = [
        {
            "id": i,
            "name": f"seeded-{k}",
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
            "results": f"s3://dlaas-results/{i}/",
            "staging": "{}",
            "source": "api",
        }
        for k, i in enumerate(ids)
    ]
    events = [{"run_id": i, "time": t, "status": s, "message": ""} for i in ids for s in STATUSES]
    with store.db.conn:
        store.db["runs"].insert_all(runs, batch_size=1000)
        store.db["events"].insert_all(events, batch_size=5000)
    store.db.conn.close()
    return ids


def latency(fn, repeat: int) -> float:
    values = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return statistics.median(values)


def measure(daemon: Dlaasd, some_id: str, repeat: int) -> dict[str, float]:
    api = daemon.api
    cli = [sys.executable, "-m", "dlaasctl.cli"]

    def ctl(*args: str) -> None:
        subprocess.run([*cli, *args], env=daemon.env, check=True, stdout=subprocess.DEVNULL)

    return {
        # the same page size in both histories: what grows is the history, not the page
        "list_api": latency(lambda: api.json("GET", "/v1/runs?limit=10"), repeat * 5),
        "show_api": latency(lambda: api.json("GET", f"/v1/runs/{some_id}"), repeat * 5),
        "list_cli": latency(lambda: ctl("list"), repeat),
        "show_cli": latency(lambda: ctl("show", some_id), repeat),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def seeded_daemon(minio: Minio, n: int):
    root = short_tmp("dlaas-bench-scale-")
    daemon = Dlaasd(root, minio, log_level="warning", simulate_gpus=1)
    daemon.state.mkdir(parents=True)
    ids = seed(daemon.state, n)
    try:
        yield daemon.start(), ids
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
    big_n = 10_000
    with object_store() as minio:
        with seeded_daemon(minio, 10) as (small, ids):
            few = measure(small, ids[5], repeat)
        with seeded_daemon(minio, big_n) as (big, ids):
            many = measure(big, ids[big_n // 2], repeat)
            listed = big.api.json("GET", "/v1/runs")
            assert listed["total"] == big_n and len(listed["runs"]) == 50
            time.sleep(2)
            rss = rss_mb(big.proc.pid)
            accepted, errors, burst_s = burst(big, 10, 100)
            total = big.api.json("GET", "/v1/runs?limit=1")["total"]
            rss_after = rss_mb(big.proc.pid)
    ratios = {k: many[k] / few[k] for k in few}
    ratio = max(ratios["list_api"], ratios["show_api"], ratios["list_cli"], ratios["show_cli"])
    ok = ratio <= TARGET_RATIO and rss <= TARGET_RSS_MB and errors == 0 and accepted == 1000
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    report(
        "scale",
        [
            (
                "list 10, API (10 -> 10,000 runs)",
                f"{ms(few['list_api'])} -> {ms(many['list_api'])}",
            ),
            ("show, API", f"{ms(few['show_api'])} -> {ms(many['show_api'])}"),
            ("dlaasctl list (default page)", f"{ms(few['list_cli'])} -> {ms(many['list_cli'])}"),
            ("dlaasctl show", f"{ms(few['show_cli'])} -> {ms(many['show_cli'])}"),
            ("idle resident memory", f"{rss:.0f} MB (after the burst: {rss_after:.0f} MB)"),
            (
                "burst: 1,000 submissions, 10 clients",
                f"{accepted} accepted, {errors} errors, "
                f"{burst_s:.1f} s ({accepted / burst_s:.0f}/s); {total} runs in history",
            ),
        ],
        ratio,
        f"<= {TARGET_RATIO} (latency), <= {TARGET_RSS_MB} MB, 1000 accepted",
        ok,
        ratios={k: round(v, 3) for k, v in ratios.items()},
        rss_mb=round(rss, 1),
        burst_accepted=accepted,
        burst_errors=errors,
    )


if __name__ == "__main__":
    main()
