"""Halt: a queued run ends at once; a placed one is signalled (SIGTERM, then SIGKILL after
the grace period) and ends when its containers have stopped and its logs are stored."""

from __future__ import annotations

from ..codes import FINAL, HALTED, QUEUED, STORING
from ..errors import Conflict
from ..records import Run
from .context import Context, get_run


async def halt(ctx: Context, ref: str, reason: str = "") -> Run:
    """SIGTERM, then SIGKILL after the grace period. `reason` becomes the run's final
    message (an experiment's early stop says why)."""
    run = get_run(ctx, ref)
    ctx.caller.check_may(run, "halt")
    run_id, status = run.id, run.status
    if status in FINAL:
        raise Conflict(f"{run_id} has already ended ({status})")
    if status == STORING:
        raise Conflict(f"{run_id} has finished training and is storing its results")
    reason = reason or f"halted by {ctx.caller.name}"
    if status == QUEUED and not ctx.driving(run_id):  # not handed to a cluster yet
        message = f"{reason} before it started"
        ctx.db.transition(run_id, HALTED, message, halt_requested=1, halt_reason=message)
        ctx.changed(run_id)
        return ctx.db.get(run_id)
    ctx.db.update(run_id, halt_requested=1, halt_reason=reason)
    ctx.lifecycle.request_halt(run_id)
    ctx.db.note(run_id, f"halting: {reason}")
    return ctx.db.get(run_id)
