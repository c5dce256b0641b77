"""Who may read what dlaasd keeps on disk.

As root, on a lab machine, the state folder holds everyone's runs:

    <state_dir>/        0711: the drop folder inside it stays reachable by its path
        dlaas.db*       0600 (every manifest, redacted, and every status)
        runs/           0711: people reach their own run's job folder by its id
            <run-id>/   0711, root; manifest.yml, model.zip 0600 (the definition), and
                        data-tree 0600 (the data it mounts: see objectstore.DataCache)
                job/    0700, the run's owner: its containers run as the owner
            .incoming/  0700 (uploads under way)
        secrets/ cache/ minio/ ...   0700 / 0600
    <drop_dir>/results/<run-id>/, .accepted/<run-id>/   0700, the run's owner

A user's own daemon keeps the same modes (the state folder 0700), all the user's.
Started on a state folder that an older dlaasd left with looser modes, `tighten` fixes
them; nothing here follows a link.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
REACHABLE = 0o711  # others may pass through to a path they know, never list it


def shared() -> bool:
    """Whether the daemon serves several people (runs as root)."""
    return os.geteuid() == 0


def reachable() -> int:
    return REACHABLE if shared() else PRIVATE_DIR


def set_mode(path: Path, mode: int, uid: int | None = None, gid: int = -1) -> None:
    """chmod (and chown, as root) a file or folder that is really there: a link is left
    alone, whoever planted it."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    if (
        uid is not None
        and shared()
        and (st.st_uid, st.st_gid) != (uid, gid if gid >= 0 else st.st_gid)
    ):
        os.chown(path, uid, gid, follow_symlinks=False)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def private_dir(path: Path) -> Path:
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    set_mode(path, PRIVATE_DIR)
    return path


def seal_run(root: Path, owner: tuple[int, int] | None = None) -> None:
    """One run's folder: reachable, its definition and records root's alone, its job
    folder the owner's."""
    set_mode(root, reachable())
    for name in ("manifest.yml", "model.zip", "data-tree"):
        set_mode(root / name, PRIVATE_FILE)
    job = root / "job"
    if owner is None:
        set_mode(job, PRIVATE_DIR)
    else:
        set_mode(job, PRIVATE_DIR, *owner)


def tighten(
    state: Path, keep: Iterable[Path], owners: dict[str, tuple[int, int]], every_run: bool = True
) -> None:
    """At start: the state folder as the module says, whatever modes it had. `keep`: what
    others must reach (the drop folder, the socket); `owners`: run id -> (uid, gid).
    `every_run`: every run's folder too, else only those of `owners`."""
    keep = {Path(p) for p in keep}
    set_mode(state, reachable())
    for entry in state.iterdir():
        if entry in keep:
            continue
        st = entry.lstat()
        if stat.S_ISDIR(st.st_mode):
            set_mode(entry, PRIVATE_DIR)
        elif stat.S_ISREG(st.st_mode):
            set_mode(entry, PRIVATE_FILE)
    runs = state / "runs"
    if not runs.is_dir() or runs.is_symlink():
        return
    set_mode(runs, reachable())
    if not every_run:
        for run_id in owners:
            if (runs / run_id).is_dir() and not (runs / run_id).is_symlink():
                seal_run(runs / run_id, owners[run_id])
        return
    for entry in runs.iterdir():
        st = entry.lstat()
        if entry.name == ".incoming" or not stat.S_ISDIR(st.st_mode):
            set_mode(entry, PRIVATE_DIR if stat.S_ISDIR(st.st_mode) else PRIVATE_FILE)
        else:
            seal_run(entry, owners.get(entry.name))


def tighten_drop(drop: Path, owner_of: Callable[[str], tuple[int, int] | None]) -> None:
    """The drop folder's own parts: what is being taken is root's; an accepted drop and
    a run's mirrored results are its owner's alone; a refusal's report its owner's."""
    set_mode(drop / ".processing", PRIVATE_DIR)
    for sub in ("results", ".accepted"):
        folder = drop / sub
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            owner = owner_of(entry.name)
            if entry.is_dir() and not entry.is_symlink():
                set_mode(entry, PRIVATE_DIR, *(owner or (None,)))
    rejected = drop / ".rejected"
    if rejected.is_dir() and not rejected.is_symlink():
        for entry in rejected.iterdir():
            with contextlib.suppress(OSError):
                st = entry.lstat()
                if not stat.S_ISLNK(st.st_mode):
                    set_mode(entry, stat.S_IMODE(st.st_mode) & 0o700)
