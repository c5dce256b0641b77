"""A full disk under the state folder: recognised, said in one sentence (S304), survived.

The daemon keeps a small reserve file in the state folder. When the disk fills up (a
training's results, a download, another program), the reserve is given back the moment
SQLite cannot record a run's status, so that the run can still move on, store its
outputs and end (which frees its space); it is made again once there is room.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from pathlib import Path

from .codes import Code
from .errors import RunError
from .units import format_size

log = logging.getLogger(__name__)

RESERVE_BYTES = 8 * 1024 * 1024
RESERVE_NAME = "disk-reserve"
FULL_BELOW = 1024 * 1024  # free bytes under which the disk counts as full


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) says: no space left."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and (
            getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "database or disk is full" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def sentence(path: Path, doing: str) -> str:
    """What went wrong and what to do, for a run's message or an API answer."""
    try:
        free = f"{format_size(free_bytes(path))} free"
    except OSError:
        free = "free space unknown"
    return (
        f"no space left on the disk of {path} ({free}) while {doing}; free space there "
        "(`dlaasctl delete --purge` old runs, lower cache.max_size) and try again"
    )


def error(path: Path, doing: str) -> RunError:
    return RunError(Code.DISK_FULL, sentence(path, doing))


class Reserve:
    """The reserve file: made when there is room, given back when the disk is full."""

    def __init__(self, state: Path, size: int = RESERVE_BYTES):
        self.path = state / RESERVE_NAME
        self.state = state
        self.size = size

    @property
    def held(self) -> bool:
        return self.path.exists()

    def ensure(self) -> None:
        """Make the reserve if it is missing and the disk has room for it twice over."""
        if self.held:
            return
        try:
            if free_bytes(self.state) < 2 * self.size:
                return
            tmp = self.path.with_name(RESERVE_NAME + ".part")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.size)
                except OSError as exc:  # a file system without fallocate: write it out
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    block = b"\0" * (1024 * 1024)
                    for _ in range(self.size // len(block)):
                        os.write(fd, block)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            log.info("event=disk_reserve_made bytes=%d", self.size)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.with_name(RESERVE_NAME + ".part").unlink()
            log.warning("event=disk_reserve_skipped error=%r", str(exc))

    def disk_full(self) -> bool:
        """Whether the disk is (nearly) full: with the reserve given back, its room is
        the daemon's headroom, not room the runs have."""
        headroom = 0 if self.held else self.size
        return free_bytes(self.state) < FULL_BELOW + headroom

    def release(self) -> bool:
        """Give the reserve back to the disk; whether there was one to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.error("event=disk_full action=reserve_released path=%s", self.state)
        return True
