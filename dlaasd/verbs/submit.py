"""Submit: check everything that can be known now (manifest, model archive, what this
machine has, the image, the training data bucket), then queue the run."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import string
from pathlib import Path

from .. import admission, archive, filemodes, manifest, notifications, secret, sweep
from ..codes import QUEUED, Code
from ..errors import DlaasError, Invalid, RunError
from ..executors import ExecutorUnavailable
from ..objectstore import StoreUnavailable
from ..runfolder import RunFolder
from ..schema import Problem
from . import priority as priorities
from .context import Context

log = logging.getLogger(__name__)


def refused(
    exc: manifest.ManifestError | sweep.ExperimentError | admission.AdmissionError,
    message: str,
    at: str = "",
) -> Invalid:
    """Every problem of a document; `at` places them inside a larger one."""
    problems = [Problem(at + p.path, p.message, p.line) for p in exc.problems]
    return Invalid(message, exc.code, problems)


def parse_manifest(text: bytes, what: str = "the manifest", at: str = "") -> manifest.Manifest:
    try:
        return manifest.parse(text)
    except manifest.ManifestError as exc:
        raise refused(exc, f"{what} has problems; nothing was queued", at) from None


def new_id(kind: str = "training") -> str:
    """FfDL's ids: "training-" (or "experiment-") and nine random letters or digits."""
    alphabet = string.ascii_lowercase + string.digits
    return f"{kind}-" + "".join(secrets.choice(alphabet) for _ in range(9))


async def submit(
    ctx: Context,
    manifest_text: bytes,
    model_zip: Path | None,
    source: str = "api",
    priority: int | None = None,
) -> dict:
    """Check everything that can be known now, then queue. `model_zip` is moved."""
    m = parse_manifest(manifest_text)
    extra = {"priority": priorities.check(ctx, priority)}
    admitted = await check(ctx, m, model_zip)
    return queue(ctx, m, manifest_text, admitted, model_zip, source, extra)


async def check(
    ctx: Context, m: manifest.Manifest, model_zip: Path | None, refusal: str = "the run was refused"
) -> admission.Admitted:
    """What a run needs before it may queue: a sound model archive, a machine that can
    run it and its training data bucket. An experiment checks its trials once. A
    refusal also carries the manifest's notes, so that one attempt says everything."""
    try:
        return await _check(ctx, m, model_zip, refusal)
    except DlaasError as exc:
        exc.warnings = [*m.notes, *exc.warnings]
        raise


async def _check(
    ctx: Context, m: manifest.Manifest, model_zip: Path | None, refusal: str
) -> admission.Admitted:
    if model_zip is not None:
        try:
            await asyncio.to_thread(_accept_archive, model_zip, ctx.config.secret_env)
        except archive.ArchiveError as exc:
            raise Invalid(
                "the model archive has problems; nothing was queued",
                exc.code,
                [Problem("model", p) for p in exc.problems],
            ) from None
    try:
        gpus = None if ctx.executor.places_runs else [g.name for g in ctx.gpus.list()]
        admitted = admission.admit(m, ctx.config, gpus)
    except admission.AdmissionError as exc:
        what = (
            "it asks for more than this machine has"
            if exc.code == Code.IMPOSSIBLE_REQUEST
            else "it cannot run here"
        )
        raise refused(exc, f"{refusal}: {what}; nothing was queued") from None
    _check_notify(ctx, m, refusal)
    admitted.warnings += await _check_image(ctx, m, admitted.image, refusal)
    admitted.warnings += await _check_data_store(ctx, m)
    return admitted


def _accept_archive(model_zip: Path, patterns: list[str]) -> None:
    """A sound archive, whose own manifest.yml (a zipped folder's) keeps no secret."""

    def redacted(data: bytes) -> bytes:
        text = data.decode(errors="replace")
        kept = secret.redact(text, patterns)
        return data if kept == text else kept.encode()

    archive.check(model_zip)
    archive.edit_manifest(model_zip, redacted)


def _check_notify(ctx: Context, m: manifest.Manifest, refusal: str) -> None:
    """A manifest's webhooks only where the config allows them (notify.allowed_webhooks)."""
    allowed = ctx.config.notify.allowed_webhooks
    problems = [
        Problem(
            f"notify.webhooks[{i}]",
            f"{url!r} is not allowed here; allowed: "
            + (", ".join(f"{p}..." for p in allowed) or "none (notify.allowed_webhooks)"),
        )
        for i, url in enumerate(m.notify.webhooks if m.notify else [])
        if not notifications.allowed(url, allowed)
    ]
    if problems:
        raise Invalid(f"{refusal}: a webhook the config does not allow", problems=problems)


