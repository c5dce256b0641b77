"""The drop folder: runs submitted by dropping files, data uploaded by dropping files,
results mirrored back.

    <drop_dir>/
        NAME/  NAME.zip  NAME.yml   drops: a folder with manifest.yml and code, a zip of
                                    one, or a bare manifest
        .processing/<token>/NAME    a drop being submitted (survives a crash)
        .accepted/<run-id>/NAME     accepted drops
        .rejected/NAME              refused drops, with NAME.error.txt saying why
        data/<bucket>/...           files uploaded to <bucket> (added or changed ones; a
                                    name S3 refuses is mapped: buckets.store_name)
        results/<run-id>/           each run's results and logs, after it ends

A drop is taken once nothing in it changed for `drop_settle` seconds, so both a slow
copy in place and a write-then-rename work; a .zip also waits until it is a readable zip
(a writer may pause longer), for up to `drop_grace`. Taking it is a rename into .processing/,
which only one taker can win, and the run records the token as its source: after a
crash the drop is finished, never submitted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from . import archive, filemodes
from .buckets import store_name
from .daemon import Daemon
from .errors import DlaasError, Internal, Invalid
from .records import Run
from .runfolder import RunFolder, open_beneath
from .verbs import submit

log = logging.getLogger(__name__)

SPECIAL = {"data", "results"}
OWN = ("results", ".accepted", ".rejected", ".processing")
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", "~", ".swp", ".error.txt")
MANIFEST_NAMES = ("manifest.yml", "manifest.yaml")
SHARED_MODE = 0o3770


def is_temp(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


def snapshot(path: Path) -> tuple | None:
    """What changes while something is still being written: names, sizes, mtimes. Links
    are not followed (lstat): the daemon may run as root, the drop folder is shared."""
    try:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            return (st.st_size, st.st_mtime_ns, stat.S_IFMT(st.st_mode))
        items = []
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                items.append((dirpath, name, st.st_size, st.st_mtime_ns, stat.S_IFMT(st.st_mode)))
        return tuple(sorted(items))
    except FileNotFoundError:
        return None


def data_files(data: Path) -> list[tuple[str, str, Path, os.stat_result]]:
    """(bucket, key, path, lstat) of every regular file under data/<bucket>/, links and
    temporary names left out."""
    out = []
    for bucket_dir in sorted(data.iterdir()):
        if is_temp(bucket_dir.name) or not stat.S_ISDIR(bucket_dir.lstat().st_mode):
            continue
        for dirpath, dirnames, filenames in os.walk(bucket_dir):  # does not follow links
            dirnames[:] = [d for d in dirnames if not is_temp(d)]
            for name in filenames:
                path = Path(dirpath) / name
                st = path.lstat()
                if not is_temp(name) and stat.S_ISREG(st.st_mode):
                    out.append((bucket_dir.name, path.relative_to(bucket_dir).as_posix(), path, st))
    return out


class InboxError(RuntimeError):
    """The drop folder cannot be made safe to share: the daemon refuses to start."""


def share(path: Path, group: str) -> None:
    """Make `path` the group's, mode 3770 (members drop; setgid: what they drop stays in the
    group; sticky: nobody removes another's drop), unless it already is. Under systemd the
    unit forbids setting the setgid bit (RestrictSUIDSGID=): systemd-tmpfiles makes the
    default folders so at install and boot (systemd/dlaas.tmpfiles)."""
    import grp

    gid = grp.getgrnam(group).gr_gid
    st = path.stat()
    if st.st_gid == gid and stat.S_IMODE(st.st_mode) == SHARED_MODE:
        return
    try:
        os.chown(path, -1, gid)
        os.chmod(path, SHARED_MODE)
    except PermissionError as exc:
        raise InboxError(
            f"drop folder {path}: cannot make it group {group!r}, mode 3770 ({exc.strerror}); "
            f"as root run `chgrp {group} {path} && chmod 3770 {path}`, or add "
            f"`d {path} 3770 root {group} -` to /etc/tmpfiles.d/dlaas.conf and run "
            "`systemd-tmpfiles --create /etc/tmpfiles.d/dlaas.conf`"
        ) from None


class _Kick(FileSystemEventHandler):
    """Watchdog's thread only wakes the scanner; all decisions happen in the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event, root: Path):
        self.loop = loop
        self.event = event
        # what dlaasd itself writes there is no news
        self.own = tuple(f"{root / sub}{os.sep}" for sub in OWN)

    def on_any_event(self, event) -> None:
        if not str(event.src_path).startswith(self.own):
            self.loop.call_soon_threadsafe(self.event.set)


