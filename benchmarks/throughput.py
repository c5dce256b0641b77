"""Runs per second when many wait: 200 no-op runs submitted at once to a dlaasd with two
CPU slots, against the same containers started, two at a time, by `xargs -P2 docker run
--rm` (the floor) and by the peers: task-spooler, pueue and Slurm (benchmarks/peers.py),
all in one run. The figures are dlaasd's runs per second over each one's. Targets: at
least 0.95 of the floor, at least 1.0 of every peer (which, unlike dlaasd, stage no data,
keep no history and isolate nothing)."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import yaml

from benchmarks.common import IMAGE, ensure_image, parse, report, services
from benchmarks.peers import PEERS
from tests.harness import manifest

TARGET = 0.95
TARGET_PEERS = 1.0


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    n = 40 if args.quick else 200
    with services(capacity={"cpus": 2, "memory": "8GiB"}) as (daemon, _):
        folder = daemon.root / "noop"
        folder.mkdir()
        m = manifest("true", name="noop", cpus=1)
        (folder / "manifest.yml").write_text(yaml.safe_dump(m))
        text = (folder / "manifest.yml").read_bytes()
        api = daemon.api

        def submit(_: int) -> str:
            return api.multipart("/v1/runs", {"manifest": text}, {})["id"]

        start = time.time()
        with ThreadPoolExecutor(8) as pool:  # all at once, as a script would
            ids = list(pool.map(submit, range(n)))
        submitted = time.time() - start
        for run_id in ids:
            daemon.wait(run_id, timeout=n * 5)
        runs = [daemon.run(i) for i in ids]
        failed = [r["id"] for r in runs if r["status"] != "COMPLETED"]
        assert not failed, f"runs did not complete: {failed[:5]}"
        ours = max(stamp(r["completed"]) for r in runs) - start

    floor_start = time.perf_counter()
    subprocess.run(
        f"seq {n} | xargs -P2 -I{{}} docker run --rm --network none {IMAGE} sh -c true",
        shell=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    floor = time.perf_counter() - floor_start
    command = f"docker run --rm --network none {IMAGE} sh -c true"
    peers: dict[str, float | str] = {}
    for name, peer in PEERS.items():
        try:
            peers[name] = peer(command, n)
        except Exception as exc:  # a peer that cannot run here is a finding, not a crash
            peers[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    ratio = (n / ours) / (n / floor)
    peer_ratios = {k: v / ours for k, v in peers.items() if isinstance(v, float)}
    ok = ratio >= TARGET and all(r >= TARGET_PEERS for r in peer_ratios.values())
    ok = ok and len(peer_ratios) == len(PEERS)
    rows = [
        ("runs", str(n)),
        ("dlaasd: all submitted in", f"{submitted:.2f} s"),
        ("dlaasd: all COMPLETED in", f"{ours:.1f} s ({n / ours:.2f} runs/s)"),
        (
            "xargs -P2 docker run --rm",
            f"{floor:.1f} s ({n / floor:.2f} runs/s): dlaasd at {ratio:.2f} of it",
        ),
    ]
    for name, v in peers.items():
        if isinstance(v, float):
            rows.append((name, f"{v:.1f} s ({n / v:.2f} runs/s): dlaasd at {v / ours:.2f} of it"))
        else:
            rows.append((name, f"did not run: {v}"))
    report(
        "throughput",
        rows,
        ratio,
        f">= {TARGET} of xargs -P2, >= {TARGET_PEERS} of each peer",
        ok,
        runs=n,
        dlaas_runs_per_s=round(n / ours, 3),
        docker_runs_per_s=round(n / floor, 3),
        peer_ratios={k: round(v, 3) for k, v in peer_ratios.items()},
        peer_errors={k: v for k, v in peers.items() if isinstance(v, str)},
    )


if __name__ == "__main__":
    main()
