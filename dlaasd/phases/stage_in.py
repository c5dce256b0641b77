"""DOWNLOADING: the run's folders, its model code and helpers, and its training data."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from .. import archive, diskspace
from ..codes import Code
from ..errors import RunError
from ..learners import HELPERS
from ..manifest import Manifest
from ..objectstore import Transfer
from ..records import Run
from ..runfolder import RunFolder
from . import Context


async def stage_in(ctx: Context, run: Run, m: Manifest, folder: RunFolder) -> None:
    try:
        await _stage_in(ctx, run, m, folder)
    except OSError as exc:  # the code unpacked, the data linked or fetched: no room
        if diskspace.is_disk_full(exc):
            raise diskspace.error(ctx.config.state_path, "staging the run in") from exc
        raise


async def _stage_in(ctx: Context, run: Run, m: Manifest, folder: RunFolder) -> None:
    run_id = run.id
    owner = ctx.container_user(run.owner_uid) if os.geteuid() == 0 else None
    await asyncio.to_thread(prepare_job, folder, run.hyperparameters, owner)
    store = m.data_store
    if store and store.type != "mount_volume" and store.training_data:
        bucket, prefix = store.training_data.bucket, store.training_data.prefix
        objects = ctx.store_for(m)
        stats = Transfer()

        def transfer(attempt: int) -> None:
            stop = lambda: ctx.halted(run_id) or ctx.stopping  # noqa: E731
            tree = objects.stage_in_tree(bucket, prefix, ctx.cache, stats, run_id, stop)
            if tree:  # mounted as DATA_DIR, after a restart too
                folder.record_data_tree(tree.name)

        await ctx.with_retries(
            run_id,
            transfer,
            stats,
            "downloading",
            ctx.config.store.download_retry_for,
            Code.DOWNLOAD_FAILED,
        )
        ctx.add_staging(
            run_id,
            bytes_downloaded=stats.bytes,
            files_downloaded=stats.files,
            cache_hits=stats.cache_hits,
            download_seconds=round(stats.seconds, 3),
        )
        if stats.files:  # only downloads grow the cache
            await asyncio.to_thread(ctx.cache.evict)


def prepare_job(
    folder: RunFolder, hyperparameters: dict | None, owner: tuple[int, int] | None
) -> None:
    """The run's folders, its model code, the helpers, an experiment trial's config.json,
    all handed to the container's user: one trip to a thread."""
    if owner:
        folder.reclaim()
    folder.prepare()
    if folder.model_zip.exists():
        _fresh_unpack(folder.model_zip, folder.model_code)
    # modules training code may import (never must), in the run's own folder, which every
    # container mounts already, wherever dlaasd itself runs
    helpers = folder.job / ".dlaas"
    helpers.mkdir(exist_ok=True)
    for module in HELPERS.glob("*.py"):
        shutil.copyfile(module, helpers / module.name)
    if hyperparameters:  # an experiment's trial: Watson ML's config.json in MODEL_DIR
        (folder.model_code / "config.json").write_text(json.dumps(hyperparameters, indent=2))
    if owner:
        folder.give_to(*owner)


def _fresh_unpack(zip_path: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    try:
        archive.unpack(zip_path, dest)
    except archive.ArchiveError as exc:
        raise RunError(Code.BAD_MODEL, "; ".join(exc.problems)) from None
