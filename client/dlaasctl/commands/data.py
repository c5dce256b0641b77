"""Training data in the object store: data upload, ls, download."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import routes
from ..console import Failed, out_json, warn
from ..http import ApiError, Client
from ..transfer import fetch_all, progress
from . import Command, arg


def s3_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives an object uploaded with parts of `part_size`."""
    import hashlib

    digests = []
    with open(path, "rb") as f:
        while chunk := f.read(part_size):
            digests.append(hashlib.md5(chunk).digest())
    if len(digests) <= 1:
        return digests[0].hex() if digests else hashlib.md5(b"").hexdigest()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _split(target: str) -> tuple[str, str]:
    bucket, _, prefix = target.partition("/")
    return bucket, prefix


def listing(c: Client, bucket: str, prefix: str = "", missing_ok: bool = False) -> dict:
    """The objects under a prefix, the bucket's name in the store (a name S3 refuses is
    mapped, with a warning) and the part size the daemon uploads with."""
    try:
        there = c.call(
            routes.OBJECTS, bucket=bucket, prefix=prefix, missing="empty" if missing_ok else None
        )
    except ApiError as exc:
        if missing_ok and exc.status == 404:  # a daemon from before missing=empty
            return {"bucket": bucket, "objects": [], "part_size": 0}
        raise
    warn(there)
    return there


def upload(c: Client, a: argparse.Namespace) -> int:
    prefix = a.prefix.strip("/") + "/" if a.prefix and a.prefix.strip("/") else ""
    plan: list[tuple[Path, str]] = []
    for raw in a.paths:
        p = Path(raw)
        if p.is_dir():
            plan += [
                (f, prefix + f.relative_to(p).as_posix())
                for f in sorted(p.rglob("*"))
                if f.is_file()
            ]
        elif p.is_file():
            plan.append((p, prefix + p.name))
        else:
            raise Failed(f"{raw}: no such file or folder")
    there = listing(c, a.bucket, prefix, missing_ok=True)
    objects = {o["key"]: o for o in there["objects"]}
    todo, skipped = [], []
    for path, key in plan:
        o = objects.get(key)
        if (
            o
            and o["size"] == path.stat().st_size
            and o["etag"] == s3_etag(path, there["part_size"])
        ):
            skipped.append(key)
        else:
            todo.append((path, key))
    stored = there.get("bucket", a.bucket)
    bar = progress(sum(p.stat().st_size for p, _ in todo), f"upload to {stored}", a.json)
    for path, key in todo:
        c.upload(routes.PUT_OBJECT.url(bucket=a.bucket, key=key), path, progress=bar.update)
    bar.close()
    if a.json:
        out_json(
            {
                "bucket": stored,
                "requested": a.bucket,
                "uploaded": [k for _, k in todo],
                "skipped": skipped,
                "warnings": there.get("warnings", []),
            }
        )
    else:
        print(f"{len(todo)} uploaded, {len(skipped)} unchanged (skipped) -> s3://{stored}/{prefix}")
    return 0


def ls(c: Client, a: argparse.Namespace) -> int:
    from .. import fmt

    if not a.target:
        data = c.call(routes.BUCKETS)
        if a.json:
            out_json(data)
        else:
            for b in data["buckets"]:
                print(b["name"])
        return 0
    bucket, prefix = _split(a.target)
    data = listing(c, bucket, prefix)
    if a.json:
        out_json(data)
        return 0
    rows = [(o["key"], fmt.size(o["size"]), fmt.when(o["modified"])) for o in data["objects"]]
    where = f"{data.get('bucket', bucket)}/{prefix}"
    print(fmt.table(["KEY", "SIZE", "MODIFIED"], rows) if rows else f"(nothing under s3://{where})")
    return 0


def download(c: Client, a: argparse.Namespace) -> int:
    bucket, prefix = _split(a.source)
    there = listing(c, bucket, prefix)
    objects = [o for o in there["objects"] if not o["dir"]]
    if not objects:
        raise Failed(f"nothing under s3://{there.get('bucket', bucket)}/{prefix}")
    items = [
        (
            routes.GET_OBJECT.url(bucket=bucket, key=o["key"]),
            o["key"][len(prefix) :].lstrip("/") or Path(o["key"]).name,  # a key asked by name
            o["size"],
        )
        for o in objects
    ]
    dest = Path(a.dest)
    stored = there.get("bucket", bucket)
    written = fetch_all(c, items, dest, f"download from {stored}", a.json)
    if a.json:
        out_json({"bucket": stored, "prefix": prefix, "dest": str(dest), "files": written})
    else:
        print(f"{len(written)} files -> {dest}/")
    return 0


COMMANDS = {
    "data upload": Command(
        upload,
        "upload files or folders (their contents) to a bucket; unchanged files are skipped",
        [
            arg("bucket"),
            arg("paths", nargs="+", metavar="PATH"),
            arg("--prefix", default="", help="put everything under this key prefix"),
        ],
    ),
    "data ls": Command(
        ls,
        "list buckets, or the objects under BUCKET[/PREFIX]",
        [arg("target", nargs="?", metavar="BUCKET[/PREFIX]")],
    ),
    "data download": Command(
        download,
        "download BUCKET[/PREFIX] into DEST",
        [arg("source", metavar="BUCKET[/PREFIX]"), arg("dest", metavar="DEST")],
    ),
}