class Inbox:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.config = daemon.config
        self.root = daemon.config.drop_path
        self.settle = daemon.config.drop_settle
        self._seen: dict[str, tuple[tuple | None, float]] = {}  # name -> (snapshot, since)
        self.grace = daemon.config.drop_grace
        self._unreadable: dict[str, tuple | None] = {}  # zips not complete yet: snapshot
        self._mirrored = daemon.db.mirrored()
        self._data_seen: dict[str, tuple[tuple | None, float]] = {}
        self._kick = asyncio.Event()
        self._observer: BaseObserver | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        shared = bool(self.config.socket_group)
        for sub in ("", ".processing", ".accepted", ".rejected", "data", "results"):
            path = self.root / sub
            path.mkdir(parents=True, exist_ok=True)
        if shared:  # every member of the group may drop; nobody may take another's drop
            share(self.root, self.config.socket_group)
            share(self.root / "data", self.config.socket_group)

        def owner(run_id: str) -> tuple[int, int] | None:  # asked of those in the folder only
            uid = self.daemon.db.owner_uid(run_id)
            return None if uid is None else (uid, -1)

        filemodes.tighten_drop(self.root, owner)
        for token in sorted(os.listdir(self.root / ".processing")):
            await self._submit(token)  # taken before a crash: finish, exactly once
        loop = asyncio.get_running_loop()
        try:
            self._observer = Observer()
            kick = _Kick(loop, self._kick, self.root)
            # drops arrive at the top (inside a drop folder the scan sees writes within a
            # second); data/ is mirrored as it changes. Not results/ and the other folders
            # dlaasd fills: a recursive watch there would hold a watch per finished run
            self._observer.schedule(kick, str(self.root), recursive=False)
            self._observer.schedule(kick, str(self.root / "data"), recursive=True)
            self._observer.start()
        except OSError as exc:  # inotify limits: the periodic scan still works
            log.warning("event=inbox_watch_failed error=%r", str(exc))
            self._observer = None
        self._task = asyncio.create_task(self._loop(), name="inbox")
        log.info("event=inbox_ready dir=%s", self.root)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._observer:
            self._observer.stop()
            await asyncio.to_thread(self._observer.join, 5)

    async def _loop(self) -> None:
        while True:
            try:
                await self.scan()
            except Exception:
                log.exception("event=inbox_scan_error")
            # wake on a change, and in any case often enough to see a drop settle
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=min(1.0, self.settle / 2))

    async def scan(self) -> None:
        now = time.monotonic()
        drops, files = await asyncio.to_thread(self._look)  # walking the tree: not on the loop
        for name, snap in drops.items():
            if self._settled(self._seen, name, snap, now) and await self._complete(name, snap, now):
                await self._take(name)
        for gone in set(self._seen) - set(drops):
            del self._seen[gone]
        for gone in set(self._unreadable) - set(drops):
            del self._unreadable[gone]
        await self._mirror_data(files, now)

    def _look(self) -> tuple[dict[str, tuple | None], list]:
        drops = {
            e.name: snapshot(Path(e.path))
            for e in os.scandir(self.root)
            if e.name not in SPECIAL and not is_temp(e.name)
        }
        files = [
            (bucket, key, path, st, snapshot(path))
            for bucket, key, path, st in data_files(self.root / "data")
            if self._mirrored.get(f"{bucket}/{key}") != (st.st_size, st.st_mtime_ns)
        ]
        return drops, files

    def _settled(self, seen: dict, key: str, snap: tuple | None, now: float) -> bool:
        previous = seen.get(key)
        if snap is None:
            seen.pop(key, None)
            return False
        if previous is None or previous[0] != snap:
            seen[key] = (snap, now)
            return False
        return now - previous[1] >= self.settle

    async def _complete(self, name: str, snap: tuple | None, now: float) -> bool:
        """Whether a settled drop may be taken. A .zip must be a readable zip: one that is
        not yet (its writer paused longer than drop_settle) is left where it is and looked
        at again when it changes; only once it stayed unreadable for drop_grace is it
        taken, and refused."""
        if not name.lower().endswith(".zip"):
            return True
        if self._unreadable.get(name) != snap:  # not looked at as it is now
            if await asyncio.to_thread(_readable_zip, self.root / name):
                self._unreadable.pop(name, None)
                return True
            self._unreadable[name] = snap
            log.info("event=drop_incomplete name=%r waiting=%ss", name, self.grace)
        return now - self._seen[name][1] >= self.grace

    # --- drops ------------------------------------------------------------------------

    async def _take(self, name: str) -> None:
        token = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        holder = self.root / ".processing" / token
        holder.mkdir()
        try:
            os.rename(self.root / name, holder / name)  # only one taker wins
        except FileNotFoundError:  # removed before it was taken
            holder.rmdir()
            return
        finally:
            self._seen.pop(name, None)
        await self._submit(token)

    async def _submit(self, token: str) -> None:
        holder = self.root / ".processing" / token
        entries = os.listdir(holder)
        if not entries:
            holder.rmdir()
            return
        name = entries[0]
        drop = holder / name
        owner = drop.lstat().st_uid  # a link belongs to whoever made it, not to its target
        source = f"inbox:{token}"
        run_id = self.daemon.db.by_source(source)
        if run_id is None:
            try:
                run_id = await self._submit_drop(drop, owner, source)
            except DlaasError as exc:
                self._reject(holder, name, owner, exc)
                return
            except Exception as exc:  # whatever went wrong, the drop must not stay stuck
                log.exception("event=drop_error name=%r", name)
                self._reject(holder, name, owner, Internal(f"dlaasd could not take it: {exc}"))
                return
        target = self.root / ".accepted" / run_id
        target.mkdir(parents=True, exist_ok=True)
        os.rename(drop, target / name)
        filemodes.set_mode(target, filemodes.PRIVATE_DIR, owner)  # the dropper's alone
        holder.rmdir()
        log.info("event=drop_accepted name=%r run=%s owner=%d", name, run_id, owner)

    async def _submit_drop(self, drop: Path, owner: int, source: str) -> str:
        caller = self.daemon.caller(owner, drop.lstat().st_gid)
        fd, tmp = tempfile.mkstemp(suffix=".zip", dir=self.config.state_path / "runs")
        os.close(fd)
        try:
            text, packed = await asyncio.to_thread(read_drop, drop, Path(tmp))
            zip_path = Path(tmp) if packed else None
            ctx = self.daemon.context(caller)
            result = await submit.submit(ctx, text, zip_path, source=source)
            return result["id"]
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _reject(self, holder: Path, name: str, owner: int, exc: DlaasError) -> None:
        rejected = self.root / ".rejected"
        target = rejected / name
        if target.exists():
            target = rejected / f"{name}-{holder.name}"
        os.rename(holder / name, target)
        holder.rmdir()
        # its owner's alone, as the drop folder is the group's (a manifest holds secrets)
        filemodes.set_mode(target, stat.S_IMODE(target.lstat().st_mode) & 0o700)
        lines = [f"{name} was not submitted: {exc.message}"]
        if exc.code:
            lines[0] += f" [{exc.code}]"
        for p in exc.problems:
            where = p.path or "(document)"
            if p.line:
                where += f" (line {p.line})"
            lines.append(f"  - {where}: {p.message}")
        lines += [f"warning: {w}" for w in exc.warnings]
        lines.append("Fix it and drop it again (move it out of .rejected/ into the drop folder).")
        report = rejected / f"{target.name}.error.txt"
        report.unlink(missing_ok=True)
        fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        with contextlib.suppress(OSError):
            os.chown(report, owner, -1)
        log.info("event=drop_rejected name=%r reason=%r", name, exc.message)

    # --- data and results -----------------------------------------------------------------

    async def _mirror_data(self, files: list, now: float) -> None:
        """Upload new and changed files under data/<bucket>/ once they have settled."""
        for bucket, key, path, st, snap in files:
            rel = f"{bucket}/{key}"
            if not self._settled(self._data_seen, rel, snap, now):
                continue
            try:
                await asyncio.to_thread(self._upload, bucket, key, path)
            except Exception as exc:
                log.warning("event=mirror_failed file=%s error=%r", rel, str(exc))
                return  # try again at the next scan
            self._mirrored[rel] = (st.st_size, st.st_mtime_ns)
            self.daemon.db.mark_mirrored(rel, st.st_size, st.st_mtime_ns)
            self._data_seen.pop(rel, None)
            log.info(
                "event=mirror_uploaded folder=%s bucket=%s key=%s", bucket, store_name(bucket), key
            )

    def _upload(self, folder: str, key: str, path: Path) -> None:
        """Upload what was checked: the file opened without following links on the way
        (a folder swapped for a link since the scan is not followed), read through the
        descriptor's /proc name."""
        bucket = store_name(folder)  # data/tf_training_data/ fills tf-training-data
        self.daemon.objects.ensure_bucket(bucket)
        with _open_regular(path, self.root / "data") as f:
            self.daemon.objects.put_file(bucket, key, Path(f"/proc/self/fd/{f.fileno()}"))

    def mirror_results(self, run: Run, folder: RunFolder) -> None:
        """Copy a run's results and logs to results/<run-id>/ (hard links where possible)."""
        run_id = run.id
        target = self.root / "results" / run_id
        for path, rel in folder.outputs():
            try:  # the job folder is its owner's: a file may be a link by now
                src = folder.open(path)
            except FileNotFoundError:
                continue  # gone, or a link put in its place: not followed
            with src:
                if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                    continue
                dest = target / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.unlink(missing_ok=True)
                _link_or_copy(src, dest)
        if not target.exists():
            return
        if os.geteuid() == 0 and run.owner_uid:
            for dirpath, dirnames, filenames in os.walk(target):
                for n in [dirpath, *(os.path.join(dirpath, x) for x in dirnames + filenames)]:
                    os.lchown(n, run.owner_uid, -1)
        os.chmod(target, 0o700)  # the owner's alone, whatever the visibility


