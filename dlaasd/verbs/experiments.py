"""Experiments: one file turned into queued trials, ranked by their objective as they
report it, weak trials stopped early (ASHA, EarlyStopping). Each trial is an ordinary run;
what an experiment adds is kept in its own table and derived from its trials when asked."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import schema, sweep
from ..access import Caller
from ..codes import COMPLETED, FINAL, HALTED, PROCESSING, QUEUED, Code
from ..errors import DlaasError, Invalid
from ..metrics import resolve_name
from ..records import Experiment
from ..secret import redact
from .context import Context, resolve
from .halt import halt as halt_run
from .submit import check, new_id, parse_manifest, queue, refused

log = logging.getLogger(__name__)


# --- creating ----------------------------------------------------------------------


async def create(
    ctx: Context, spec_text: bytes, manifest_text: bytes | None, model_zip: Path | None
) -> dict:
    """Check the experiment and every trial's manifest, then queue them all; a problem
    anywhere queues none. `model_zip` is left to the caller; each trial gets a copy."""
    try:
        spec = sweep.parse(spec_text)
    except sweep.ExperimentError as exc:
        raise refused(exc, "the experiment file has problems; nothing was queued") from None
    at = ""
    if isinstance(spec.manifest, dict):
        manifest_text = schema.dump_yaml(spec.manifest).encode()
        at = "manifest."
    elif manifest_text is None:
        raise Invalid(
            f"the experiment names the manifest {spec.manifest!r}: send it as "
            "the 'manifest' part (dlaasctl experiment run does)",
            Code.BAD_MANIFEST,
        )
    base = parse_manifest(manifest_text, "the experiment's manifest", at)
    # the trials differ only in name and environment: what they ask for is checked once
    admitted = await check(ctx, base, model_zip, "the experiment's trials were refused")
    data, _ = schema.load_yaml(manifest_text)  # numbers keep their text: 1.10 stays
    trials = []
    for i, values in enumerate(sweep.trials(spec)):
        env = {**(data.get("env") or {}), **values, "SUBID": str(i)}
        trial = {**data, "name": f"{spec.name}-{i}", "env": env}
        text = schema.dump_yaml(trial).encode()
        trials.append((values, text, parse_manifest(text, f"trial {i}'s manifest")))
    exp_id = new_id("experiment")
    ctx.db.insert_experiment(
        {
            "id": exp_id,
            "name": spec.name,
            "description": spec.description,
            "owner_uid": ctx.caller.uid,
            "owner_name": ctx.caller.name,
            # an inline manifest's secrets are the trials' (in the vault), not the file's
            "spec": redact(spec_text, ctx.config.secret_env, at=("manifest",)),
            "objective": spec.objective.name,
            "goal": spec.objective.maximize_or_minimize,
            "method": spec.method.name,
            "trials": len(trials),
        }
    )
    runs = [
        queue(
            ctx,
            m,
            text,
            admitted,
            _copy(model_zip),
            source=f"experiment:{exp_id}",
            extra={"experiment_id": exp_id, "hyperparameters": values},
        )["id"]
        for values, text, m in trials
    ]
    log.info(
        "event=experiment_created id=%s trials=%d method=%s",
        exp_id,
        len(runs),
        spec.method.name,
    )
    return {"id": exp_id, "trials": len(runs), "runs": runs, "warnings": admitted.warnings}


# --- reading -----------------------------------------------------------------------


def get(ctx: Context, ref: str) -> Experiment:
    exp_id = resolve(ctx.db, ref, "experiments", "experiment", "dlaasctl experiment list")
    return ctx.db.experiment(exp_id)


def show(ctx: Context, ref: str, curves: bool = False) -> dict:
    row = get(ctx, ref)
    ctx.caller.check_sees(row, "trials")
    return describe(ctx, row, curves)


# What everyone sees of another's experiment: the queue's part, not how it fares.
QUEUE_FIELDS = ("id", "name", "status", "owner", "owner_uid", "trials", "counts", "submitted")


def summaries(ctx: Context, limit: int) -> list[dict]:
    """The newest experiments, without their trials; another's only as the queue shows."""
    out = []
    for row in ctx.db.experiments(limit):
        d = describe(ctx, row)
        d.pop("runs")
        out.append(d if ctx.caller.sees(row) else {k: d[k] for k in QUEUE_FIELDS if k in d})
    return out


