"""Runs per second when many wait: 200 no-op runs submitted at once to a dlaasd with two
CPU slots, against the same containers started by `xargs -P2 docker run --rm`. The figure
is dlaasd's runs per second over the floor's. Target: at least 0.85."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import yaml

from benchmarks.common import IMAGE, ensure_image, parse, report, services
from tests.harness import manifest

TARGET = 0.85


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
    ratio = (n / ours) / (n / floor)
    report(
        "throughput",
        [
            ("runs", str(n)),
            ("dlaasd: all submitted in", f"{submitted:.2f} s"),
            ("dlaasd: all COMPLETED in", f"{ours:.1f} s ({n / ours:.2f} runs/s)"),
            ("xargs -P2 docker run --rm", f"{floor:.1f} s ({n / floor:.2f} runs/s)"),
        ],
        ratio,
        f">= {TARGET}",
        ratio >= TARGET,
        runs=n,
        dlaas_runs_per_s=round(n / ours, 3),
        docker_runs_per_s=round(n / floor, 3),
    )


if __name__ == "__main__":
    main()