def read_drop(drop: Path, zip_path: Path) -> tuple[bytes, bool]:
    """The manifest of a drop taken into .processing/, and whether its code was put in
    `zip_path` (a private copy). Every byte is read through a descriptor opened without
    following links and checked with fstat: a file swapped for a link meanwhile is refused
    or read as it was, never followed (dlaasd may be root; the drop is someone else's)."""
    st = drop.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise Invalid(
            f"{drop.name!r} is a symbolic link; drop the folder or file itself "
            "(links are not followed)",
        )
    if stat.S_ISDIR(st.st_mode):
        try:
            archive.pack_dir(drop, zip_path)
        except archive.ArchiveError as exc:
            raise Invalid(f"the folder has problems: {'; '.join(exc.problems)}", exc.code) from None
        text = _top_manifest(zip_path)  # as packed: read once, with the code
        if text is None:
            raise Invalid(
                f"the folder has no manifest.yml; put the manifest at "
                f"{drop.name}/manifest.yml, beside the code",
            )
        return text, True
    suffix = drop.suffix.lower()
    if suffix == ".zip":
        _copy_regular(drop, zip_path)  # the drop stays too
        try:
            info = archive.check(zip_path)
        except archive.ArchiveError as exc:
            raise Invalid(f"the zip has problems: {'; '.join(exc.problems)}", exc.code) from None
        if info.manifest is None:
            raise Invalid(
                "the zip has no manifest.yml at its top (or in its one top folder); "
                "add one beside the code",
            )
        return info.manifest, True
    if suffix in (".yml", ".yaml"):
        return _read_regular(drop), False
    raise Invalid(
        f"{drop.name!r} is not a drop: drop a folder with manifest.yml and the code, "
        "a .zip of such a folder, or a manifest .yml",
    )


