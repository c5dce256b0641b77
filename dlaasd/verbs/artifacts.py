"""Artifacts: a run's files: its results (with its logs), its definition (the manifest
and model as submitted), and the training log as it grows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from ..codes import FINAL
from ..errors import Invalid, NotFound
from ..objectstore import key_problem, safe_relative
from ..records import Run
from ..runfolder import RunFolder
from .context import Context, Local, Stored, visible_run

log = logging.getLogger(__name__)


async def listing(ctx: Context, ref: str, kind: str) -> dict:
    """The files of a run's results or definition, and where they are."""
    run = visible_run(ctx, ref, kind)
    where, files = await asyncio.to_thread(files_of, ctx, run, kind)
    return {"id": run.id, "location": where, "files": files}


async def file(ctx: Context, ref: str, kind: str, rel: str) -> Local | Stored:
    """Where one file of a run's results or definition is, if the caller may see it."""
    run = visible_run(ctx, ref, kind)
    return await asyncio.to_thread(source, ctx, run, kind, rel)


def log_file(ctx: Context, run: Run, learner: int) -> tuple[RunFolder, Path]:
    """A learner's training log: its run's folder, and the file in it."""
    folder = RunFolder.of(ctx.config.state_path, run.id)
    return folder, folder.learner_log(learner)


def _places(ctx: Context, run: Run, kind: str) -> tuple[dict[str, Path], Stored | None]:
    """Where a run's results or definition are: (local files by path, and the store,
    bucket and prefix once uploaded, else None)."""
    folder = RunFolder.of(ctx.config.state_path, run.id)
    if kind == "definition":
        local = {p.name: p for p in folder.definition}
        return local, Stored(ctx.objects, ctx.config.store.definitions_bucket, f"{run.id}/")
    local = {rel: p for p, rel in folder.outputs()}
    if run.results and run.status in FINAL:
        m = ctx.lifecycle.manifest_of(run)
        return local, Stored(*ctx.lifecycle.results_location(run.id, m))
    return local, None


def files_of(ctx: Context, run: Run, kind: str) -> tuple[str, list[dict]]:
    """(where, files) of a run's results or definition: from the store once uploaded,
    else from the run's folder."""
    local, stored = _places(ctx, run, kind)
    if stored:
        objects, bucket, prefix = stored.objects, stored.bucket, stored.prefix
        try:
            files = [
                {"path": o["key"][len(prefix) :], "size": o["size"], "source": "store"}
                for o in objects.list_objects(bucket, prefix)
                if not o["dir"]
            ]
            if files:
                return f"s3://{bucket}/{prefix}", files
        except Exception as exc:  # the local copy may still serve
            log.warning("event=artifacts_store_error run=%s error=%r", run.id, str(exc))
    folder = RunFolder.of(ctx.config.state_path, run.id)
    files = []
    for rel, p in local.items():
        with contextlib.suppress(FileNotFoundError):  # gone since the walk (a temp file)
            files.append({"path": rel, "size": p.lstat().st_size, "source": "local"})
    return str(folder.job), files


def source(ctx: Context, run: Run, kind: str, rel: str) -> Local | Stored:
    """Where one file is: the local copy while there is one (the same bytes), else the
    store (`prefix` is then the object's key)."""
    if not safe_relative(rel):
        raise Invalid(
            f"file path {rel!r}: name a file inside the run's {kind}, as "
            f"`GET /v1/runs/{run.id}/{kind}` lists it (no '..', no leading '/')",
        )
    local, stored = _places(ctx, run, kind)
    if rel in local:
        return Local(RunFolder.of(ctx.config.state_path, run.id).root, local[rel])
    if stored is None or key_problem(rel):  # no object can have that name
        raise NotFound(f"{run.id} has no {kind} file {rel!r}")
    return Stored(stored.objects, stored.bucket, stored.prefix + rel)
