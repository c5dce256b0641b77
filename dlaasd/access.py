"""Who is asking, and what they may see and change: a run's (or experiment's) owner,
root, dlaasd's own user and the admin group change it; others see only the queue's part,
unless `visibility: lab`."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from .codes import FAILED, meaning
from .errors import Forbidden
from .records import Owned, RunSummary


@dataclass
class Caller:
    uid: int
    gid: int
    admin_group: str = ""  # the config's: its members see and change every run
    lab: bool = False  # `visibility: lab`: every caller sees every run

    @property
    def name(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    @property
    def privileged(self) -> bool:
        """Root, dlaasd's own user, or a member of the admin group."""
        return self.uid in (0, os.geteuid()) or in_group(self.uid, self.gid, self.admin_group)

    def owns(self, row: Owned) -> bool:
        return self.uid == row.owner_uid or self.privileged

    def sees(self, row: Owned) -> bool:
        return self.lab or self.owns(row)

    def _who(self) -> str:
        return "its owner or root" + (
            f" (or members of the group {self.admin_group!r})" if self.admin_group else ""
        )

    def check_may(self, row: Owned, verb: str) -> None:
        """Only a run's (or experiment's) owner, root, dlaasd's own user and the admin
        group change it."""
        if not self.owns(row):
            raise Forbidden(
                f"{row.id} belongs to {row.owner_name or row.owner_uid}; "
                f"only {self._who()} may {verb} it",
            )

    def check_sees(self, row: Owned, what: str) -> None:
        """A run's (or experiment's) contents: its owner's, unless `visibility: lab`."""
        if not self.sees(row):
            kind = "experiment" if row.id.startswith("experiment-") else "run"
            raise Forbidden(
                f"{row.id} belongs to {row.owner_name or row.owner_uid}; "
                f"only {self._who()} may see its {what} (visibility: queue); "
                f"`dlaasctl list` shows every {kind}'s status",
            )


def in_group(uid: int, gid: int, group: str) -> bool:
    """Whether a user is a member of `group` (as primary group or by /etc/group)."""
    if not group:
        return False
    try:
        wanted = grp.getgrnam(group).gr_gid
        return wanted == gid or wanted in os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        return False


def public_message(run: RunSummary) -> str:
    """What others see of a run's status message: a failure's own words may quote its
    training log, so they see only what the code means."""
    if run.status == FAILED and run.error_code:
        return f"failed: {meaning(run.error_code)}"
    return run.status_message
