"""Delete: forget a finished run and its local files (with purge, its stored results)."""

from __future__ import annotations

import asyncio

from ..codes import FINAL, Code
from ..errors import Conflict, RunError, Unavailable
from ..objectstore import StoreUnavailable
from ..runfolder import RunFolder
from .context import Context, get_run


async def delete(ctx: Context, ref: str, purge: bool = False) -> dict:
    """Forget a run that ended: its row, its folder, its secrets and, with `purge`, its
    results in the object store."""
    run = get_run(ctx, ref)
    ctx.caller.check_may(run, "delete")
    if run.status not in FINAL:
        raise Conflict(f"{run.id} is {run.status}; halt it first (dlaasctl halt {run.id})")
    removed = 0
    if purge and run.results:
        objects, bucket, prefix = ctx.lifecycle.results_location(
            run.id, ctx.lifecycle.manifest_of(run)
        )
        try:
            removed = await asyncio.to_thread(objects.remove_prefix, bucket, prefix)
        except StoreUnavailable as exc:
            raise Unavailable(f"could not remove the results from the store: {exc}") from None
        except RunError as exc:
            if exc.code != Code.DOWNLOAD_FAILED:  # a bucket that is gone holds nothing
                raise
    await asyncio.to_thread(RunFolder.of(ctx.config.state_path, run.id).remove)
    ctx.db.delete(run.id)
    ctx.lifecycle.vault.remove(run.id)
    return {"id": run.id, "deleted": True, "objects_removed": removed}