def _open_regular(path: Path, root: Path | None = None) -> BinaryIO:
    """A dropped file, opened without following a link anywhere below `root` (its own
    folder by default), and checked to be a regular file through that same descriptor."""
    root = root or path.parent
    try:
        f = open_beneath(root, path.relative_to(root))
    except FileNotFoundError:
        raise Invalid(
            f"{path.name!r} is (or is reached through) a symbolic link, or is gone"
        ) from None
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise Invalid(f"{path.name!r} is not a regular file; drop the file itself")
    return f


def _readable_zip(path: Path) -> bool:
    """False only for a regular file that is not (yet) a readable zip; anything else is
    for the taking to judge (and refuse, if it is a link)."""
    try:
        with _open_regular(path) as f, zipfile.ZipFile(f):
            return True
    except (zipfile.BadZipFile, EOFError, ValueError):
        return False
    except (DlaasError, OSError):
        return True


def _read_regular(path: Path) -> bytes:
    with _open_regular(path) as f:
        return f.read()


def _copy_regular(path: Path, dest: Path) -> None:
    """A private copy of a dropped file, which only dlaasd can change after the check."""
    with _open_regular(path) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)


def _top_manifest(zip_path: Path) -> bytes | None:
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        return next((zf.read(n) for n in MANIFEST_NAMES if n in names), None)


def _link_or_copy(src: BinaryIO, dest: Path) -> None:
    """A hard link to the file open as `src` (the file checked, not what its name leads
    to now), else a copy of it."""
    fd_path = f"/proc/self/fd/{src.fileno()}"
    proc_fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # linkat(AT_SYMLINK_FOLLOW) follows only /proc's link, to the open file; a plain
        # os.link would call link(), which links /proc's link itself and always fails
        os.link(str(src.fileno()), dest, src_dir_fd=proc_fds, follow_symlinks=True)
    except OSError:  # another file system
        with open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        shutil.copystat(fd_path, dest)
    finally:
        os.close(proc_fds)
