"""Describe: a run's public shape (`show`), the listing of runs (`list`), a run's metric
points. The queue is everyone's; what a run says about itself is its owner's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .. import manifest
from ..access import public_message
from ..codes import FINAL, Status
from ..records import Run, RunSummary
from .context import Context, visible_run


def show(ctx: Context, ref: str) -> dict:
    return describe(ctx, visible_run(ctx, ref, "manifest and history"))


def runs(
    ctx: Context,
    limit: int,
    offset: int,
    statuses: Sequence[Status] = (),
    experiment_id: str | None = None,
) -> tuple[list[dict], int]:
    """(runs newest first, how many in all); another's status message says only what
    its failure code means."""
    rows, total = ctx.db.runs(
        limit=limit, offset=offset, status=statuses or None, experiment_id=experiment_id
    )
    out = []
    for r in rows:
        if not ctx.caller.sees(r):
            r = replace(r, status_message=public_message(r))
        out.append(describe(ctx, r, full=False))
    return out, total


def metrics(ctx: Context, run_id: str, after: int = 0, name: str | None = None) -> list[dict]:
    """A run's metric points after `after` (a seq), in the order they came."""
    return ctx.db.metrics(run_id, after, name)


def ended(ctx: Context, run_id: str) -> bool:
    """Whether the run has reached a final status (what following a run waits for)."""
    return ctx.db.value(run_id, "status") in FINAL


def describe(ctx: Context, run: RunSummary, full: bool = True) -> dict:
    """The public shape of a run (what `show --json` prints); `full` (a whole Run) adds
    its manifest, staging figures, history and usage."""
    out: dict[str, Any] = {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "error_code": run.error_code or None,
        "status_message": run.status_message or "",
        "owner": run.owner_name,
        "owner_uid": run.owner_uid,
        "gpus": run.gpus,
        "cpus": run.cpus,
        "memory": run.memory,
        "learners": run.learners,
        "framework": run.framework,
        "image": run.image,
        "exit_code": run.exit_code,
        "submitted": run.submitted,
        "started": run.started,
        "completed": run.completed,
        "results": run.results,
        "experiment_id": run.experiment_id,
        "priority": run.priority,
    }
    if full and isinstance(run, Run):
        staging = {
            "bytes_downloaded": 0,
            "files_downloaded": 0,
            "cache_hits": 0,
            "download_seconds": 0.0,
            "bytes_uploaded": 0,
            "files_uploaded": 0,
            "upload_seconds": 0.0,
        }
        out["staging"] = {**staging, **run.staging.to_json()}
        out["description"] = run.description
        out["hyperparameters"] = run.hyperparameters
        out["manifest"] = run.manifest
        out["buckets"] = _buckets_of(run.manifest)
        out["warnings"] = run.warnings
        out["history"] = [e.to_json() for e in ctx.db.events(run.id)]
        out["usage"] = ctx.db.usage(run.id) or ctx.db.usage_now(run.id).to_json()
    return out


def _buckets_of(manifest_text: str) -> list[dict[str, str]]:
    """A stored run's buckets, by the manifest's names and the store's (`show`)."""
    try:
        return manifest.parse(manifest_text).buckets()
    except manifest.ManifestError:  # a run from a dlaasd that read manifests otherwise
        return []
