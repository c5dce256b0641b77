"""Usage: what the runs that ended in a period used, grouped (`dlaasctl usage`): the
caller's own runs, everyone's for root and the admin group."""

from __future__ import annotations

from .. import accounting
from ..errors import Invalid
from .context import Context


def usage(ctx: Context, since: str | None, until: str | None, by: str) -> dict:
    if by not in accounting.GROUPINGS:
        raise Invalid(
            f"query parameter 'by': found {by!r}; expected one of "
            f"{', '.join(accounting.GROUPINGS)}",
        )
    everyone = ctx.caller.privileged
    rows = ctx.db.usage_rows(since, until, None if everyone else ctx.caller.uid)
    groups, total = accounting.summarize(rows, by)
    return {
        "since": since,
        "until": until,
        "by": by,
        "everyone": everyone,
        "groups": groups,
        "total": total,
        "runs": rows,
    }
