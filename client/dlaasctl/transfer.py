"""Files going to the daemon (a manifest with its model code) and coming back (results,
a definition, objects of the store), with a progress bar where tqdm is installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .console import Failed, err
from .http import Client

TYPE_CHECKING = False  # typing itself is not imported: it would slow every command's start
if TYPE_CHECKING:
    from typing import IO

IN_MEMORY = 16 * 1024 * 1024  # model folders smaller than this are zipped in memory


def manifest_file(path: Path) -> Path:
    """A manifest.yml, or the one in a folder."""
    manifest = path / "manifest.yml" if path.is_dir() else path
    if not manifest.is_file():
        raise Failed(f"no manifest at {path}; give the path of a manifest.yml (or its folder)")
    return manifest


def send_with_model(
    c: Client,
    path: str,
    fields: dict[str, bytes],
    model: Path,
    quiet: bool,
    sent: tuple[Path, ...] = (),
) -> dict:
    """POST a form with the model code as a zip: a .zip as it is; a folder zipped, in
    memory when small (no temporary file), else into a temporary file removed after.
    The files `sent` as fields (the manifest, which may hold secrets) are left out."""
    import zipfile  # imported where needed: dlaasctl starts faster

    if model.is_file():
        if not zipfile.is_zipfile(model):
            raise Failed(f"{model} is not a zip file; give a folder or a .zip")
        return c.multipart(path, fields, {"model": model})
    if not model.is_dir():
        raise Failed(f"no model code at {model}; give a folder or a .zip")
    files = []
    for dirpath, dirnames, filenames in os.walk(model):
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__"))
        files += [p for p in (Path(dirpath) / f for f in sorted(filenames)) if p.is_file()]
    left_out = {p.resolve() for p in sent}
    files = [p for p in files if p.resolve() not in left_out]
    if sum(p.stat().st_size for p in files) < IN_MEMORY:
        import io

        with io.BytesIO() as buffer:
            _zip(buffer, model, files, quiet)
            return c.multipart(path, fields, {"model": buffer.getvalue()})
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".zip", prefix="dlaas-model-") as tmp:
        _zip(tmp, model, files, quiet)
        tmp.flush()
        return c.multipart(path, fields, {"model": Path(tmp.name)})


def _zip(out: IO[bytes], model: Path, files: list[Path], quiet: bool) -> None:
    import zipfile

    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in files:
            zf.write(p, p.relative_to(model).as_posix())
    if not quiet:
        from . import fmt

        err(f"model code: {model} ({len(files)} files, {fmt.size(out.tell())} zipped)")


def fetch_all(
    c: Client, items: list[tuple[str, str, int]], dest: Path, desc: str, quiet: bool
) -> list[str]:
    """Download (url, relative path, size) items under `dest`, with a progress bar."""
    bar = progress(sum(size for _, _, size in items), desc, quiet)
    written = []
    for url, rel, _ in items:
        target = _inside(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            for chunk in c.stream(url):
                out.write(chunk)
                bar.update(len(chunk))
        written.append(str(target))
    bar.close()
    return written


def _inside(dest: Path, rel: str) -> Path:
    target = (dest / rel).resolve()
    if dest.resolve() not in target.parents:
        raise Failed(f"refusing to write {rel!r} outside {dest}")
    return target


class Progress:
    """A progress bar as the transfers use it (tqdm's two methods); this one draws
    nothing: where tqdm is not installed (dlaasctl run by a system Python)."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, quiet: bool) -> Progress:
    try:
        from tqdm import tqdm  # imported here: only the transfer commands need it
    except ImportError:
        return Progress()
    return tqdm(  # untyped: an Any, with update and close
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=True if quiet else None,
        file=sys.stderr,
        leave=False,
    )
