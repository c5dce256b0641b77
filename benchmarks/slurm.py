"""What dlaasd adds to a run on Slurm: a no-op run with no data submitted with `dlaasctl
train` to an `executor: slurm` dlaasd, from the submit to its COMPLETED (in the run's
history), against the same container started by a bare
`sbatch --wrap "docker run --rm ..."`, from the submit to the container's end (the wrap
touches a file after it, watched every 10 ms: `sbatch --wait` polls for seconds), in
alternating pairs, on the test cluster
(tests/slurm_testbed.py: munged, slurmctld, two slurmd on this machine). The figure is
the median of the pair ratios. Target: at most 2.0 (dlaasd's job also prepares the job
folder, starts its node program and stores the logs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from statistics import median

import yaml

from benchmarks.common import docker_run, ensure_image, parse, report, services
from tests.harness import Dlaasd, manifest, short_tmp
from tests.slurm_testbed import SlurmCluster

TARGET = 2.0


def train(daemon: Dlaasd, cmd: list[str]) -> float:
    """Seconds from the submit to COMPLETED."""
    start = time.time()
    out = subprocess.run(cmd, env=daemon.env, check=True, capture_output=True, text=True)
    run_id = out.stdout.split()[0]
    run = daemon.wait(run_id, timeout=300)
    assert run["status"] == "COMPLETED", run
    done = next(e["time"] for e in run["history"] if e["status"] == "COMPLETED")
    return datetime.fromisoformat(done.replace("Z", "+00:00")).timestamp() - start


def bare(cluster: SlurmCluster, n: int) -> float:
    """Seconds from a bare sbatch of the same container to the container's end."""
    done = cluster.root / f"bare-{n}.done"
    wrap = " ".join(docker_run()) + f" && touch {done}"
    start = time.perf_counter()
    cluster.cli("sbatch", "-o", "/dev/null", "--wrap", wrap)
    while not done.exists():
        time.sleep(0.01)
    return time.perf_counter() - start


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    pairs = 3 if args.quick else 10
    cluster = SlurmCluster(short_tmp("dlaas-bench-slurm-")).start()
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        settings = {"node_dir": str(cluster.root / "nodes")}
        with services(executor="slurm", slurm=settings) as (daemon, _):
            folder = daemon.root / "noop"
            folder.mkdir()
            (folder / "manifest.yml").write_text(yaml.safe_dump(manifest("true", name="noop")))
            cmd = [sys.executable, "-m", "dlaasctl.cli", "train", str(folder)]
            train(daemon, cmd)  # warm up both paths (imports, page cache, image layers)
            bare(cluster, 0)
            ours, floor, ratios = [], [], []
            for i in range(pairs):
                if i % 2:  # alternate which goes first: drift hits both alike
                    d = bare(cluster, i + 1)
                    t = train(daemon, cmd)
                else:
                    t = train(daemon, cmd)
                    d = bare(cluster, i + 1)
                ours.append(t)
                floor.append(d)
                ratios.append(t / d)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
    ratio = median(ratios)
    report(
        "slurm",
        [
            ("pairs", str(pairs)),
            ("dlaasctl train to COMPLETED on Slurm, median", f"{median(ours) * 1000:.0f} ms"),
            ("sbatch --wrap 'docker run' to its end, median", f"{median(floor) * 1000:.0f} ms"),
            ("pair ratios, min..max", f"{min(ratios):.2f}..{max(ratios):.2f}"),
        ],
        ratio,
        f"<= {TARGET}",
        ratio <= TARGET,
        pairs=pairs,
        dlaas_ms=round(median(ours) * 1000, 1),
        sbatch_ms=round(median(floor) * 1000, 1),
    )


if __name__ == "__main__":
    main()
