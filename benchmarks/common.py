"""Shared by the benchmarks: real services, timing, and the report format.

Every benchmark prints a readable table and, as its last line, one JSON object with at
least `bench`, `ratio`, `target` and `ok`. Ratios compare dlaasd with the floor (a bare
`docker run`, a plain copy) measured in the same run, on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness import PYTHON_IMAGE, Dlaasd, Minio, short_tmp

IMAGE = PYTHON_IMAGE


def parse(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, a rough figure")
    return p.parse_args()


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{platform.machine()}, {cpus} CPUs, {mem:.0f} GiB, Linux {platform.release()}"


def load() -> float:
    """The 1-minute load average: on a shared machine, read beside every figure."""
    return os.getloadavg()[0]


class Loads:
    """Load averages sampled during a benchmark (one per round, say), for its report."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def sample(self) -> None:
        self.samples.append(load())

    def __str__(self) -> str:
        if not self.samples:
            return "-"
        s = sorted(self.samples)
        return f"{s[len(s) // 2]:.1f} (min {s[0]:.1f}, max {s[-1]:.1f})"

    def median(self) -> float:
        s = sorted(self.samples) or [load()]
        return round(s[len(s) // 2], 2)


@contextlib.contextmanager
def object_store() -> Iterator[Minio]:
    """A MinIO server of its own, removed afterwards."""
    root = short_tmp("dlaas-bench-minio-")
    minio = Minio(root).start()
    try:
        yield minio
    finally:
        minio.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def services(**config) -> Iterator[tuple[Dlaasd, Minio]]:
    """A MinIO server and a dlaasd using it, removed afterwards."""
    with object_store() as minio:
        root = short_tmp("dlaas-bench-")
        config.setdefault("log_level", "warning")
        daemon = Dlaasd(root, minio, **config)
        try:
            daemon.start()
            yield daemon, minio
        finally:
            daemon.cleanup()
            shutil.rmtree(root, ignore_errors=True)


def timed(cmd: list[str], **kw) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - start


def docker_run(command: str = "true") -> list[str]:
    return ["docker", "run", "--rm", "--network", "none", IMAGE, "sh", "-c", command]


def report(
    bench: str, rows: list[tuple[str, str]], ratio: float, target: str, ok: bool, **extra
) -> None:
    """The table for people, then the JSON line for scripts (always the last line)."""
    width = max(len(k) for k, _ in rows)
    loads = "/".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{bench}  ({machine()}; load average 1/5/15 min at the end: {loads})")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    print(
        f"  {'result'.ljust(width)}  ratio {ratio:.3f}, target {target}: {'OK' if ok else 'MISSED'}"
    )
    result = {"bench": bench, "ratio": round(ratio, 4), "target": target, "ok": ok}
    result |= {"load_at_end": [round(v, 2) for v in os.getloadavg()], **extra}
    print(json.dumps(result), flush=True)


def ensure_image() -> None:
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        raise SystemExit(f"image {IMAGE} is missing: run scripts/build-images")


def tools_dir() -> Path:
    """Where benchmarks install the peers they compare with (never the product's own
    environment): /var/cache/dlaasd/bench as root, else ~/.cache/dlaasd-bench."""
    root = Path("/var/cache/dlaasd/bench")
    if os.geteuid() != 0:
        root = Path.home() / ".cache" / "dlaasd-bench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def pip_tool(package: str, version: str, binary: str) -> str:
    """The path of `binary` from `package==version`, installed once into a virtual
    environment of its own under tools_dir(), keyed by the version."""
    venv = tools_dir() / f"{package}-{version}"
    exe = venv / "bin" / binary
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"{package}=={version}"], check=True
        )
    return str(exe)
