"""STORING: upload the results, the logs and the definition; only then the final status
(the outcome decided when the training ended), and the learners are removed."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..codes import FAILED, Code
from ..errors import RunError
from ..manifest import Manifest
from ..objectstore import Transfer
from ..records import Outcome, Run
from ..runfolder import RunFolder
from . import Context, staging_with

log = logging.getLogger(__name__)


def _definition_files(run_id: str, folder: RunFolder) -> list[tuple[Path, str]]:
    return [(p, f"{run_id}/{p.name}") for p in folder.definition]


def upload_definition_early(ctx: Context, run_id: str, folder: RunFolder) -> None:
    """Upload the definition while the training runs; STORING only waits for it."""
    ctx.definitions[run_id] = asyncio.create_task(_upload_definition(ctx, run_id, folder))


async def _upload_definition(ctx: Context, run_id: str, folder: RunFolder) -> bool:
    """Best effort, early: if the store is down now, STORING tries again."""
    try:
        files = _definition_files(run_id, folder)
        bucket = ctx.config.store.definitions_bucket
        await asyncio.to_thread(ctx.objects.stage_out, files, bucket, Transfer(), False)
        return True
    except Exception as exc:
        log.info("event=definition_upload_deferred run=%s error=%r", run_id, str(exc))
        return False


async def stage_out(
    ctx: Context, run: Run, m: Manifest, folder: RunFolder, resume: bool = True
) -> None:
    run_id = run.id
    outcome = run.outcome or Outcome(FAILED, "the run ended without an outcome", Code.INTERNAL)
    objects, bucket, prefix = ctx.results_location(run_id, m)
    outputs = [(p, f"{run_id}/{rel}") for p, rel in folder.outputs()]
    early = ctx.definitions.pop(run_id, None)
    definition = [] if early and await early else _definition_files(run_id, folder)
    stats = Transfer()
    # the hooks (the drop folder's copy) read the same local files: alongside the upload
    hooks = asyncio.gather(
        *(asyncio.to_thread(hook, run, folder) for hook in ctx.after_store),
        return_exceptions=True,
    )

    def upload(attempt: int) -> None:  # the results and the definition side by side
        again = resume or attempt > 1  # a retry follows a failed attempt
        stop = lambda: ctx.stopping  # noqa: E731
        if not definition:
            objects.stage_out(outputs, bucket, stats, again, stop, folder.open)
            return
        with ThreadPoolExecutor(2) as pool:
            jobs = [
                pool.submit(objects.stage_out, outputs, bucket, stats, again, stop, folder.open),
                pool.submit(
                    ctx.objects.stage_out,
                    definition,
                    ctx.config.store.definitions_bucket,
                    Transfer(),
                ),
            ]
            for job in jobs:
                job.result()

    try:
        await ctx.with_retries(
            run_id,
            upload,
            stats,
            "uploading",
            ctx.config.store.upload_retry_for,
            Code.UPLOAD_FAILED,
        )
    except RunError as exc:
        kept = f"the results stay in {folder.job}"
        if outcome.status == FAILED:  # the first failure is the one to report
            code = outcome.error_code
            message = f"{outcome.message}; also {exc.message}; {kept}"
        else:
            code, message = exc.code, f"{exc.message}; {kept}"
        await _finish_hooks(run_id, hooks)
        ctx.to(run_id, FAILED, message, error_code=code, exit_code=outcome.exit_code)
        await remove_learners(ctx, run_id)
        return
    staging = staging_with(
        run,  # as STORING found it: nothing else adds figures meanwhile
        bytes_uploaded=stats.bytes,
        files_uploaded=stats.files,
        upload_seconds=round(stats.seconds, 3),
    )
    await _finish_hooks(run_id, hooks)
    ctx.to(  # with the figures and the results' place, in one transaction
        run_id,
        outcome.status,
        outcome.message,
        error_code=outcome.error_code,
        exit_code=outcome.exit_code,
        staging=staging,
        results=f"s3://{bucket}/{prefix}",
    )
    # tidying up after the final status: nobody waits for it, and it cannot change it
    try:
        await remove_learners(ctx, run_id)
        await asyncio.to_thread(folder.tidy, ctx.config.results.keep_local)
    except Exception:
        log.exception("event=tidy_failed run=%s", run_id)


async def _finish_hooks(run_id: str, hooks: asyncio.Future[list[BaseException | None]]) -> None:
    for result in await hooks:
        if isinstance(result, Exception):
            log.error("event=after_store_failed run=%s error=%r", run_id, str(result))


async def remove_learners(ctx: Context, run_id: str) -> None:
    handles = ctx.handles.pop(run_id, None)
    if handles is None:  # started before a restart: ask the executor
        found = await ctx.call(run_id, ctx.executor.find, run_id)
        handles = [f.handle for _, f in sorted(found.items())]
    for handle in handles:
        await ctx.call(run_id, ctx.executor.remove, handle)
