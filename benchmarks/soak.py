"""Soak: many short runs, with random halts, deletes (some with --purge) and daemon
restarts (SIGTERM or SIGKILL) in between; the daemon's open files, threads and memory
(RSS) are read from /proc whenever the queue is idle, so that samples compare alike.

Within each life of the daemon (restarts start a fresh process), after a warm-up, the
figures must stay flat: open files and threads back where they were (within 3), RSS at
most 1.25x its first idle sample. The ratio is the largest RSS growth of a life; every
run must end (COMPLETED, or HALTED where it was halted). Default: 2000 runs;
`--runs N` for another count, `--quick` for 60.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import yaml

from benchmarks.common import ensure_image, report, services
from tests.harness import Dlaasd, manifest

BATCH = 4  # runs at a time (0.5 CPU each, the daemon's capacity is 2)
WARMUP = 3  # idle samples of a life before its baseline
RSS_TARGET = 1.25
SLACK = 3  # open files or threads above the baseline still counted as flat


@dataclass
class Sample:
    runs: int  # runs ended so far
    fds: int
    threads: int
    rss: int  # bytes


@dataclass
class Life:
    samples: list[Sample] = field(default_factory=list)

    def verdict(self) -> dict | None:
        if len(self.samples) <= WARMUP + 1:
            return None
        base, rest = self.samples[WARMUP], self.samples[WARMUP + 1 :]
        last = rest[-len(rest) // 4 or -1 :]  # the last quarter: one slow sample is noise
        return {
            "samples": len(self.samples),
            "runs": (base.runs, self.samples[-1].runs),
            "fds": (base.fds, max(s.fds for s in last)),
            "threads": (base.threads, max(s.threads for s in last)),
            "rss_mib": (round(base.rss / 2**20, 1), round(median(s.rss for s in last) / 2**20, 1)),
            "rss_growth": round(median(s.rss for s in last) / base.rss, 3),
        }


def proc_figures(pid: int) -> tuple[int, int, int]:
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fds, int(fields["Threads"]), int(fields["VmRSS"].split()[0]) * 1024


def submit(d: Dlaasd, folder: Path, seconds: float) -> str:
    r = d.api.multipart(
        "/v1/runs",
        {"manifest": (folder / f"{seconds}.yml").read_bytes()},
        {},
    )
    return r["id"]


def soak(total: int, seed: int = 1, log=print) -> dict:
    rng = random.Random(seed)
    lives = [Life()]
    done = halted = deleted = purged = restarts = kills = 0
    wrong: list[str] = []
    started = time.monotonic()
    with services(capacity={"cpus": 2, "memory": "4GiB"}, log_level="warning") as (d, _):
        folder = d.root / "manifests"
        folder.mkdir()
        for seconds in (0.1, 0.5, 2.0):
            m = manifest(f"echo soak; sleep {seconds}; echo out > $RESULT_DIR/r.txt", cpus=0.5)
            (folder / f"{seconds}.yml").write_text(yaml.safe_dump(m))
        ended: list[str] = []
        while done < total:
            batch, lengths = {}, {}
            for _ in range(min(BATCH, total - done)):
                seconds = rng.choice((0.1, 0.1, 0.5, 2.0))
                run_id = submit(d, folder, seconds)
                batch[run_id], lengths[run_id] = "COMPLETED", seconds
            if rng.random() < 0.25:  # halt one, wherever it stands (the longest: in time)
                run_id = max(batch, key=lengths.get)
                time.sleep(rng.uniform(0, 1.0))
                try:
                    d.api.json("POST", f"/v1/runs/{run_id}/halt")
                    batch[run_id] = "HALTED"
                    halted += 1
                except Exception:  # it had ended already (or is storing)
                    pass
            for run_id, expected in batch.items():
                run = d.wait(run_id, timeout=300)
                allowed = {expected, "COMPLETED"} if expected == "HALTED" else {expected}
                if run["status"] not in allowed:
                    wrong.append(f"{run_id}: {run['status']} ({run['status_message']})")
                ended.append(run_id)
                done += 1
            while len(ended) > 50 or (ended and rng.random() < 0.5):
                run_id = ended.pop(rng.randrange(len(ended)))
                purge = "?purge=1" if rng.random() < 0.3 else ""
                d.api.json("DELETE", f"/v1/runs/{run_id}{purge}")
                deleted += 1
                purged += bool(purge)
            fds, threads, rss = proc_figures(d.proc.pid)
            lives[-1].samples.append(Sample(done, fds, threads, rss))
            if rng.random() < 4 * BATCH / max(total, 1):  # a few restarts in all
                sig = rng.choice((signal.SIGTERM, signal.SIGKILL))
                d.stop(sig)
                kills += sig == signal.SIGKILL
                restarts += 1
                d.start()
                lives.append(Life())
            if len(lives[-1].samples) % 10 == 1:
                log(
                    f"  {done}/{total} runs: {fds} open files, {threads} threads, "
                    f"RSS {rss / 2**20:.1f} MiB"
                )
        listed = d.api.json("GET", "/v1/runs?limit=10000")["total"]
        if listed != len(ended):
            wrong.append(f"{listed} runs listed, {len(ended)} expected")
    verdicts = [v for v in (life.verdict() for life in lives) if v]
    return {
        "runs": done,
        "halted": halted,
        "deleted": deleted,
        "purged": purged,
        "restarts": restarts,
        "killed": kills,
        "wrong": wrong,
        "lives": verdicts,
        "seconds": round(time.monotonic() - started, 1),
    }


def flat(v: dict) -> bool:
    return (
        v["fds"][1] <= v["fds"][0] + SLACK
        and v["threads"][1] <= v["threads"][0] + SLACK
        and v["rss_growth"] <= RSS_TARGET
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="60 runs")
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    ensure_image()
    r = soak(60 if a.quick else a.runs, a.seed)
    ok = bool(r["lives"]) and all(flat(v) for v in r["lives"]) and not r["wrong"]
    growth = max((v["rss_growth"] for v in r["lives"]), default=0.0)
    rows = [
        (
            "runs",
            f"{r['runs']} ({r['halted']} halted, {r['deleted']} deleted, "
            f"{r['purged']} with --purge)",
        ),
        ("daemon restarts", f"{r['restarts']} ({r['killed']} with SIGKILL)"),
        ("time", f"{r['seconds']:.0f} s"),
    ]
    for i, v in enumerate(r["lives"], 1):
        rows.append(
            (
                f"life {i}, runs {v['runs'][0]}..{v['runs'][1]}",
                f"open files {v['fds'][0]} -> {v['fds'][1]}, threads {v['threads'][0]} -> "
                f"{v['threads'][1]}, RSS {v['rss_mib'][0]} -> {v['rss_mib'][1]} MiB "
                f"(x{v['rss_growth']}): {'flat' if flat(v) else 'GROWS'}",
            )
        )
    rows += [("WRONG", w) for w in r["wrong"][:20]]
    report("soak", rows, growth, f"RSS <= {RSS_TARGET}x, open files and threads flat", ok, **r)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
