"""What dlaasd adds to one run: a no-op run with no data, from starting `dlaasctl train
--follow` to the run's COMPLETED (its time in the run's history), against `docker run --rm`
of the same image and command, in alternating pairs. The figure is the median of the pair
ratios. Target: at most 1.3. Until dlaasctl has exited (it then asks for the final status
and prints it) is shown too."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from statistics import median

import yaml

from benchmarks.common import Loads, docker_run, ensure_image, parse, report, services, timed
from tests.harness import Dlaasd, manifest

TARGET = 1.3


def train(daemon: Dlaasd, cmd: list[str]) -> tuple[float, float]:
    """Seconds from start to COMPLETED, and to dlaasctl's exit."""
    start = time.time()
    out = subprocess.run(cmd, env=daemon.env, check=True, capture_output=True, text=True)
    exited = time.time() - start
    run = daemon.run(out.stdout.split()[0])
    done = next(e["time"] for e in run["history"] if e["status"] == "COMPLETED")
    return datetime.fromisoformat(done.replace("Z", "+00:00")).timestamp() - start, exited


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    pairs = 5 if args.quick else 20
    with services() as (daemon, _):
        folder = daemon.root / "noop"
        folder.mkdir()
        (folder / "manifest.yml").write_text(yaml.safe_dump(manifest("true", name="noop")))
        cmd = [sys.executable, "-m", "dlaasctl.cli", "train", str(folder), "--follow"]
        for _ in range(2):  # warm up both paths (page cache, image layers, imports)
            train(daemon, cmd)
            timed(docker_run())
        ours, exits, floor, ratios = [], [], [], []
        loads = Loads()
        for i in range(pairs):
            loads.sample()
            # alternate which goes first, so drift on the machine hits both alike
            if i % 2:
                d = timed(docker_run())
                t, e = train(daemon, cmd)
            else:
                t, e = train(daemon, cmd)
                d = timed(docker_run())
            ours.append(t)
            exits.append(e)
            floor.append(d)
            ratios.append(t / d)
        runs = daemon.ctl_json("list", "--limit", "1000")["runs"]
        assert all(r["status"] == "COMPLETED" for r in runs), "a benchmark run failed"
    ratio = median(ratios)
    report(
        "overhead",
        [
            ("pairs", str(pairs)),
            ("load average (1 min), median", str(loads)),
            ("dlaasctl train to COMPLETED, median", f"{median(ours) * 1000:.0f} ms"),
            ("... to dlaasctl's exit, median", f"{median(exits) * 1000:.0f} ms"),
            ("docker run --rm, median", f"{median(floor) * 1000:.0f} ms"),
            ("pair ratios, min..max", f"{min(ratios):.2f}..{max(ratios):.2f}"),
        ],
        ratio,
        f"<= {TARGET}",
        ratio <= TARGET,
        pairs=pairs,
        load=loads.median(),
        dlaas_ms=round(median(ours) * 1000, 1),
        dlaasctl_exit_ms=round(median(exits) * 1000, 1),
        exit_ratio=round(median(e / d for e, d in zip(exits, floor, strict=True)), 4),
        docker_ms=round(median(floor) * 1000, 1),
    )


if __name__ == "__main__":
    main()
