"""Runs per second when many wait: no-op runs submitted at once to a dlaasd with two CPU
slots, against the same containers started, two at a time, by `xargs -P2 docker run
--rm` (the floor) and by the peers: task-spooler, pueue and Slurm (benchmarks/peers.py).

The machine may be shared, so the systems take turns: every one is set up once, then
each round runs a batch through each of them (dlaasd, the floor, the peers; the order
rotates by one every round, so drift hits all alike), 200 jobs each over 5 rounds. The
figures are the medians over the rounds of dlaasd's runs per second over each one's,
with the load average seen. Targets: at least 0.95 of the floor, at least 1.0 of every
peer (which, unlike dlaasd, stage no data, keep no history and isolate nothing).

Beside them, the daemon's own CPU time per run (user + system, all its threads, from
/proc): on a machine of few cores it is what the ratios hinge on, and unlike them it
hardly moves with the load."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from statistics import median

import yaml

from benchmarks.common import IMAGE, Loads, ensure_image, parse, report, services
from benchmarks.peers import PEERS
from tests.harness import Dlaasd, manifest

TARGET = 0.95
TARGET_PEERS = 1.0
FLOOR = "xargs -P2 docker run --rm"
COMMAND = f"docker run --rm --network none {IMAGE} sh -c true"


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def cpu_seconds(pid: int) -> float:
    """CPU time of a process so far: user + system of all its threads, and of the
    children it waited for."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def dlaasd_batch(daemon: Dlaasd, cpu_ms: list[float]) -> Callable[[int], float]:
    """A batch through dlaasd; each appends the daemon's CPU milliseconds per run to
    `cpu_ms`."""
    folder = daemon.root / "noop"
    folder.mkdir()
    (folder / "manifest.yml").write_text(yaml.safe_dump(manifest("true", name="noop", cpus=1)))
    text = (folder / "manifest.yml").read_bytes()
    api = daemon.api

    def submit(_: int) -> str:
        return api.multipart("/v1/runs", {"manifest": text}, {})["id"]

    def batch(n: int) -> float:
        assert daemon.proc is not None
        cpu = cpu_seconds(daemon.proc.pid)
        start = time.time()
        with ThreadPoolExecutor(8) as pool:  # all at once, as a script would
            ids = set(pool.map(submit, range(n)))
        # wait as cheaply as the peers' own waits: one indexed count a quarter second
        # (a `show` of each run in turn would cost the daemon more than the runs do)
        active = "/v1/runs?limit=1&status=QUEUED,DOWNLOADING,PROCESSING,STORING"
        deadline = time.monotonic() + n * 5
        while api.json("GET", active)["total"]:
            assert time.monotonic() < deadline, f"runs not done after {n * 5} s"
            time.sleep(0.25)
        runs = [r for r in api.json("GET", f"/v1/runs?limit={n}")["runs"] if r["id"] in ids]
        failed = [r["id"] for r in runs if r["status"] != "COMPLETED"]
        assert len(runs) == n and not failed, f"runs did not complete: {failed[:5]}"
        cpu_ms.append((cpu_seconds(daemon.proc.pid) - cpu) * 1000 / n)
        return max(stamp(r["completed"]) for r in runs) - start

    return batch


def xargs_batch(n: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        f"seq {n} | xargs -P2 -I{{}} {COMMAND}", shell=True, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    rounds, per_round = (2, 20) if args.quick else (5, 40)
    n = rounds * per_round
    errors: dict[str, str] = {}
    seconds: dict[str, list[float]] = {}
    loads = Loads()
    with contextlib.ExitStack() as stack:
        daemon, _ = stack.enter_context(services(capacity={"cpus": 2, "memory": "8GiB"}))
        cpu_ms: list[float] = []
        systems: dict[str, Callable[[int], float]] = {"dlaasd": dlaasd_batch(daemon, cpu_ms)}
        systems[FLOOR] = xargs_batch
        for name, peer in PEERS.items():
            try:
                systems[name] = stack.enter_context(peer(COMMAND))
            except Exception as exc:  # a peer that cannot run here is a finding, not a crash
                errors[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
        names = list(systems)
        for name in names:  # warm up every path (page cache, image layers, imports)
            try:
                systems[name](2)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
                del systems[name]
        names = list(systems)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                loads.sample()
                seconds.setdefault(name, []).append(systems[name](per_round))
            print(f"round {r + 1}/{rounds}: load {loads.samples[-1]:.1f}", flush=True)
    ours = seconds["dlaasd"]
    # dlaasd's runs/s over each one's, round by round (the same number of jobs each)
    ratios = {k: [o / d for o, d in zip(v, ours, strict=True)] for k, v in seconds.items()}
    ratio = median(ratios[FLOOR])
    peer_ratios = {k: median(v) for k, v in ratios.items() if k in PEERS}
    ok = ratio >= TARGET and all(r >= TARGET_PEERS for r in peer_ratios.values())
    ok = ok and not errors

    def rate(name: str) -> str:
        return f"{per_round / median(seconds[name]):.2f} runs/s"

    rows = [
        ("jobs", f"{n} each, {rounds} interleaved rounds of {per_round}"),
        ("load average (1 min), median", str(loads)),
        ("dlaasd, median round", rate("dlaasd")),
        ("dlaasd daemon CPU per run, median round", f"{median(cpu_ms[1:]):.1f} ms"),
    ]
    for name in names[1:]:
        rs = ratios[name]
        rows.append(
            (
                name,
                f"{rate(name)}: dlaasd at {median(rs):.2f} of it "
                f"(rounds {min(rs):.2f}..{max(rs):.2f})",
            )
        )
    for name, why in errors.items():
        rows.append((name, f"did not run: {why}"))
    report(
        "throughput",
        rows,
        ratio,
        f">= {TARGET} of xargs -P2, >= {TARGET_PEERS} of each peer",
        ok,
        runs=n,
        rounds=rounds,
        load=loads.median(),
        dlaas_runs_per_s=round(per_round / median(ours), 3),
        dlaas_cpu_ms_per_run=round(median(cpu_ms[1:]), 1),
        docker_runs_per_s=round(per_round / median(seconds[FLOOR]), 3),
        peer_ratios={k: round(v, 3) for k, v in peer_ratios.items()},
        peer_errors=errors,
    )


if __name__ == "__main__":
    main()
