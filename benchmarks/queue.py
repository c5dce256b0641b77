"""A long queue: 10,000 runs waiting. Two figures, each as a ratio to the same with 10
waiting, in one run:

- the scheduler's cost per decision: reading the queue from the database and placing
  (dlaasd.scheduler.plan), timed in this process on the daemon's own database with a
  history of 10,000 finished runs besides (the cost must not grow with the history);
- from submit to the container start of the last run of a burst: the burst's runs wait
  for the one GPU, which a long run holds; the last is a CPU-only run, which starts at
  once (it does not wait behind runs waiting for GPUs). The burst is 10,000 runs (500
  with --quick); before decisions read only the lines' heads, each submission's
  decision read the whole queue, and such a burst took over a quarter of an hour here.

Target: at most 2x the time at 10 for a decision."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import yaml

from benchmarks.common import ensure_image, object_store, parse, report
from benchmarks.scale import seed
from dlaasd.database import Database, now
from dlaasd.scheduler import Fairness, plan_lines
from tests.harness import Dlaasd, manifest

TARGET = 2.0
QUEUE = 10_000
BURST = 10_000


def queue_rows(db_path: Path, n: int) -> None:
    """n runs waiting for a GPU, as dlaasd queues them."""
    db = Database(db_path)
    text = yaml.safe_dump(manifest("true", name="queued", gpus=1, cpus=0.1))
    t = now()
    with db.db.conn:
        db.db["runs"].insert_all(
            (
                {
                    "id": f"training-q{i:08d}",
                    "name": f"queued-{i}",
                    "owner_uid": 0,
                    "owner_name": "root",
                    "status": "QUEUED",
                    "status_message": "queued",
                    "gpus": "[]",
                    "cpus": 0.1,
                    "memory": 1024**3,
                    "gpu_count": 1,
                    "gpu_type": "",
                    "learners": 1,
                    "manifest": text,
                    "submitted": t,
                    "priority": 0,
                    "source": "api",
                }
                for i in range(n)
            ),
            batch_size=1000,
        )
    db.db.conn.close()


def decision_seconds(db_path: Path, repeat: int) -> float:
    """Median seconds of one decision as the daemon makes it (fair share's aging off, the
    default): the queue's lines read, then placed (no GPU free)."""
    db = Database(db_path)
    values = []
    for _ in range(repeat):
        start = time.perf_counter()
        lines = db.queue_line(gpus=True), db.queue_line(gpus=False)  # as schedule_once
        plan_lines(*lines, [], 2.0, 8 * 1024**3, Fairness())
        for line in lines:
            line.close()
        values.append(time.perf_counter() - start)
    db.db.conn.close()
    return statistics.median(values)


def decision_cost(history: int, queue: int, repeat: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="dlaas-bench-queue-", dir="/dev/shm"))
    try:
        seed(root, history)
        queue_rows(root / "dlaas.db", queue)
        return decision_seconds(root / "dlaas.db", repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def last_start(minio, n: int) -> tuple[float, float]:
    """(seconds to submit the burst, seconds from the last run's submit to its start)."""
    root = Path(tempfile.mkdtemp(prefix="dlaas-bench-burst-", dir="/dev/shm"))
    daemon = Dlaasd(root, minio, log_level="warning", simulate_gpus=1)
    try:
        daemon.start()
        folder = root / "m"
        folder.mkdir()
        (folder / "manifest.yml").write_text(
            yaml.safe_dump(manifest("sleep 3600", name="holder", gpus=1, cpus=0.1))
        )
        daemon.wait(daemon.submit(folder), "PROCESSING")
        text = yaml.safe_dump(manifest("true", name="burst", gpus=1, cpus=0.1)).encode()
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda _: daemon.api.multipart("/v1/runs", {"manifest": text}, {}), range(n)
                )
            )
        submitted = time.perf_counter() - start
        last = yaml.safe_dump(manifest("true", name="last", cpus=0.1)).encode()
        at = time.time()
        run_id = daemon.api.multipart("/v1/runs", {"manifest": last}, {})["id"]
        run = daemon.wait(run_id, timeout=600)
        started = next(e["time"] for e in run["history"] if e["status"] == "PROCESSING")
        return submitted, stamp(started) - at
    finally:
        daemon.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    big = 1_000 if args.quick else QUEUE
    burst = 500 if args.quick else BURST
    repeat = 5 if args.quick else 20
    few = decision_cost(10_000, 10, repeat)
    many = decision_cost(10_000, big, repeat)
    short_history = decision_cost(10, big, repeat)
    with object_store() as minio:
        _, few_start = last_start(minio, 10)
        burst_s, many_start = last_start(minio, burst)
    ratio = many / few
    ms = lambda v: f"{v * 1000:.2f} ms"  # noqa: E731
    report(
        "queue",
        [
            (f"decision, 10 -> {big:,} queued", f"{ms(few)} -> {ms(many)}: {ratio:.1f}x"),
            (
                f"decision, {big:,} queued, history 10 -> 10,000",
                f"{ms(short_history)} -> {ms(many)}: {many / short_history:.2f}x",
            ),
            (f"burst of {burst:,} submitted in", f"{burst_s:.1f} s ({burst / burst_s:.0f}/s)"),
            (
                "last run's submit to start, 10 -> " + f"{burst:,} queued",
                f"{ms(few_start)} -> {ms(many_start)}: {many_start / few_start:.2f}x",
            ),
        ],
        ratio,
        f"<= {TARGET}x the decision at 10 queued",
        ratio <= TARGET,
        queue=big,
        decision_ms=round(many * 1000, 3),
        decision_ms_at_10=round(few * 1000, 3),
        history_ratio=round(many / short_history, 3),
        last_start_ratio=round(many_start / few_start, 3),
        last_start_s=round(many_start, 3),
        burst=burst,
        burst_per_s=round(burst / burst_s, 1),
    )


if __name__ == "__main__":
    main()
