"""The drop folder: runs submitted by dropping files, data uploaded by dropping files,
results mirrored back.

    <drop_dir>/
        NAME/  NAME.zip  NAME.yml   drops: a folder with manifest.yml and code, a zip of
                                    one, or a bare manifest
        .processing/<token>/NAME    a drop being submitted (survives a crash)
        .accepted/<run-id>/NAME     accepted drops
        .rejected/NAME              refused drops, with NAME.error.txt saying why
        data/<bucket>/...           files uploaded to <bucket> (added or changed ones)
        results/<run-id>/           each run's results and logs, after it ends

A drop is taken once nothing in it changed for `drop_settle` seconds, so both a slow
copy in place and a write-then-rename work. Taking it is a rename into .processing/,
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
import tempfile
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from . import archive
from .daemon import Caller, Daemon, Refused
from .manifest import bucket_problem
from .runfolder import RunFolder
from .storage import StoreUnavailable

log = logging.getLogger(__name__)

SPECIAL = {"data", "results"}
OWN = ("results", ".accepted", ".rejected", ".processing")
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", "~", ".swp", ".error.txt")
MANIFEST_NAMES = ("manifest.yml", "manifest.yaml")


def is_temp(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


def snapshot(path: Path) -> tuple | None:
    """What changes while something is still being written: names, sizes, mtimes."""
    try:
        if not path.is_dir():
            st = path.stat()
            return (st.st_size, st.st_mtime_ns)
        items = []
        for dirpath, _, filenames in os.walk(path):
            for name in filenames:
                st = os.stat(os.path.join(dirpath, name))
                items.append((dirpath, name, st.st_size, st.st_mtime_ns))
        return tuple(sorted(items))
    except FileNotFoundError:
        return None


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
        self._mirrored = daemon.db.mirrored()
        self._data_seen: dict[str, tuple[tuple | None, float]] = {}
        self._kick = asyncio.Event()
        self._observer: Observer | None = None
        self._task: asyncio.Task | None = None

    def folder(self, name: str) -> Path:
        return self.root / name

    async def start(self) -> None:
        shared = bool(self.config.socket_group)
        for sub in ("", ".processing", ".accepted", ".rejected", "data", "results"):
            path = self.root / sub
            path.mkdir(parents=True, exist_ok=True)
        if shared:  # every member of the group may drop; nobody may take another's drop
            import grp

            os.chown(self.root, -1, grp.getgrnam(self.config.socket_group).gr_gid)
            os.chown(self.root / "data", -1, grp.getgrnam(self.config.socket_group).gr_gid)
            os.chmod(self.root, 0o3770)
            os.chmod(self.root / "data", 0o3770)
        for token in sorted(os.listdir(self.root / ".processing")):
            await self._submit(token)  # taken before a crash: finish, exactly once
        loop = asyncio.get_running_loop()
        try:
            self._observer = Observer()
            kick = _Kick(loop, self._kick, self.root)
            self._observer.schedule(kick, str(self.root), recursive=True)
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
        names = set()
        for entry in os.scandir(self.root):
            if entry.name in SPECIAL or is_temp(entry.name):
                continue
            names.add(entry.name)
            if self._settled(self._seen, entry.name, Path(entry.path), now):
                await self._take(entry.name)
        for gone in set(self._seen) - names:
            del self._seen[gone]
        await self._mirror_data(now)

    def _settled(self, seen: dict, key: str, path: Path, now: float) -> bool:
        snap = snapshot(path)
        previous = seen.get(key)
        if snap is None:
            seen.pop(key, None)
            return False
        if previous is None or previous[0] != snap:
            seen[key] = (snap, now)
            return False
        return now - previous[1] >= self.settle

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
        owner = drop.stat().st_uid
        source = f"inbox:{token}"
        run_id = self.daemon.db.by_source(source)
        if run_id is None:
            try:
                run_id = await self._submit_drop(drop, owner, source)
            except Refused as exc:
                self._reject(holder, name, owner, exc)
                return
        target = self.root / ".accepted" / run_id
        target.mkdir(parents=True, exist_ok=True)
        os.rename(drop, target / name)
        holder.rmdir()
        log.info("event=drop_accepted name=%r run=%s owner=%d", name, run_id, owner)

    async def _submit_drop(self, drop: Path, owner: int, source: str) -> str:
        caller = Caller(owner, drop.stat().st_gid, 0)
        fd, tmp = tempfile.mkstemp(suffix=".zip", dir=self.config.state_path / "runs")
        os.close(fd)
        zip_path: Path | None = Path(tmp)
        try:
            if drop.is_dir():
                manifest = next((drop / n for n in MANIFEST_NAMES if (drop / n).is_file()), None)
                if manifest is None:
                    raise Refused(
                        400,
                        f"the folder has no manifest.yml; put the manifest at "
                        f"{drop.name}/manifest.yml, beside the code",
                    )
                text = manifest.read_bytes()
                await asyncio.to_thread(archive.pack_dir, drop, zip_path)
            elif drop.suffix.lower() == ".zip":
                shutil.copyfile(drop, zip_path)  # the drop itself stays in .accepted/
                try:
                    info = await asyncio.to_thread(archive.check, zip_path)
                except archive.ArchiveError as exc:
                    raise Refused(
                        400, f"the zip has problems: {'; '.join(exc.problems)}", exc.code
                    ) from None
                if info.manifest is None:
                    raise Refused(
                        400,
                        "the zip has no manifest.yml at its top (or in its one "
                        "top folder); add one beside the code",
                    )
                text = info.manifest
            elif drop.suffix.lower() in (".yml", ".yaml"):
                text, zip_path = drop.read_bytes(), None
                Path(tmp).unlink()
            else:
                raise Refused(
                    400,
                    f"{drop.name!r} is not a drop: drop a folder with manifest.yml "
                    "and the code, a .zip of such a folder, or a manifest .yml",
                )
            result = await self.daemon.submit(text, zip_path, caller, source=source)
            return result["id"]
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _reject(self, holder: Path, name: str, owner: int, exc: Refused) -> None:
        rejected = self.root / ".rejected"
        target = rejected / name
        if target.exists():
            target = rejected / f"{name}-{holder.name}"
        os.rename(holder / name, target)
        holder.rmdir()
        lines = [f"{name} was not submitted: {exc.message}"]
        if exc.code:
            lines[0] += f" [{exc.code}]"
        for p in exc.problems:
            where = p.path or "(document)"
            if p.line:
                where += f" (line {p.line})"
            lines.append(f"  - {where}: {p.message}")
        lines.append("Fix it and drop it again (move it out of .rejected/ into the drop folder).")
        report = rejected / f"{target.name}.error.txt"
        report.write_text("\n".join(lines) + "\n")
        with contextlib.suppress(OSError):
            os.chown(report, owner, -1)
        log.info("event=drop_rejected name=%r reason=%r", name, exc.message)

    # --- data and results -----------------------------------------------------------------

    async def _mirror_data(self, now: float) -> None:
        """Upload new and changed files under data/<bucket>/ once they have settled."""
        data = self.root / "data"
        for bucket_dir in (p for p in data.iterdir() if p.is_dir() and not is_temp(p.name)):
            if bucket_problem(bucket_dir.name):
                continue  # not a bucket name: `dlaasctl doctor` reports it
            for path in bucket_dir.rglob("*"):
                rel = path.relative_to(data).as_posix()
                if not path.is_file() or any(is_temp(part) for part in Path(rel).parts):
                    continue
                st = path.stat()
                if self._mirrored.get(rel) == (st.st_size, st.st_mtime_ns):
                    continue
                if not self._settled(self._data_seen, rel, path, now):
                    continue
                key = path.relative_to(bucket_dir).as_posix()
                try:
                    await asyncio.to_thread(self._upload, bucket_dir.name, key, path)
                except (StoreUnavailable, Exception) as exc:
                    log.warning("event=mirror_failed file=%s error=%r", rel, str(exc))
                    return  # try again at the next scan
                self._mirrored[rel] = (st.st_size, st.st_mtime_ns)
                self.daemon.db.mark_mirrored(rel, st.st_size, st.st_mtime_ns)
                self._data_seen.pop(rel, None)
                log.info("event=mirror_uploaded bucket=%s key=%s", bucket_dir.name, key)

    def _upload(self, bucket: str, key: str, path: Path) -> None:
        self.daemon.objects.ensure_bucket(bucket)
        self.daemon.objects.put_file(bucket, key, path)

    def mirror_results(self, run: dict, folder: RunFolder) -> None:
        """Copy a run's results and logs to results/<run-id>/ (hard links where possible)."""
        run_id = run["id"]
        target = self.root / "results" / run_id
        for path, key in folder.outputs(run_id):
            dest = target / key.partition("/")[2]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
        if target.exists() and os.geteuid() == 0 and run.get("owner_uid"):
            for dirpath, dirnames, filenames in os.walk(target):
                for n in [dirpath, *(os.path.join(dirpath, x) for x in dirnames + filenames)]:
                    os.lchown(n, run["owner_uid"], -1)
            os.chmod(target, 0o700)
