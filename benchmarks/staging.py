"""Moving data: 1 GiB as about 1,000 small files and a few large ones. Cold stage-in
(object store -> run's DATA_DIR) and stage-out (RESULT_DIR -> object store) throughput as
ratios to a plain recursive copy of the same bytes on the same disk, and warm (cached)
stage-in time as a ratio to cold, all in one run. Targets: cold at least 0.5 of the copy
both ways; warm at most 5% of cold.

"Cold" means from the disk: as root, the page cache is dropped before the copy and before
the cold run, and the copy ends with `sync`, because the object store's writes are durable
too. Without root the caches stay warm, the copy runs at memory speed, and the table
says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from benchmarks.common import ensure_image, parse, report, services
from tests.harness import manifest, short_tmp

MiB = 1024**2


def make_data(root: Path, small: int, small_size: int, large: int, large_size: int) -> int:
    """Random (incompressible) files; returns the bytes written."""
    total = 0
    for i in range(small):
        sub = root / f"part-{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"sample-{i:05d}.bin").write_bytes(os.urandom(small_size))
        total += small_size
    block = os.urandom(MiB)
    for i in range(large):
        with open(root / f"large-{i}.bin", "wb") as f:
            for k in range(large_size // MiB):
                f.write(block[k % 7 :] + block[: k % 7])  # distinct blocks, cheaply
        total += large_size
    return total


def drop_caches() -> bool:
    """Write dirty pages out and drop the page cache, so reads come from the disk."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    shape = (250, 256 * 1024, 2, 64 * MiB) if args.quick else (1000, 512 * 1024, 4, 131 * MiB)
    work = short_tmp("dlaas-bench-data-")
    try:
        source = work / "source"
        nbytes = make_data(source, *shape)
        files = shape[0] + shape[2]
        cold_caches = drop_caches()
        start = time.perf_counter()
        subprocess.run(["cp", "-r", str(source), str(work / "copy")], check=True)
        subprocess.run(["sync"], check=True)
        copy_s = time.perf_counter() - start
        shutil.rmtree(work / "copy")
        copy_rate = nbytes / copy_s

        with services(capacity={"cpus": 2, "memory": "8GiB"}) as (daemon, minio):
            sdk = minio.client()
            sdk.make_bucket("bench-data")
            paths = [p for p in source.rglob("*") if p.is_file()]
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda p: sdk.fput_object(
                            "bench-data", p.relative_to(source).as_posix(), str(p)
                        ),
                        paths,
                    )
                )
            stores = [
                {
                    "id": "d",
                    "type": "s3_datastore",
                    "training_data": {"container": "bench-data"},
                    "training_results": {"container": "bench-results"},
                }
            ]
            folder = work / "model"
            folder.mkdir()

            def run(command: str) -> dict:
                m = manifest(command, name="staging", cpus=2, memory="4GiB", data_stores=stores)
                (folder / "manifest.yml").write_text(yaml.safe_dump(m))
                result = daemon.wait(daemon.submit(folder), timeout=1800)
                assert result["status"] == "COMPLETED", result
                return result["staging"]

            drop_caches()
            cold = run("cp -r $DATA_DIR/. $RESULT_DIR/")  # stage in cold, stage all of it out
            warm = run("true")  # right after, as the next trial of a sweep would
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert cold["bytes_downloaded"] == nbytes and cold["files_downloaded"] == files, cold
    assert warm["files_downloaded"] == 0 and warm["cache_hits"] == files, warm
    in_rate = nbytes / cold["download_seconds"]
    out_rate = cold["bytes_uploaded"] / cold["upload_seconds"]
    in_ratio, out_ratio = in_rate / copy_rate, out_rate / copy_rate
    warm_ratio = warm["download_seconds"] / cold["download_seconds"]
    ok = in_ratio >= 0.5 and out_ratio >= 0.5 and warm_ratio <= 0.05
    rate = lambda r: f"{r / MiB:.0f} MiB/s"  # noqa: E731
    report(
        "staging",
        [
            ("data", f"{files} files, {nbytes / MiB:.0f} MiB"),
            (
                "cp -r + sync (the floor)",
                f"{copy_s:.2f} s, {rate(copy_rate)}"
                + ("" if cold_caches else " (warm caches: not root)"),
            ),
            (
                "stage-in, cold",
                f"{cold['download_seconds']:.2f} s, {rate(in_rate)}: {in_ratio:.2f} of the copy",
            ),
            (
                "stage-out",
                f"{cold['upload_seconds']:.2f} s, {rate(out_rate)}: {out_ratio:.2f} of the copy",
            ),
            (
                "stage-in, warm (cache)",
                f"{warm['download_seconds']:.3f} s: {warm_ratio:.1%} of cold",
            ),
        ],
        min(in_ratio, out_ratio),
        ">= 0.5 of the copy both ways, warm <= 5% of cold",
        ok,
        stage_in_ratio=round(in_ratio, 3),
        stage_out_ratio=round(out_ratio, 3),
        warm_to_cold=round(warm_ratio, 4),
        bytes=nbytes,
        cold_caches=cold_caches,
    )


if __name__ == "__main__":
    main()