async def _check_image(ctx: Context, m: manifest.Manifest, image: str, refusal: str) -> list[str]:
    """An image not on this machine: refused now when pulling is off (S103, where
    the run would fail anyway), else said; the pull happens when the run starts."""
    try:
        present = await asyncio.to_thread(ctx.executor.image_present, image)
    except ExecutorUnavailable as exc:
        return [f"Docker did not answer ({exc}); the image {image} was not checked"]
    if present or present is None:  # None: only the nodes can tell
        return []
    if not ctx.config.containers.pull_missing_images:
        message = (
            f"image {image!r} is not on this machine and pulling is off "
            "(containers.pull_missing_images)"
        )
        fix = (
            "build or pull it first, or map the framework to an image this machine has "
            "(the config's frameworks table)"
        )
        where = "framework.image" if m.framework.image else "framework.version"
        raise Invalid(
            f"{refusal}: {message}; nothing was queued",
            Code.IMAGE_MISSING,
            [Problem(where, f"{message}; {fix}")],
        )
    return [f"image {image!r} is not on this machine: it is pulled when the run starts"]


def queue(
    ctx: Context,
    m: manifest.Manifest,
    manifest_text: bytes,
    admitted: admission.Admitted,
    model_zip: Path | None,
    source: str,
    extra: dict | None = None,
) -> dict:
    """Queue a checked run. `model_zip` is moved into its folder."""
    run_id = new_id()
    folder = RunFolder.of(ctx.config.state_path, run_id)
    try:  # a full disk, say: no folder is left without its row (nor its secrets)
        folder.root.mkdir(parents=True)
        # its secrets apart, readable by dlaasd alone; the text kept for reading without
        ctx.lifecycle.vault.put(run_id, secret.secrets_of(m, ctx.config.secret_env))
        text = secret.redact(manifest_text, ctx.config.secret_env)
        same = text == manifest_text.decode(errors="replace")
        fd = os.open(folder.manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(manifest_text if same else text.encode())  # as submitted, if no secret
        if model_zip is not None:
            shutil.move(model_zip, folder.model_zip)
        filemodes.seal_run(folder.root)
        request = admission.request_of(run_id, m)
        ctx.db.insert_run(
            {
                "id": run_id,
                "name": m.name,
                "description": m.description,
                "owner_uid": ctx.caller.uid,
                "owner_name": ctx.caller.name,
                "status": QUEUED,
                "status_message": "waiting for resources",
                "gpus": [],
                "gpu_count": request.gpus,
                "gpu_type": request.gpu_type,
                "cpus": request.cpus,
                "memory": request.memory,
                "learners": m.learners,
                "framework": f"{m.framework.name} {m.framework.version}".strip(),
                "image": admitted.image,
                "manifest": text,
                "source": source,
                "staging": {},
                "warnings": admitted.warnings,
                "priority": 0,
                **(extra or {}),
            }
        )
    except BaseException:
        folder.remove()
        ctx.lifecycle.vault.remove(run_id)
        raise
    log.info("event=submitted run=%s name=%r owner=%s", run_id, m.name, ctx.caller.uid)
    ctx.wake()
    return {"id": run_id, "status": QUEUED, "warnings": admitted.warnings}


async def _check_data_store(ctx: Context, m: manifest.Manifest) -> list[str]:
    """Refuse wrong credentials (C103) and a missing data bucket now, where the store
    answers; if it does not, queue anyway and let DOWNLOADING retry."""
    store = m.data_store
    if not store or store.type == "mount_volume" or not store.training_data:
        return []
    objects = ctx.lifecycle.store_for(m)
    bucket, written = store.training_data.bucket, store.training_data.container
    try:
        exists = await asyncio.to_thread(objects.bucket_exists, bucket)
    except StoreUnavailable as exc:
        return [
            f"the object store at {objects.endpoint.label} did not answer ({exc}); "
            "the run is queued and the download will be retried"
        ]
    except RunError as exc:  # C103: the store refused the credentials
        raise Invalid(
            exc.message, exc.code, [Problem("data_stores[0].connection", exc.message)]
        ) from None
    if not exists:
        where = "" if objects is ctx.objects else f" at {objects.endpoint.label}"
        named = repr(bucket) + (f" ({written!r} in the manifest)" if bucket != written else "")
        raise Invalid(
            f"the training data bucket {named} does not exist{where}; "
            f"upload the data first: dlaasctl data upload {written} PATH...",
            Code.BAD_MANIFEST,
            [
                Problem(
                    "data_stores[0].training_data.container",
                    f"bucket {named} does not exist",
                )
            ],
        )
    return []
