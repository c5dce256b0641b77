"""`dlaasctl doctor`: checks of everything dlaasd depends on, each problem with its fix."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from .buckets import problem, store_name
from .executors.local import LocalExecutor
from .gpus import Gpu
from .minio_server import MinioError, find_binary
from .units import format_size
from .verbs.context import Context

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


async def run_checks(ctx: Context) -> list[dict]:
    checks = await asyncio.to_thread(_checks, ctx)
    return [asdict(c) for c in checks]


def _checks(ctx: Context) -> list[Check]:
    checks = [_docker(ctx)]
    gpus = ctx.gpus.list()
    checks.append(_nvml(ctx, gpus))
    if gpus and not any(g.simulated for g in gpus) and isinstance(ctx.executor, LocalExecutor):
        checks.append(_nvidia_runtime(ctx.executor))
    checks += [_store(ctx), _disk(ctx), _socket(ctx), *_images(ctx), *_drop(ctx)]
    return checks


def _docker(ctx: Context) -> Check:
    health = ctx.executor.health()
    if health.ok:
        return Check("docker", OK, f"Docker Engine {health.message} answers")
    return Check(
        "docker",
        FAIL,
        health.message,
        "start it: `sudo systemctl start docker` (or `sudo dockerd &`); install it "
        "with `sudo apt-get install docker.io` if missing",
    )


def _nvml(ctx: Context, gpus: list[Gpu]) -> Check:
    inv = ctx.gpus
    if inv.simulate is not None:
        return Check(
            "gpus",
            WARN,
            f"{len(gpus)} simulated GPUs (DLAAS_SIMULATE_GPUS)",
            "unset DLAAS_SIMULATE_GPUS to use the real GPUs",
        )
    if gpus:
        names = ", ".join(sorted({g.name for g in gpus}))
        return Check("gpus", OK, f"NVML sees {len(gpus)} GPU(s): {names}")
    return Check(
        "gpus",
        WARN,
        inv.error or "no GPU found; runs with `gpus: 0` still work",
        "install the NVIDIA driver if this machine has a GPU",
    )


def _nvidia_runtime(executor: LocalExecutor) -> Check:
    try:
        info = executor.client.info()
    except Exception as exc:
        return Check("nvidia-runtime", FAIL, f"cannot ask Docker: {exc}")
    runtimes = set(info.get("Runtimes", {}))
    cdi = any(Path(p).exists() for p in ("/etc/cdi/nvidia.yaml", "/var/run/cdi/nvidia.yaml"))
    if "nvidia" in runtimes or cdi:
        how = "runtime 'nvidia'" if "nvidia" in runtimes else "CDI spec"
        return Check("nvidia-runtime", OK, f"Docker can give containers GPUs ({how})")
    return Check(
        "nvidia-runtime",
        FAIL,
        "Docker has no NVIDIA runtime: GPU runs cannot start",
        "install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure "
        "--runtime=docker && sudo systemctl restart docker`",
    )


def _store(ctx: Context) -> Check:
    ok, detail = ctx.objects.healthy()
    mode = "bundled MinIO" if ctx.minio else "external store"
    where = f"{mode} at {ctx.objects.endpoint.url}"
    if ok:
        return Check("store", OK, f"{where} answers")
    if ctx.minio:
        try:
            find_binary(ctx.config.store.minio_binary)
            fix = f"see its log: {ctx.minio.dir / 'minio.log'}"
        except MinioError as exc:
            fix = str(exc)
    else:
        fix = "check store.endpoint and the keys in the config, and that the store is running"
    return Check("store", FAIL, f"{where}: {detail}", fix)


def _disk(ctx: Context) -> Check:
    usage = shutil.disk_usage(ctx.config.state_path)
    free = usage.free
    detail = f"{format_size(free)} free of {format_size(usage.total)} in {ctx.config.state_dir}"
    if free < 2 * 1024**3 or free < usage.total * 0.02:
        return Check(
            "disk",
            FAIL,
            detail,
            "free some space: `dlaasctl delete` old runs, or lower cache.max_size in the config",
        )
    if free < 20 * 1024**3:
        return Check("disk", WARN, detail, "runs with large data or results may fill it")
    return Check("disk", OK, detail)


def _socket(ctx: Context) -> Check:
    path = ctx.config.socket_path
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        return Check("socket", FAIL, f"{path}: {exc}", "restart dlaasd")
    if mode & 0o007:
        return Check(
            "socket",
            FAIL,
            f"{path} is open to everyone ({oct(mode)})",
            "restart dlaasd; it sets 0600, or 0660 with socket_group",
        )
    who = f"group {ctx.config.socket_group!r}" if ctx.config.socket_group else "its owner only"
    return Check("socket", OK, f"{path} ({oct(mode)}, {who})")


def _images(ctx: Context) -> list[Check]:
    """The image of every framework version the config maps (templates need a version)."""
    checks = []
    images = sorted(
        {
            img
            for versions in ctx.config.frameworks.values()
            for img in versions.values()
            if "{version}" not in img
        }
    )
    for image in images:
        try:
            present = ctx.executor.image_present(image, fresh=True)
        except Exception as exc:
            checks.append(Check(f"image {image}", FAIL, f"cannot ask Docker: {exc}"))
            continue
        if present:
            checks.append(Check(f"image {image}", OK, "present"))
        elif image.startswith("dlaas/"):
            checks.append(
                Check(f"image {image}", FAIL, "missing", "build it: scripts/build-images")
            )
        else:
            pull = (
                "pulled when a run needs it"
                if ctx.config.containers.pull_missing_images
                else ("missing and pulling is off")
            )
            checks.append(
                Check(
                    f"image {image}", WARN, f"not on this machine; {pull}", f"docker pull {image}"
                )
            )
    return checks


def _drop(ctx: Context) -> list[Check]:
    """Folders under the drop folder's data/ whose name S3 refuses: said, with the bucket
    they fill; two that fill the same bucket are a failure."""
    data = ctx.config.drop_path / "data"
    names = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.exists() else []
    by_bucket: dict[str, list[str]] = {}
    for name in names:
        by_bucket.setdefault(store_name(name), []).append(name)
    checks = []
    for bucket, folders in by_bucket.items():
        if len(folders) > 1:
            shown = ", ".join(f"data/{f}" for f in folders)
            checks.append(
                Check(
                    f"drop folder {shown}",
                    FAIL,
                    f"all fill bucket {bucket!r}",
                    "keep one folder per bucket: merge them",
                )
            )
        elif folders[0] != bucket:
            checks.append(
                Check(
                    f"drop folder data/{folders[0]}",
                    WARN,
                    f"uploaded to bucket {bucket!r} ({problem(folders[0])})",
                    f"rename the folder to data/{bucket} to match the store",
                )
            )
    return checks
