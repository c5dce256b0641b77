"""Drives one run through its phases, from wherever it stands (so a restart resumes it).

    DOWNLOADING  phases/stage_in.py   unpack the model code, stage the training data in
    PROCESSING   phases/train.py      start the learners (or find them again), wait,
                                      decide the outcome
    STORING      phases/stage_out.py  upload results, logs and the definition; only then
                                      the final status

The outcome of the training is decided when the learners end and kept in the run's
`outcome` column, so a restart during STORING still ends with the right status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from . import diskspace
from .codes import DOWNLOADING, FAILED, HALTED, PROCESSING, STORING, Code
from .database import now
from .errors import RunError
from .manifest import Manifest
from .phases import Context
from .phases.stage_in import stage_in
from .phases.stage_out import remove_learners, stage_out, upload_definition_early
from .phases.train import train
from .records import Outcome, Run
from .runfolder import RunFolder

log = logging.getLogger(__name__)


class Lifecycle(Context):
    async def drive(self, run_id: str) -> None:
        """Drive the run to its end. A full disk that keeps SQLite from recording it gives
        the reserve back (or waits for space) and resumes from the status recorded."""
        delay = 1.0
        while True:
            try:
                await self._drive(run_id)
                return
            except asyncio.CancelledError:
                raise  # daemon shutdown: the run resumes from its status at the next start
            except Exception as exc:
                if not diskspace.is_disk_full(exc):
                    log.exception("event=run_error run=%s", run_id)
                    self.handles.pop(run_id, None)
                    self.to(
                        run_id, FAILED, f"dlaasd internal error: {exc}", error_code=Code.INTERNAL
                    )
                    return
                log.error("event=disk_full run=%s error=%r", run_id, str(exc))
                if not self.reserve.release():  # nothing left to give: wait for space
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)

    async def _drive(self, run_id: str) -> None:
        run = self.db.get(run_id)
        m = self.manifest_of(run)
        folder = self.folder(run_id)
        if self.executor.stages_data:
            await self._follow(run, m, folder)
            return
        # a run found past DOWNLOADING after a restart may have learners to find again,
        # and one found in STORING may have some of its results uploaded already
        found = run.status
        early: Callable[[], None] | None = None  # uploads the definition during a fresh training
        if run.status == DOWNLOADING:
            outcome = await _guard(stage_in(self, run, m, folder))
            if outcome is None and self.halted(run_id):
                outcome = Outcome(HALTED, "halted while the data was downloading")
            if outcome is None:
                run = self.to(run_id, PROCESSING, "training", started=now())
                early = partial(upload_definition_early, self, run_id, folder)
            else:
                run = self.to(run_id, STORING, "uploading logs", outcome=outcome.to_json())
        if run.status == PROCESSING:
            trained = await _guard(train(self, run, m, folder, found != DOWNLOADING, early))
            assert trained is not None  # a training always ends with an outcome
            run = self.to(
                run_id,
                STORING,
                "uploading results and logs",
                outcome=trained.to_json(),
                exit_code=trained.exit_code,
            )
        if run.status == STORING:
            await stage_out(self, run, m, folder, resume=found == STORING)

    async def _follow(self, run: Run, m: Manifest, folder: RunFolder) -> None:
        """A run whose learners stage their own data (on a cluster's nodes), from
        wherever it stands: start them unless they exist (a cluster's queue may hold
        them: the run stays QUEUED until it starts them), follow the phase they report,
        and record the outcome once they end: they stored the results themselves."""
        run_id = run.id
        # before any await: the runs line up in the order they are driven (submit order)
        self.line_up(run_id)
        try:
            outcome = await _guard(train(self, run, m, folder, resumed=True))
        finally:
            self.handed_over(run_id)
        assert outcome is not None  # a training always ends with an outcome
        if self.db.get(run_id).started:
            objects, bucket, prefix = self.results_location(run_id, m)
            self.db.update(run_id, results=f"s3://{bucket}/{prefix}")
        self.to(
            run_id,
            outcome.status,
            outcome.message,
            error_code=outcome.error_code,
            exit_code=outcome.exit_code,
            outcome=outcome.to_json(),
        )
        try:  # after the final status: nobody waits for it, and it cannot change it
            await remove_learners(self, run_id)
        except Exception:
            log.exception("event=tidy_failed run=%s", run_id)


async def _guard(phase: Awaitable[Outcome | None]) -> Outcome | None:
    """Run a phase; a RunError becomes a FAILED outcome (the logs still get stored)."""
    try:
        return await phase
    except RunError as exc:
        return Outcome(FAILED, exc.message, exc.code)
