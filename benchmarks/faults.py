"""Fault injection: dlaasd killed with SIGKILL at each phase change (right after the
submit, QUEUED->DOWNLOADING, ->PROCESSING, ->STORING) and at each of Docker's events for
its containers (create, start, die), cycle after cycle, then started again on the same
state folder. Every run stages a data bucket in and writes results; some are meant to
fail. The truth is what the training itself wrote: the checksums of the data it read
and of the results it made, beside the results. Each run must end exactly once, with
the status its training earned (COMPLETED only if it trained and exited 0), and its
results in the store must match the checksums the training wrote.

The figure is the share of runs that ended with the truth (target 1.0); the exit status
is 1 when one did not, with what went wrong, run by run. `--quick`: one cycle of each
kill (what CI runs, through tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import re
import signal
import sys
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field

import docker
import yaml

from benchmarks.common import ensure_image, report, services
from dlaasctl.http import ApiError, Unreachable
from tests.harness import Dlaasd, Minio, manifest

DATA_BUCKET = "faults-data"
RESULTS_BUCKET = "faults-results"
# the phase changes, as the daemon logs them, and Docker's events for its containers
PHASE_LINE = re.compile(r"event=(placed|status) run=(\S+)(?: status=(\w+))?")
PHASES = {"placed": "downloading", "PROCESSING": "processing", "STORING": "storing"}
DOCKER = ("create", "start", "die")
KILLS = ("queued", *PHASES.values(), *DOCKER)

# Reads every data file and writes results of random bytes, then truth.json with the
# checksums of both, last: the checker trusts only what the training wrote.
TRAIN = r"""
import hashlib, json, os, pathlib, sys, time
run = os.environ["TRAINING_ID"]
data = pathlib.Path(os.environ["DATA_DIR"])
out = pathlib.Path(os.environ["RESULT_DIR"])
print("training", run, flush=True)
sums = lambda folder: {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                       for p in sorted(folder.rglob("*")) if p.is_file()}
seen = sums(data)
time.sleep(float(os.environ["TRAIN_SECONDS"]))
(out / "deep").mkdir(exist_ok=True)
for name, size in (("model.bin", 300_000), ("deep/weights.bin", 5_000), ("empty.txt", 0)):
    (out / name).write_bytes(os.urandom(size))
