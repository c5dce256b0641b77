"""The peers of the throughput benchmark: the same no-op `docker run` jobs, two at a time,
through task-spooler, pueue and Slurm, each set up as its documentation recommends and
each on its own (a socket, a state folder, a cluster of its own), removed afterwards.

Each peer is a context manager that sets itself up once and yields a batch function:
`batch(n)` submits `n` jobs and returns the seconds from the first submission to the
last job's end, so the benchmark can interleave rounds of every system on one load."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.common import tools_dir
from tests.harness import short_tmp

PUEUE = "4.0.4"  # built once with `cargo install --locked`, kept under tools_dir()

Batch = Callable[[int], float]


@contextlib.contextmanager
def task_spooler(command: str) -> Iterator[Batch]:
    """Debian's task-spooler (`tsp`): a server of its own (TS_SOCKET), `tsp -S 2` slots,
    one `tsp CMD` a job; `tsp -w` waits for the last (jobs run in submit order)."""
    tsp = shutil.which("tsp") or install_task_spooler()
    root = short_tmp("dlaas-bench-tsp-")
    env = {**os.environ, "TS_SOCKET": str(root / "ts.sock"), "TMPDIR": str(root)}

    def batch(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            subprocess.run(
                [tsp, "sh", "-c", command], env=env, check=True, stdout=subprocess.DEVNULL
            )
        subprocess.run([tsp, "-w"], env=env, check=True)
        took = time.perf_counter() - start
        subprocess.run([tsp, "-C"], env=env, check=True)  # forget the finished jobs
        return took

    try:
        subprocess.run([tsp, "-S", "2"], env=env, check=True)
        yield batch
    finally:
        subprocess.run([tsp, "-K"], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def install_task_spooler() -> str:
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "task-spooler"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("tsp") or "tsp"


def pueue_bin() -> Path:
    """pueue and pueued, built once by cargo (crates.io) and kept by version."""
    root = tools_dir() / f"pueue-{PUEUE}"
    if not (root / "bin" / "pueued").exists():
        cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
        subprocess.run(
            [cargo, "install", "pueue", "--version", PUEUE, "--locked", "--root", str(root)],
            check=True,
        )
    return root / "bin"


@contextlib.contextmanager
def pueue(command: str) -> Iterator[Batch]:
    """pueue: its daemon with a config of its own, `pueue parallel 2`, one `pueue add` a
    job, `pueue wait` for them all."""
    binary = pueue_bin()
    root = short_tmp("dlaas-bench-pueue-")
    config = root / "pueue.yml"
    config.write_text(
        f"shared:\n  pueue_directory: {root / 'state'}\n  runtime_directory: {root}\n"
        f"  use_unix_socket: true\n  unix_socket_path: {root / 'pueue.sock'}\n"
        "daemon:\n  callback: null\n"
    )
    ctl = [str(binary / "pueue"), "--config", str(config)]

    def batch(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            subprocess.run([*ctl, "add", "--", command], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*ctl, "wait"], check=True, stdout=subprocess.DEVNULL)
        took = time.perf_counter() - start
        subprocess.run([*ctl, "clean"], check=True, stdout=subprocess.DEVNULL)
        return took

    daemon = subprocess.Popen(
        [str(binary / "pueued"), "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if subprocess.run([*ctl, "status"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([*ctl, "parallel", "2"], check=True, stdout=subprocess.DEVNULL)
        yield batch
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def slurm(command: str) -> Iterator[Batch]:
    """Slurm: the test cluster of tests/slurm_testbed.py (slurmctld and two slurmd of
    2 CPUs), one `sbatch --wrap` a job asking for both CPUs of a node (two at a time);
    done when squeue lists none of them."""
    from tests.slurm_testbed import SlurmCluster

    root = short_tmp("dlaas-bench-slurm-")
    cluster = SlurmCluster(root).start()

    def batch(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            cluster.cli("sbatch", "--parsable", "-c", "2", "-o", "/dev/null", "--wrap", command)
        while cluster.cli("squeue", "-h", "-o", "%i").strip():
            time.sleep(0.2)
        return time.perf_counter() - start

    try:
        yield batch
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


PEERS = {
    "task-spooler (tsp -S 2)": task_spooler,
    "pueue (parallel 2)": pueue,
    "Slurm (sbatch)": slurm,
}