def describe(ctx: Context, row: Experiment, curves: bool = False) -> dict:
    """The experiment with its trials ranked by the objective, best first."""
    runs, _ = ctx.db.runs(limit=100_000, experiment_id=row.id, newest_first=False)
    ids = [r.id for r in runs]
    metric = resolve_name(row.objective, ctx.db.metric_names(ids)) if ids else None
    series = ctx.db.curves(ids, metric) if metric else {i: [] for i in ids}
    value = {i: (series[i][-1][1] if series[i] else None) for i in ids}
    maximize = row.goal == "maximize"
    order = sweep.rank(value, maximize)
    by_id = {r.id: r for r in runs}
    done = [i for i in order if by_id[i].status == COMPLETED and value[i] is not None]
    best = done[0] if done else next((i for i in order if value[i] is not None), None)
    trials = []
    for i in order:
        r = by_id[i]
        trial: dict[str, Any] = {
            "id": i,
            "status": r.status,
            "error_code": r.error_code or None,
            "status_message": r.status_message or "",
            "hyperparameters": r.hyperparameters or {},
            "objective_value": value[i],
            "last_step": series[i][-1][0] if series[i] else None,
            "halted_early": r.status == HALTED
            and (r.halt_reason or "").startswith("stopped early"),
        }
        if curves:
            trial["curve"] = series[i]
        trials.append(trial)
    statuses = {r.status for r in runs}
    if statuses <= FINAL:
        status = (
            HALTED if row.halt_requested else (COMPLETED if COMPLETED in statuses else "FAILED")
        )
    else:
        status = QUEUED if statuses == {QUEUED} else PROCESSING
    ended = [r.completed for r in runs if r.completed]
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "status": status,
        "owner": row.owner_name,
        "owner_uid": row.owner_uid,
        "objective": {"name": row.objective, "goal": row.goal, "metric": metric},
        "method": row.method,
        "trials": row.trials,
        "counts": {s: sum(1 for r in runs if r.status == s) for s in sorted(statuses)},
        "best_run": best,
        "best_hyperparameters": by_id[best].hyperparameters if best else None,
        "best_value": value[best] if best else None,
        "submitted": row.submitted,
        "completed": max(ended) if statuses <= FINAL and ended else None,
        "runs": trials,
    }


# --- stopping ----------------------------------------------------------------------


async def halt(ctx: Context, ref: str) -> dict:
    """Halt every trial still running; the experiment ends HALTED."""
    row = get(ctx, ref)
    ctx.caller.check_may(row, "halt")
    ctx.db.update_experiment(row.id, halt_requested=1)
    runs, _ = ctx.db.runs(limit=100_000, experiment_id=row.id)
    for r in runs:
        if r.status not in FINAL and r.status != "STORING":
            await halt_run(ctx, r.id, f"the experiment was halted by {ctx.caller.name}")
    return describe(ctx, ctx.db.experiment(row.id))


ROOT = Caller(0, 0)  # dlaasd itself, stopping a trial early


class EarlyStopping:
    """ASHA: as trials report, stop those that fell outside the top at a rung."""

    def __init__(self, ctx: Context):
        self.ctx = ctx.as_(ROOT)
        self._asha: dict[str, sweep.Asha] = {}
        self._stopping: set[asyncio.Task] = set()

    def metrics_arrived(self, run_id: str) -> None:
        """ASHA: a trial reported; stop the trials that fell outside the top at a rung."""
        exp_id = self.ctx.db.value(run_id, "experiment_id")
        if not exp_id:
            return
        row = self.ctx.db.experiment(exp_id)
        if row.method != "asha" or row.halt_requested:
            return
        asha = self._asha.get(exp_id)
        if asha is None:
            spec = sweep.parse(row.spec)
            asha = self._asha[exp_id] = sweep.Asha(spec.method, spec.maximize)
        runs, _ = self.ctx.db.runs(limit=100_000, experiment_id=exp_id)
        ids = [r.id for r in runs]
        metric = resolve_name(row.objective, self.ctx.db.metric_names(ids))
        if metric is None:
            return
        active = {r.id for r in runs if r.status == PROCESSING and not r.halt_requested}
        for stop in asha.stops(self.ctx.db.curves(ids, metric), active):
            log.info(
                "event=asha_stop experiment=%s run=%s rung=%d value=%s cutoff=%s",
                exp_id,
                stop.run_id,
                stop.rung,
                stop.value,
                stop.cutoff,
            )
            task = asyncio.create_task(self._stop(stop.run_id, stop.reason(metric)))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _stop(self, run_id: str, reason: str) -> None:
        try:
            await halt_run(self.ctx, run_id, reason)
        except DlaasError as exc:  # it ended on its own meanwhile
            log.info("event=asha_stop_skipped run=%s reason=%r", run_id, exc.message)


def _copy(model_zip: Path | None) -> Path | None:
    """Each trial gets its own model archive (a hard link where possible)."""
    if model_zip is None:
        return None
    fd, name = tempfile.mkstemp(suffix=".zip", dir=model_zip.parent)
    os.close(fd)
    os.unlink(name)
    try:
        os.link(model_zip, name)
    except OSError:
        shutil.copyfile(model_zip, name)
    return Path(name)
