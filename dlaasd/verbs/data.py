"""Data: buckets and objects in the object store (`dlaasctl data`). A bucket's name is
mapped by the bucket-name rule (buckets.store_name); keys under a run's id are that run's
results or definition, as private as the run."""

from __future__ import annotations

import asyncio
import re
from io import RawIOBase

from .. import buckets as bucket_names
from ..errors import Forbidden, Invalid, NotFound
from ..objectstore import PART_SIZE, key_problem
from .context import Context, Stored

# Keys under <run-id>/, in any bucket, are that run's results or definition.
RUN_PREFIX = re.compile(r"^(training-[a-z0-9]{9})(?:/|$)")


def bucket(name: str) -> tuple[str, list[str]]:
    """The bucket a name means, as the bucket-name rule maps it, and a note if mapped."""
    note = bucket_names.mapped(name)
    return bucket_names.store_name(name), [note] if note else []


def checked_key(ctx: Context, key: str, write: bool = False) -> str:
    """An object key the caller may read (or write)."""
    problem = key_problem(key)
    if problem:
        raise Invalid(f"object key {key!r} {problem}")
    check_run_files(ctx, key, write)
    return key


def locate(ctx: Context, name: str, key: str) -> Stored:
    """Where one object is, if the caller may read it."""
    return Stored(ctx.objects, bucket(name)[0], checked_key(ctx, key))


def check_run_files(ctx: Context, key: str, write: bool = False) -> None:
    """A run's files in the store are as private as the run: the object API is no way
    around `download`'s rule."""
    match = RUN_PREFIX.match(key)
    if not match:
        return
    caller = ctx.caller
    try:
        run = ctx.db.get(match.group(1))
    except NotFound:
        if not caller.privileged:
            raise Forbidden(
                f"{key!r} is under {match.group(1)}/, the files of a deleted run; "
                "only root may reach them",
            ) from None
        return
    if write:
        caller.check_may(run, "write into the files of")
    else:
        caller.check_sees(run, "results and definition")


def _visible(ctx: Context, objects: list[dict]) -> list[dict]:
    """The objects of a listing the caller may see (others' runs' files left out)."""
    seen: dict[str, bool] = {}

    def visible(key: str) -> bool:
        match = RUN_PREFIX.match(key)
        if not match:
            return True
        if match.group(1) not in seen:
            try:
                check_run_files(ctx, key)
                seen[match.group(1)] = True
            except Forbidden:
                seen[match.group(1)] = False
        return seen[match.group(1)]

    return [o for o in objects if visible(o["key"])]


async def list_buckets(ctx: Context) -> list[dict]:
    return await asyncio.to_thread(ctx.objects.list_buckets)


async def list_objects(
    ctx: Context, name: str, prefix: str, recursive: bool, missing_ok: bool
) -> dict:
    """The objects under a prefix; with `missing_ok`, a bucket not there yet lists none."""
    store_name, notes = bucket(name)
    check_run_files(ctx, prefix)
    exists = await asyncio.to_thread(ctx.objects.bucket_exists, store_name)
    if not exists and not missing_ok:
        also = f" (stored as {store_name!r})" if store_name != name else ""
        raise NotFound(f"bucket {name!r}{also} does not exist")
    objects = (
        await asyncio.to_thread(
            lambda: list(ctx.objects.list_objects(store_name, prefix, recursive))
        )
        if exists
        else []
    )
    return {
        "bucket": store_name,
        "exists": exists,
        "prefix": prefix,
        "objects": _visible(ctx, objects),
        "part_size": PART_SIZE,
        "warnings": notes,
    }


async def put(ctx: Context, name: str, key: str, body: RawIOBase, size: int) -> dict:
    """Upload one object (its key checked with checked_key), creating its bucket. `body`
    is read in a worker thread."""
    store_name, notes = bucket(name)
    await asyncio.to_thread(ctx.objects.ensure_bucket, store_name)
    etag = await asyncio.to_thread(ctx.objects.put_stream, store_name, key, body, size)
    return {"bucket": store_name, "key": key, "size": size, "etag": etag, "warnings": notes}