code = int(os.environ["EXIT_CODE"])
truth = {"run": run, "data": seen, "results": sums(out), "exit_code": code}
(out / "truth.json").write_text(json.dumps(truth))
print("trained", run, flush=True)
sys.exit(code)
"""


@dataclass
class Verdict:
    run_id: str
    kill: str
    expected: str
    status: str
    problems: list[str] = field(default_factory=list)


class Killer:
    """SIGKILLs the daemon at the first armed moment: one of Docker's events for one of
    its containers, or the daemon's log line of a run's phase change. Armed before the
    cycle's runs are submitted (the daemon may place a run before its submit returns),
    for any run: every earlier one has ended."""

    def __init__(self, daemon: Dlaasd):
        self.daemon = daemon
        self.lock = threading.Lock()
        self.armed: str | None = None
        self.fired = threading.Event()
        self.seen = ""
        self._stop = threading.Event()
        client = docker.from_env()
        self.events = client.events(
            decode=True,
            filters={"type": "container", "label": f"dlaas.daemon={daemon.state}"},
        )
        self.threads = [
            threading.Thread(target=self._docker, daemon=True),
            threading.Thread(target=self._log, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def arm(self, kill: str) -> None:
        with self.lock:
            self.fired.clear()
            self.seen = ""
            self.armed = kill

    def disarm(self) -> None:
        with self.lock:
            self.armed = None

    def _fire(self, kill: str, run: str, what: str) -> None:
        with self.lock:
            if self.armed != kill:
                return
            proc = self.daemon.proc
            if proc and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            self.armed = None
            self.seen = what
            self.fired.set()

    def _docker(self) -> None:
        with contextlib.suppress(Exception):  # the stream is closed at the end
            for event in self.events:
                action = event.get("Action", "")
                run = event.get("Actor", {}).get("Attributes", {}).get("dlaas.run-id", "")
                if action in DOCKER:
                    self._fire(action, run, f"docker {action} of {run}")

    def _log(self) -> None:
        offset = self.daemon.log.stat().st_size if self.daemon.log.exists() else 0
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError), open(self.daemon.log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
                cut = chunk.rfind(b"\n") + 1  # whole lines only: a cut one could be missed
                offset += cut
                for line in chunk[:cut].decode(errors="replace").splitlines():
                    found = PHASE_LINE.search(line)
                    phase = found and PHASES.get(found[3] or found[1])
                    if phase:
                        self._fire(phase, found[2], f"{phase} of {found[2]}")
            time.sleep(0.002)

    def close(self) -> None:
        self._stop.set()
        self.events.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stage_data(minio: Minio, rng: random.Random) -> dict[str, str]:
    """The bucket every run stages in; its checksums."""
    import io

    sdk = minio.client()
    sdk.make_bucket(DATA_BUCKET)
    files = {"a.bin": rng.randbytes(200_000), "sub/b.bin": rng.randbytes(3_000), "c.txt": b"c\n"}
    for key, body in files.items():
        sdk.put_object(DATA_BUCKET, key, io.BytesIO(body), len(body))
    return {k: sha256(v) for k, v in files.items()}


def model_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.py", TRAIN)
    return buf.getvalue()


def submit(d: Dlaasd, name: str, fail: bool, code_zip: bytes) -> str:
    """Queue one run through the API (a submit takes milliseconds, so that the kill
    rarely lands in one; where it does, the run is looked up by its name)."""
    m = manifest(
        "python3 train.py",
        name=name,
        cpus=0.5,
        env={"EXIT_CODE": "3" if fail else "0", "TRAIN_SECONDS": "0.5"},
        data_stores=[
            {
                "id": "store",
                "type": "s3_datastore",
                "training_data": {"container": DATA_BUCKET},
                "training_results": {"container": RESULTS_BUCKET},
            }
        ],
    )
    manifest_text = yaml.safe_dump(m).encode()
    return d.api.multipart("/v1/runs", {"manifest": manifest_text}, {"model": code_zip})["id"]


def ended(d: Dlaasd, run_ids) -> bool:
    """Whether every run has ended (False while the daemon is down: a kill just landed)."""
    try:
        return all(d.run(r)["status"] in ("COMPLETED", "FAILED") for r in run_ids)
    except Unreachable:
        return False


def named(d: Dlaasd, name: str) -> list[str]:
    runs = d.api.json("GET", "/v1/runs?limit=10000")["runs"]
    return [r["id"] for r in runs if r["name"] == name]


def check(d: Dlaasd, minio: Minio, run_id: str, expected: str, data: dict[str, str]) -> list[str]:
    """What is wrong with how `run_id` ended, against what its training wrote."""
    problems = []
    run = d.run(run_id)
    events = d.api.json("GET", f"/v1/runs/{run_id}")["history"]
    finals = [e["status"] for e in events if e["status"] in ("COMPLETED", "FAILED", "HALTED")]
    if len(finals) != 1 or events[-1]["status"] != run["status"]:
        problems.append(f"ended {len(finals)} times: {[e['status'] for e in events]}")
    if run["status"] != expected:
        said = f"{run['status']} ({run['status_message']})"
        problems.append(f"{said}; its training earned {expected}")
    sdk = minio.client()
    stored = {}
    for o in sdk.list_objects(RESULTS_BUCKET, prefix=f"{run_id}/", recursive=True):
        resp = sdk.get_object(RESULTS_BUCKET, o.object_name)
        try:
            stored[o.object_name.removeprefix(f"{run_id}/")] = resp.read()
        finally:
            resp.close()
            resp.release_conn()
    log = stored.get("training-log.txt", b"").decode(errors="replace")
    trainings = log.count(f"training {run_id}")
    if trainings != 1:
        problems.append(f"its training ran {trainings} times")
    if "truth.json" not in stored:
        problems.append(f"no truth.json in the store; stored: {sorted(stored)}")
        return problems
    truth = json.loads(stored["truth.json"])
    if truth["data"] != data:
        problems.append(f"the training read other data: {truth['data']}")
    for rel, digest in truth["results"].items():
        if rel not in stored:
            problems.append(f"result {rel} is not in the store")
        elif sha256(stored[rel]) != digest:
            problems.append(f"result {rel} in the store differs from what the training wrote")
    if run["status"] == "COMPLETED" and truth["exit_code"] != 0:
        problems.append("COMPLETED although the training exited non-zero")
    if run["results"] != f"s3://{RESULTS_BUCKET}/{run_id}/":
        problems.append(f"results location {run['results']!r}")
    return problems


def leftover_containers(d: Dlaasd, timeout: float = 30) -> list[str]:
    """Containers of the daemon still there once every run ended (the tidy is after the
    final status, so it gets a moment)."""
    client = docker.from_env()
    deadline = time.monotonic() + timeout
    while True:
        # low-level: the high-level list inspects each one, and one removed in between
        # (by that very tidy) failed the listing with NotFound
        found = client.api.containers(all=True, filters={"label": f"dlaas.daemon={d.state}"})
        if not found or time.monotonic() > deadline:
            return [(c.get("Names") or [c["Id"]])[0].lstrip("/") for c in found]
        time.sleep(0.5)


def inject(cycles_per_kill: int, runs_per_cycle: int = 2, seed: int = 1, log=print) -> dict:
    """Run the cycles; the figures and every wrong ending."""
    rng = random.Random(seed)
    verdicts: list[Verdict] = []
    landed: Counter = Counter()
    tried: Counter = Counter()
    started = time.monotonic()
    restarts = unanswered = 0
    code_zip = model_zip()
    with services(capacity={"cpus": 2, "memory": "4GiB"}, log_level="info") as (d, minio):
        data = stage_data(minio, rng)
        killer = Killer(d)
        try:
            plan = [k for k in KILLS for _ in range(cycles_per_kill)]
            rng.shuffle(plan)
            n = 0
            for i, kill in enumerate(plan):
                tried[kill] += 1
                killer.arm(kill)  # "queued" matches no event: killed after the submits
                batch: dict[str, str] = {}  # name -> the status its training will earn
                ids: dict[str, str] = {}  # name -> run id, where the submit was answered
                for _ in range(runs_per_cycle):
                    if killer.fired.is_set():
                        break  # the daemon is dead: submit the rest next cycle
                    n += 1
                    name, fail = f"faults-{n}", rng.random() < 0.3
                    batch[name] = "FAILED" if fail else "COMPLETED"
                    try:
                        ids[name] = submit(d, name, fail, code_zip)
                    except (Unreachable, ApiError):  # killed while it was taken: in doubt
                        break
                if kill == "queued":
                    killer.disarm()
                    d.kill()
                    seen = "right after the submits"
                else:
                    # the kill lands, or every run of the cycle ended without it
                    while not killer.fired.wait(0.2):
                        if len(ids) == len(batch) and ended(d, ids.values()):
                            break
                    killer.disarm()
                    seen = killer.seen
                    if seen:
                        d.proc.wait(timeout=30)
                if seen:
                    landed[kill] += 1
                    restarts += 1
                    d.start()
                log(f"  cycle {i + 1}/{len(plan)}: kill at {kill}: {seen or 'missed'}")
                for name, expected in batch.items():
                    found = [ids[name]] if name in ids else named(d, name)
                    if not found:  # refused by a dying daemon, and the submitter told so
                        unanswered += 1
                        continue
                    problems = [f"submitted once, queued {len(found)} times"] * (len(found) > 1)
                    run = d.wait(found[0], timeout=180)
                    problems += check(d, minio, found[0], expected, data)
                    verdicts.append(Verdict(found[0], kill, expected, run["status"], problems))
                    for p in problems:
                        log(f"    WRONG {found[0]} (kill at {kill}): {p}")
            listed = d.api.json("GET", "/v1/runs?limit=10000")
            leftovers = leftover_containers(d)
        finally:
            killer.close()
    wrong = [v for v in verdicts if v.problems]
    return {
        "runs": len(verdicts),
        "listed": listed["total"],
        "correct": len(verdicts) - len(wrong),
        "wrong": [v.__dict__ for v in wrong],
        "tried": dict(tried),
        "landed": dict(landed),
        "restarts": restarts,
        "unanswered_submits": unanswered,
        "leftover_containers": leftovers,
        "seconds": round(time.monotonic() - started, 1),
        "by_kill": {
            k: {
                "runs": sum(v.kill == k for v in verdicts),
                "wrong": sum(v.kill == k and bool(v.problems) for v in verdicts),
            }
            for k in KILLS
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one cycle of each kill (CI)")
    p.add_argument("--cycles", type=int, default=5, help="cycles of each kill (default 5)")
    p.add_argument("--runs", type=int, default=2, help="runs per cycle (default 2)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    ensure_image()
    r = inject(1 if a.quick else a.cycles, a.runs, a.seed)
    ratio = r["correct"] / r["runs"] if r["runs"] else 0.0
    ok = not r["wrong"] and r["listed"] == r["runs"] and not r["leftover_containers"]
    rows = [
        (
            f"kill at {k}",
            f"{r['landed'].get(k, 0)}/{r['tried'].get(k, 0)} kills landed, "
            f"{b['runs'] - b['wrong']}/{b['runs']} runs ended with the truth",
        )
        for k, b in r["by_kill"].items()
    ]
    rows += [
        ("runs submitted / listed", f"{r['runs']} / {r['listed']}"),
        ("daemon restarts", str(r["restarts"])),
        ("containers left behind", ", ".join(r["leftover_containers"]) or "none"),
        ("time", f"{r['seconds']:.0f} s"),
    ]
    for v in r["wrong"]:
        rows.append((f"WRONG {v['run_id']}", f"kill at {v['kill']}: {'; '.join(v['problems'])}"))
    report("faults", rows, ratio, "1.0 (every run ends once, with the truth)", ok, **r)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
