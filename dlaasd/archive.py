"""Model code archives (zip): checked at submit, unpacked into the run's folder.

An archive may not reach outside its folder: no absolute paths, no '..', no links,
no device files, and no more bytes or files than the limits (zip bombs).
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .codes import Code
from .units import format_size

MAX_FILES = 100_000
MAX_BYTES = 4 * 1024**3


class ArchiveError(ValueError):
    code = Code.BAD_MODEL

    def __init__(self, problems: list[str], source: str = "model archive"):
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


@dataclass
class ArchiveInfo:
    files: int
    bytes: int
    manifest: builtins.bytes | None  # a manifest.yml found at the top of the archive, if any


def check(path: Path, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES) -> ArchiveInfo:
    """Read the central directory and refuse what could escape or explode."""
    problems: list[str] = []
    with _open(path) as zf:
        infos = zf.infolist()
        total = 0
        for info in infos:
            problem = _entry_problem(info)
            if problem:
                problems.append(f"{info.filename!r}: {problem}")
            total += info.file_size
        if len(infos) > max_files:
            problems.append(f"{len(infos)} entries; at most {max_files} are allowed")
        if total > max_bytes:
            problems.append(f"unpacks to {format_size(total)}; at most {format_size(max_bytes)}")
        name = _top_manifest(zf)
        manifest = zf.read(name) if name else None
    if len(problems) > 20:
        problems = problems[:20] + [f"... and {len(problems) - 20} more"]
    if problems:
        raise ArchiveError(problems)
    return ArchiveInfo(files=len(infos), bytes=total, manifest=manifest)


def _top_manifest(zf: zipfile.ZipFile) -> str | None:
    """The name of the manifest at the archive's top (or in its one top folder), if any."""
    top = _common_top(zf.infolist())
    names = set(zf.namelist())
    return next((n for n in (f"{top}manifest.yml", f"{top}manifest.yaml") if n in names), None)


def edit_manifest(path: Path, edit: Callable[[bytes], bytes]) -> bool:
    """Rewrite a checked archive with its top manifest edited (its secrets redacted: they
    go to the vault, never into the model code); untouched, False, when there is none or
    `edit` changes nothing."""
    with _open(path) as zf:
        name = _top_manifest(zf)
        if name is None:
            return False
        old = zf.read(name)
        new = edit(old)
        if new == old:
            return False
        tmp = path.with_name(path.name + ".editing")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
            for info in zf.infolist():
                if info.filename == name:
                    out.writestr(info, new)
                    continue
                with zf.open(info) as src, out.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
    os.replace(tmp, path)
    return True


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError([f"not a readable zip file ({exc}); send a folder or a .zip"]) from None


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\\" in name or "\x00" in name:
        return "has a backslash or NUL in its name"
    p = PurePosixPath(name)
    if p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path; archives must hold relative paths"
    if ".." in p.parts:
        return "contains '..', which would reach outside the model folder"
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)  # zero when only permission bits were stored
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        return f"is {what}; only files and folders are allowed"
    return None


def _common_top(infos: list[zipfile.ZipInfo]) -> str:
    """'model/' when every entry sits under one folder (`zip -r model.zip model/`), which
    then unpacks flat; but not a Python package, whose folder name matters to imports."""
    tops = {i.filename.split("/", 1)[0] for i in infos}
    if len(tops) == 1 and all("/" in i.filename for i in infos):
        top = tops.pop() + "/"
        if top + "__init__.py" not in {i.filename for i in infos}:
            return top
    return ""


def unpack(path: Path, dest: Path, max_bytes: int = MAX_BYTES) -> None:
    """Unpack into `dest` (one top folder is stripped, so a zipped folder unpacks flat)."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = 0
    with _open(path) as zf:
        infos = zf.infolist()
        top = _common_top(infos)
        for info in infos:
            if _entry_problem(info):
                raise ArchiveError([f"{info.filename!r}: {_entry_problem(info)}"])
            rel = info.filename[len(top) :]
            if not rel:
                continue
            target = (dest / rel).resolve()
            if root not in target.parents and target != root:
                raise ArchiveError(
                    [f"{info.filename!r}: would be written outside the model folder"]
                )
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1024 * 1024):
                    written += len(chunk)
                    if written > max_bytes:  # sizes in the directory can lie
                        raise ArchiveError([f"unpacks to more than {format_size(max_bytes)}"])
                    out.write(chunk)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(target, (mode | 0o644) & 0o755 if mode else 0o644)


def pack_dir(src: Path, dest: Path) -> int:
    """Zip the files of folder `src` into `dest`; return the number of files. A link is
    refused, not followed: the folder may be someone else's, and dlaasd may be root. Each
    file is read through the descriptor that was checked (fwalk's folder descriptors, then
    O_NOFOLLOW and fstat), so one swapped for a link meanwhile is refused, never read."""
    count = 0
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(src):  # does not follow links
            dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__"))
            for name in sorted(dirnames + filenames):
                rel = Path(dirpath, name).relative_to(src).as_posix()
                if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise ArchiveError([f"{rel!r} is a symbolic link; copy the file in instead"])
                if name in filenames:
                    count += _pack_file(zf, dir_fd, name, rel)
    return count


def _pack_file(zf: zipfile.ZipFile, dir_fd: int, name: str, rel: str) -> int:
    """Add one file, read through its own descriptor; 1 if it was a regular file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ArchiveError([f"{rel!r} is a symbolic link; copy the file in instead"]) from None
        raise
    with os.fdopen(fd, "rb"):
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0  # a FIFO, socket or device: not model code
        # the descriptor's own file, by its /proc name: what was checked is what is read
        zf.write(f"/proc/self/fd/{fd}", rel)
    return 1
