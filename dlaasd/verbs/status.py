"""Status: the daemon's health, capacity and GPUs, as `dlaasctl status` shows them."""

from __future__ import annotations

import asyncio
import os
import time

from .. import __version__, diskspace
from .context import Context


async def status(ctx: Context) -> dict:
    """Docker, the object store, the disk, GPUs, capacity and run counts."""
    docker_ok, docker_detail = await ctx.docker_ok()
    store_ok, store_detail = await asyncio.to_thread(ctx.objects.healthy)
    held = ctx.held()
    gpus = ctx.gpus.list()
    store: dict[str, object] = {
        "mode": "bundled" if ctx.minio else "external",
        "endpoint": ctx.objects.endpoint.url,
        "ok": store_ok,
        "detail": store_detail,
    }
    if ctx.minio:
        store.update(pid=ctx.minio.pid, restarts=ctx.minio.restarts)
    state = ctx.config.state_path
    disk_ok = not ctx.lifecycle.reserve.disk_full()
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_seconds": round(time.time() - ctx.started_at, 1),
        "state_dir": str(ctx.config.state_path),
        "socket": str(ctx.config.socket_path),
        "drop_dir": str(ctx.config.drop_path),
        "docker": {"ok": docker_ok, "detail": docker_detail},
        "store": store,
        "disk": {
            "ok": disk_ok,
            "free": diskspace.free_bytes(state),
            "reserve_held": ctx.lifecycle.reserve.held,
            "detail": "ok" if disk_ok else diskspace.sentence(state, "running"),
        },
        "gpus": {
            "source": ctx.gpus.source,
            "count": len(gpus),
            "driver": ctx.gpus.driver,
            "error": ctx.gpus.error,
        },
        "capacity": {
            "cpus": ctx.config.capacity.cpus,
            "memory": ctx.config.capacity.memory,
            "cpus_used": held.cpus,
            "memory_used": held.memory,
            "gpus_used": len(held.gpus),
        },
        "runs": ctx.db.counts(),
    }


def gpu_list(ctx: Context) -> list[dict]:
    """The GPU inventory, with the run holding each."""
    holders = ctx.held().gpus
    out = []
    for g in ctx.gpus.list():
        d = g.to_json()
        d["run"] = holders.get(g.uuid)
        d["busy"] = bool(d["run"] or g.processes)
        out.append(d)
    return out
