"""Priority: where a run waits in the queue. Its submitter picks one within the config's
range (fair_share.priority_min/priority_max); root and the admin group move waiting runs."""

from __future__ import annotations

import logging

from ..codes import QUEUED
from ..config import PRIORITY_BOUND
from ..errors import Conflict, Forbidden, Invalid
from ..records import Run
from ..schema import Problem
from .context import Context, get_run

log = logging.getLogger(__name__)


def check(ctx: Context, priority: int | None) -> int:
    """The priority a run of the caller gets: theirs to choose within the config's range
    (root and the admin group: any); none given, 0 or the nearest the range allows."""
    caller = ctx.caller
    lo, hi = ctx.config.fair_share.priority_range(caller.name)
    if caller.privileged:
        lo, hi = -PRIORITY_BOUND, PRIORITY_BOUND
    if priority is None:
        return min(max(0, lo), hi)
    if not lo <= priority <= hi:
        allowed = f"from {lo} to {hi}" if lo != hi else f"only {lo}"
        raise Invalid(
            f"priority {priority} is not allowed for {caller.name}: {allowed} "
            "(the config's fair_share.priority_min/priority_max); nothing was queued",
            problems=[Problem("priority", f"found {priority}; allowed {allowed}")],
        )
    return priority


def set_priority(ctx: Context, ref: str, priority: int) -> Run:
    """Move a waiting run up or down the queue: root and the admin group only."""
    run = get_run(ctx, ref)
    caller = ctx.caller
    if not caller.privileged:
        group = ctx.config.admin_group
        who = f"root or members of the group {group!r}" if group else "root"
        raise Forbidden(
            f"only {who} may change a run's priority; "
            "give yours at submit (dlaasctl train --priority N)",
        )
    if run.status != QUEUED:
        raise Conflict(f"{run.id} is {run.status}: only a waiting run has a priority to change")
    ctx.db.update(run.id, priority=priority)
    log.info("event=priority run=%s priority=%d by=%s", run.id, priority, caller.uid)
    ctx.wake()
    return ctx.db.get(run.id)
