"""The object store (any S3 endpoint, through the minio SDK): stage-in, stage-out, data.

Stage-in fills a local cache keyed by endpoint, bucket, key and ETag; a run's DATA_DIR is
a tree of hard links into it, shared by the runs that list the same objects, so unchanged
data is never fetched or linked twice and a run's view cannot change under it. Stage-out
uploads results and logs; the local copy may go once the store answered every PUT.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar
from urllib.parse import unquote_plus, urlparse
from xml.etree import ElementTree

import urllib3
from minio import Minio
from minio.error import S3Error, ServerError

from .codes import Code
from .diskspace import is_disk_full
from .errors import RunError
from .units import format_size

if TYPE_CHECKING:
    from . import objectreader

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK = 1024 * 1024
SMALL = 2 * CHUNK  # stage-in: the size below which a request costs more than its bytes
AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}
# the store has no room: waiting would rarely help, so the results stay local at once
FULL_ERRORS = {"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded"}


@dataclass(frozen=True)
class Endpoint:
    url: str  # http://host:port
    access_key: str
    secret_key: str
    region: str = ""
    # what the data cache knows the store by: the bundled MinIO's own id, which outlives
    # a restart on another port; empty for an external store, known by its address
    identity: str = ""

    @property
    def label(self) -> str:
        return urlparse(self.url).netloc

    @property
    def cache_id(self) -> str:
        return self.identity or self.label


class StoreUnavailable(Exception):
    """The endpoint did not answer, or answered with a server error: worth retrying."""


class InvalidName(StoreUnavailable):
    """The store refused a bucket or object name. The API answers 400; a transfer retries
    and then fails like any other store refusal (its files stay local)."""


# S3 and MinIO error codes for a name the store will not take
NAME_ERRORS = {
    "InvalidBucketName",
    "InvalidObjectName",
    "KeyTooLongError",
    "XMinioInvalidObjectName",
    "XMinioInvalidResourceName",
    "XMinioObjectExistsAsDirectory",
    "XMinioParentIsObject",
}


@dataclass
class Transfer:
    """Statistics of one stage-in or stage-out, reported in `show --json`."""

    files: int = 0
    bytes: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    total_files: int = 0
    total_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nbytes: int, hit: bool = False, files: int = 1) -> None:
        with self.lock:
            if hit:
                self.cache_hits += files
            else:
                self.files += files
                self.bytes += nbytes

    def progress(self, verb: str) -> str:
        done = self.files + self.cache_hits
        return (
            f"{verb} {done}/{self.total_files} files, "
            f"{format_size(self.bytes)} of {format_size(self.total_bytes)}"
        )


def classify(exc: BaseException, what: str) -> BaseException:
    """Turn an SDK/transport error into RunError (final) or StoreUnavailable (retry)."""
    if isinstance(exc, S3Error):
        return _by_code(exc.code or "", exc.message or "", what, exc.bucket_name, exc.object_name)
    if isinstance(exc, ValueError):  # the SDK's own checks of bucket and object names
        return InvalidName(f"{what}: {exc}")
    if isinstance(exc, ServerError | urllib3.exceptions.HTTPError | OSError):
        return StoreUnavailable(f"{type(exc).__name__}: {_short(exc)}")
    return exc


def _by_code(code: str, message: str, what: str, bucket: str | None, key: str | None) -> Exception:
    """The error an S3 error code means (RunError: final; StoreUnavailable: retry)."""
    if code in AUTH_ERRORS:
        return RunError(
            Code.BAD_CREDENTIALS,
            f"the object store refused the credentials for {what} "
            f"({code}); check the access key and secret key",
        )
    if code == "NoSuchBucket":
        return RunError(
            Code.DOWNLOAD_FAILED,
            f"bucket {bucket!r} does not exist ({what}); "
            f"create it or upload data with `dlaasctl data upload`",
        )
    if code == "NoSuchKey":
        return RunError(Code.DOWNLOAD_FAILED, f"object {key!r} does not exist ({what})")
    if code in FULL_ERRORS:
        message = f"the object store is full ({code}: {message}); it cannot take {what}"
        return RunError(Code.UPLOAD_FAILED, message)
    if code in NAME_ERRORS:
        return InvalidName(f"{what}: the store refused the name ({code}: {message})")
    return StoreUnavailable(f"{code}: {message}")


def _reader_failure(exc: Exception, what: str, bucket: str, key: str | None) -> BaseException:
    """What an error of obstore's means to the lifecycle, as the SDK's would."""
    from . import objectreader

    if code := objectreader.refusal(exc):
        return _by_code(code, _short(exc), what, bucket, key)
    if isinstance(exc, objectreader.ReaderError):  # the store did not answer
        return StoreUnavailable(f"{type(exc).__name__}: {_short(exc)}")
    return classify(exc, what)


def _short(exc: BaseException) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    return text if len(text) < 160 else text[:157] + "..."


class ObjectStore:
    def __init__(self, endpoint: Endpoint, workers: int = 32):
        self.endpoint = endpoint
        self.workers = workers
        self._buckets: set[str] = set()  # known to exist: saves a request per upload
        self._reader: objectreader.Reader | None = None  # made on first use
        self._reader_lock = threading.Lock()
        u = urlparse(endpoint.url)
        self.http = http = urllib3.PoolManager(
            maxsize=workers * 2 + 4,
            timeout=urllib3.Timeout(connect=3, read=120),
            retries=urllib3.Retry(total=1, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
            blocksize=CHUNK,  # fewer system calls per upload
        )
        self.unsigned_ok = u.scheme == "https" or _loopback(u.hostname or "")
        self.client = Minio(
            u.netloc,
            access_key=endpoint.access_key,
            secret_key=endpoint.secret_key,
            secure=u.scheme == "https",
            region=endpoint.region or None,
            http_client=http,
        )

    def call(self, what: str, fn: Callable, *args, **kwargs):
        """Run an SDK call, classifying its failure."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise classify(exc, what) from exc

    # --- health and buckets ------------------------------------------------------

    def check(self) -> None:
        """Raise RunError (C103: credentials refused) or StoreUnavailable unless healthy."""
        self.call(f"the object store at {self.endpoint.label}", self.client.list_buckets)

    def healthy(self) -> tuple[bool, str]:
        try:
            self.check()
            return True, "ok"
        except (RunError, StoreUnavailable) as exc:
            return False, str(exc)

    def bucket_exists(self, bucket: str) -> bool:
        return self.call(f"bucket {bucket}", self.client.bucket_exists, bucket)

    def ensure_bucket(self, bucket: str) -> None:
        if bucket in self._buckets:
            return
        if not self.bucket_exists(bucket):
            try:
                self.client.make_bucket(bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise classify(exc, f"bucket {bucket}") from exc
        self._buckets.add(bucket)

    def list_buckets(self) -> list[dict]:
        return [
            {"name": b.name, "created": b.creation_date.isoformat() if b.creation_date else None}
            for b in self.call("list buckets", self.client.list_buckets)
        ]

    def list_objects(self, bucket: str, prefix: str = "", recursive: bool = True) -> Iterator[dict]:
        """Every object under `prefix` (and, not recursive, each folder below it), a page
        of up to 1,000 a request (S3's ListObjectsV2). Parsed here rather than by the SDK,
        whose parser takes about 1 ms an object: the most of a cached stage-in."""
        for page in self.pages(bucket, prefix, recursive):
            yield from page

    def pages(
        self,
        bucket: str,
        prefix: str = "",
        recursive: bool = True,
        size: int = 1000,
        after: str = "",
    ) -> Iterator[list[dict]]:
        """The listing a page of `size` at a time (from the first key past `after`); the
        next page is asked for (in a thread) while the caller works on this one, so the
        store's listing and the caller's work on the objects overlap."""
        query: dict[str, str | list[str] | tuple[str]] = {"list-type": "2", "max-keys": str(size)}
        query |= {"encoding-type": "url"}
        query |= {"prefix": prefix, "delimiter": "" if recursive else "/"}
        if after:
            query["start-after"] = after
        what = f"s3://{bucket}/{prefix}"
        with ThreadPoolExecutor(1, thread_name_prefix="listing") as ahead:
            page, token = self._page(bucket, dict(query), what)
            while True:
                following = None
                if token:
                    following = ahead.submit(
                        self._page, bucket, {**query, "continuation-token": token}, what
                    )
                yield page
                if following is None:
                    return
                page, token = following.result()

    def listing(self, bucket: str, prefix: str, work: Callable[[list[dict]], T]) -> Iterator[T]:
        """work(page) for every page of the objects under `prefix`, in no set order, in
        the thread that listed the page. MinIO answers a listing on one core, at about
        50 µs an object, the most of a cached stage-in: the folders right below `prefix`
        (below its only folder, if it has one) are listed side by side, through obstore
        (a third of the SDK's cost a request). Past SPLIT_MAX folders, a request each
        would cost more than it saves: one listing of them all."""
        folders: list[str] = []
        for page in self.pages(bucket, prefix, recursive=False, size=LINK_PAGE):
            folders += [o["key"] for o in page if o["dir"]]
            yield work([o for o in page if not o["dir"]])
        if not folders:
            return
        if len(folders) == 1:  # nothing to split here: below it, maybe
            yield from self.listing(bucket, folders[0], work)
            return
        if len(folders) > SPLIT_MAX:
            for page in self.pages(bucket, prefix, size=LINK_PAGE):  # less what was given
                yield work([o for o in page if "/" in o["key"][len(prefix) :]])
            return
        pool = ThreadPoolExecutor(min(len(folders), SPLIT_WORKERS), "listing")
        try:
            listed = [
                pool.submit(lambda f: [work(p) for p in self._folder(bucket, f)], f)
                for f in folders
            ]
            for done in as_completed(listed):
                yield from done.result()
        finally:
            pool.shutdown(cancel_futures=True)

    def _folder(self, bucket: str, folder: str) -> Iterator[list[dict]]:
        """The listing of a folder through obstore; from a key it cannot name on (a
        control character, say), through the SDK."""
        from . import objectreader

        last = ""
        try:
            for page in self.reader().list(bucket, folder, LINK_PAGE):
                yield page
                last = page[-1]["key"] if page else last
            return
        except objectreader.Unnamed:
            pass
        except (RunError, StoreUnavailable):  # the bucket's region, asked of the SDK
            raise
        except Exception as exc:
            raise _reader_failure(exc, f"s3://{bucket}/{folder}", bucket, None) from exc
        yield from self.pages(bucket, folder, size=LINK_PAGE, after=last)

    def _page(self, bucket: str, query: dict, what: str) -> tuple[list[dict], str | None]:
        """One page of a listing, and the token of the next (None: it was the last)."""
        try:
            resp = self.client._execute("GET", bucket, query_params=query)
            listing = ElementTree.fromstring(resp.data)
        except Exception as exc:
            raise classify(exc, what) from exc
        found: list[dict] = []
        token = None
        truncated = False
        for element in listing:
            if element.tag == CONTENTS:
                found.append(_object(element))
                continue
            tag = element.tag.rpartition("}")[2]
            if tag == "CommonPrefixes":
                key = unquote_plus(element.findtext(f"{S3_NS}Prefix") or "")
                found.append({"key": key, "size": 0, "etag": "", "modified": None, "dir": True})
            elif tag == "IsTruncated":
                truncated = (element.text or "").lower() == "true"
            elif tag == "NextContinuationToken":
                token = element.text
        return found, token if truncated else None

    def remove_prefix(self, bucket: str, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject

        keys = [DeleteObject(o["key"]) for o in self.list_objects(bucket, prefix) if not o["dir"]]
        for err in self.client.remove_objects(bucket, keys):
            raise StoreUnavailable(f"could not remove {err.name}: {err.code} {err.message}")
        return len(keys)

    # --- stage-in ----------------------------------------------------------------

    def stage_in(
        self,
        bucket: str,
        prefix: str,
        dest: Path,
        cache: DataCache,
        stats: Transfer,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Link every object under `prefix` into `dest`, downloading only cache misses;
        each page linked as it is listed (a node program's stage-in)."""
        started = time.monotonic()
        stats.total_files = stats.total_bytes = 0  # counted page by page (again on a retry)
        linking = _Linking(self.endpoint.cache_id, bucket, prefix, str(dest), cache, stats)
        misses = [miss for missed in self.listing(bucket, prefix, linking.hits) for miss in missed]
        self._fetch(linking, misses, stop)
        stats.seconds += time.monotonic() - started

    def stage_in_tree(
        self,
        bucket: str,
        prefix: str,
        cache: DataCache,
        stats: Transfer,
        run_id: str,
        stop: Callable[[], bool] = lambda: False,
    ) -> Path | None:
        """The objects under `prefix` as one of the cache's trees (see DataCache), made
        unless a stage-in that found the same objects made it: its path (held for
        `run_id`), None if `stop` cut it short."""
        started = time.monotonic()
        for _ in range(3):  # an object changed while it was fetched: list again
            stats.total_files = stats.total_bytes = 0
            objects = [o for page in self.listing(bucket, prefix, list) for o in page]
            name = cache.tree_name(self.endpoint.cache_id, bucket, prefix, objects)
            if cache.hold(run_id, name):
                stats.total_files = len(objects)
                stats.total_bytes = sum(o["size"] for o in objects)
                stats.add(0, hit=True, files=len(objects))
                break
            partial = cache.partial_tree()
            try:
                linking = _Linking(
                    self.endpoint.cache_id, bucket, prefix, str(partial), cache, stats
                )
                self._fetch(linking, linking.hits(objects), stop)
                if stop():
                    return None
                if not linking.changed:  # else the tree would not hold what it is named by
                    cache.keep_tree(partial, name)
                    break
            finally:
                shutil.rmtree(partial, ignore_errors=True)  # gone once kept
        else:
            raise StoreUnavailable(f"the objects under s3://{bucket}/{prefix} keep changing")
        stats.seconds += time.monotonic() - started
        return cache.tree(name)

    def _fetch(
        self, linking: _Linking, misses: list[tuple[dict, str]], stop: Callable[[], bool]
    ) -> None:
        """Download the objects the cache missed, and link each where it goes."""
        misses.sort(key=lambda item: -item[0]["size"])  # the longest first, none left alone

        def fetch(item: tuple[dict, str]) -> None:
            if stop():
                return
            obj, target = item
            for _ in range(3):  # another run's eviction may take a fresh blob before its link
                blob = self._download(linking.bucket, obj, linking.cache)
                if linking.cache.link(blob, target, linking.made):
                    break
            else:
                raise StoreUnavailable(f"{obj['key']} was evicted from the cache as it came")
            if blob != linking.blob(obj):  # another version than the one listed
                linking.changed = True
            linking.stats.add(obj["size"])

        self._parallel(fetch, misses)

    def _download(self, bucket: str, obj: dict, cache: DataCache) -> str:
        """Fetch an object into the cache and return its blob. A small object comes
        through obstore (objectreader.py); a large one through the SDK's stream, which
        copies its bytes least, and so does a key obstore cannot name."""
        if obj["size"] >= SMALL:
            return self._download_with_sdk(bucket, obj, cache)
        key, what = obj["key"], f"s3://{bucket}/{obj['key']}"
        try:
            chunks, etag = self.reader().get(bucket, key, SMALL)
            etag = etag or obj["etag"]  # changed since it was listed: the new one's blob
            return self._into_blob(cache, bucket, key, etag, lambda fd: _write(fd, chunks))
        except ValueError:
            return self._download_with_sdk(bucket, obj, cache)
        except (RunError, StoreUnavailable):  # the bucket's region, asked of the SDK
            raise
        except Exception as exc:
            if is_disk_full(exc):  # our own disk, not the store: the lifecycle says where
                raise
            raise _reader_failure(exc, what, bucket, key) from exc

    def reader(self) -> objectreader.Reader:
        """obstore's client for this endpoint, made on first use (see objectreader)."""
        from . import objectreader

        with self._reader_lock:
            if self._reader is None:
                ep = self.endpoint
                self._reader = objectreader.Reader(
                    ep.url, ep.access_key, ep.secret_key, self._region_of
                )
            return self._reader

    def _region_of(self, bucket: str) -> str:
        """The bucket's region: the configured one, else the SDK's (asked of the store
        once per bucket, as it does for its own requests)."""
        return self.call(f"bucket {bucket}", self.client._get_region, bucket)

    def _download_with_sdk(self, bucket: str, obj: dict, cache: DataCache) -> str:
        what = f"s3://{bucket}/{obj['key']}"
        try:
            resp = self.client.get_object(bucket, obj["key"])
        except Exception as exc:
            raise classify(exc, what) from exc
        try:
            etag = resp.headers.get("ETag", obj["etag"]).strip('"')  # changed since listed?
            return self._into_blob(
                cache, bucket, obj["key"], etag, lambda fd: _write(fd, resp.stream(CHUNK))
            )
        except RunError:
            raise
        except Exception as exc:
            if is_disk_full(exc):
                raise
            raise classify(exc, what) from exc
        finally:
            resp.close()
            resp.release_conn()

    def _into_blob(
        self, cache: DataCache, bucket: str, key: str, etag: str, fill: Callable[[int], object]
    ) -> str:
        """The cache's blob of this version, written by fill(fd) into a file of its own
        that becomes the blob, read-only, only once complete."""
        blob = cache.blob(self.endpoint.cache_id, bucket, key, etag)
        tmp = f"{blob}.part-{uuid.uuid4().hex[:8]}"
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                fill(fd)
                os.fchmod(fd, 0o444)
            finally:
                os.close(fd)
            os.replace(tmp, blob)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return blob

    # --- stage-out ---------------------------------------------------------------

    def stage_out(
        self,
        files: list[tuple[Path, str]],
        bucket: str,
        stats: Transfer,
        resume: bool = True,
        stop: Callable[[], bool] = lambda: False,
        opener: Callable[[Path], BinaryIO] = lambda p: open(p, "rb"),  # noqa: SIM115
    ) -> None:
        """Upload (local path, key) pairs. A PUT answered 200 stored the object whole (the
        store read all of its Content-Length): no listing afterwards checks it again.
        `resume`: an earlier attempt may have uploaded some already; skip those. `stop`:
        the daemon is stopping; what is left is uploaded after its restart. `opener`: how
        a file is opened (a run's own, without following links); one it cannot open (a
        link put in a listed file's place, or gone) is left out, and what is uploaded is
        what that descriptor holds."""
        started = time.monotonic()
        self.ensure_bucket(bucket)
        stats.total_files = len(files)
        stats.total_bytes = sum(_size(p) for p, _ in files)
        present = {}
        if resume:
            prefixes = {k.split("/", 1)[0] + "/" for _, k in files}
            present = {o["key"]: o["size"] for p in prefixes for o in self.list_objects(bucket, p)}

        def put(item: tuple[Path, str]) -> None:
            if stop():
                raise StoreUnavailable("dlaasd is stopping")
            path, key = item
            try:
                f = opener(path)
            except FileNotFoundError:
                log.warning("event=stage_out_skipped path=%s reason=gone_or_link", path)
                return
            with f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    return
                size = st.st_size
                if present.get(key) == size:  # uploaded by an earlier, interrupted attempt
                    stats.add(size, hit=True)
                    return
                try:
                    self.put_file(bucket, key, Path(f"/proc/self/fd/{f.fileno()}"))
                except RunError as exc:
                    if exc.code != Code.DOWNLOAD_FAILED:
                        raise
                    self._buckets.discard(bucket)  # removed behind our back: make it again
                    raise StoreUnavailable(exc.message) from exc
            stats.add(size)

        self._parallel(put, files)
        stats.seconds += time.monotonic() - started

    def _parallel(self, fn: Callable, items: list) -> None:
        """fn(item) for every item, `workers` at a time; the first failure cancels what
        has not started yet (a store that is down fails them all anyway) and propagates."""
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(fn, item) for item in items]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise

    # --- plain transfers (the data API, definitions) ------------------------------

    def put_file(self, bucket: str, key: str, path: Path) -> None:
        """Upload a file. Where the payload needs no signature of its own (loopback, or
        TLS, which the SDK leaves unsigned too), a presigned PUT: then neither we nor the
        store hash every byte for the signature, about 1.5x the throughput; else the SDK."""
        size = path.stat().st_size
        what = f"s3://{bucket}/{key}"
        if not self.unsigned_ok or size > SINGLE_PUT_MAX:
            result = self.call(what, self.client.fput_object, bucket, key, str(path))
            if not result.etag:  # a multipart upload's completion may answer 200 and an error
                raise StoreUnavailable(f"the store did not confirm {what}")
            return
        try:
            url = self.client.presigned_put_object(bucket, key)
            with open(path, "rb") as body:
                resp = self.http.request(
                    "PUT", url, body=body, headers={"Content-Length": str(size)}, retries=False
                )
        except Exception as exc:
            raise classify(exc, what) from exc
        if resp.status != 200:
            raise classify(
                S3Error.fromxml(resp)
                if resp.data
                else ServerError(f"HTTP {resp.status}", resp.status),
                what,
            )

    def put_stream(self, bucket: str, key: str, stream, length: int) -> str:
        result = self.call(
            f"s3://{bucket}/{key}",
            self.client.put_object,
            bucket,
            key,
            stream,
            length,
            part_size=PART_SIZE,
        )
        return (result.etag or "").strip('"')

    def get(self, bucket: str, key: str):
        """A streaming response; the caller closes it and releases the connection."""
        return self.call(f"s3://{bucket}/{key}", self.client.get_object, bucket, key)


# Part size for uploads through the daemon; the client computes ETags with the same size.
PART_SIZE = 16 * 1024 * 1024
SINGLE_PUT_MAX = 5 * 1024**3  # S3's limit for one PUT


S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
CONTENTS, KEY, SIZE, ETAG, MODIFIED = (
    S3_NS + tag for tag in ("Contents", "Key", "Size", "ETag", "LastModified")
)
LINK_PAGE = 1000  # objects a listing page of a stage-in (MinIO: smaller pages cost more)
SPLIT_MAX = 64  # folders of a stage-in listed side by side (see listing)
SPLIT_WORKERS = 8


def _write(fd: int, chunks: Iterable) -> None:
    """Write the chunks to fd, each whole (os.write may write less than asked)."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _object(element: ElementTree.Element) -> dict:
    """One <Contents> of a listing, as list_objects yields it. findtext with a whole tag
    is ElementTree's C path: a child's fields read in Python cost 4x as much (a warm
    stage-in parses a listing in about the time MinIO takes to make it)."""
    key = element.findtext(KEY) or ""
    return {
        "key": unquote_plus(key) if "%" in key or "+" in key else key,
        "size": int(element.findtext(SIZE) or 0),
        "etag": (element.findtext(ETAG) or "").strip('"'),
        "modified": _iso(element.findtext(MODIFIED)),
        "dir": False,
    }


def _iso(stamp: str | None) -> str | None:
    """S3's time (2026-11-30T14:00:00.123Z) as the SDK gave it (datetime.isoformat)."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).isoformat()


def _size(path: Path) -> int:
    """A listed file's size, 0 if it is gone (not following a link in its place)."""
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MAX_KEY = 1024  # bytes of UTF-8, S3's limit


def key_problem(key: str) -> str | None:
    """Why the object store cannot hold an object named `key`, with what to do, or None.
    S3 takes almost any name; MinIO keeps each object as a file, so a key must also be a
    path: '/' between non-empty parts, none of them '.' or '..' (MinIO splits at '\\' too)."""
    if not key:
        return "is empty; name the object"
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > MAX_KEY:
        return f"is {size} bytes long; the limit is {MAX_KEY}"
    if "\x00" in key:
        return "contains a NUL character; remove it"
    if any(not p for p in key.split("/")):
        return "has an empty part (a leading, trailing or double '/'); remove the extra '/'"
    if any(p.strip() in (".", "..") for p in re.split(r"[/\\]", key)):
        return (
            "has a '.' or '..' part (between '/' or '\\'); name the object by its path "
            "from the bucket's root"
        )
    return None


def safe_relative(rel: str) -> bool:
    """Whether `rel` names a path inside a folder (lexically: the folders under a run's
    data folder are all made by dlaasd, so no link can lead out of it)."""
    return (
        bool(rel) and not rel.startswith("/") and "\x00" not in rel and ".." not in rel.split("/")
    )


@dataclass
class _Linking:
    """Where one stage-in links the objects it lists, and the folders it made there."""

    store: str  # the endpoint's cache id
    bucket: str
    prefix: str
    base: str
    cache: DataCache
    stats: Transfer
    made: set[str] = field(default_factory=set)
    changed: bool = False  # an object came in another version than the one listed

    def blob(self, obj: dict) -> str:
        return self.cache.blob(self.store, self.bucket, obj["key"], obj["etag"])

    def hits(self, objects: list[dict]) -> list[tuple[dict, str]]:
        """Link the cached objects; the others, with their paths."""
        with self.stats.lock:
            self.stats.total_files += len(objects)
            self.stats.total_bytes += sum(o["size"] for o in objects)
        missed = []
        for obj in objects:  # hits are a few system calls each
            rel = obj["key"][len(self.prefix) :].lstrip("/")
            if not safe_relative(rel):
                raise RunError(
                    Code.DOWNLOAD_FAILED, f"object key {obj['key']!r} is not a usable file path"
                )
            target = os.path.join(self.base, rel)
            if not self.cache.link(self.blob(obj), target, self.made):
                missed.append((obj, target))
        self.stats.add(0, hit=True, files=len(objects) - len(missed))
        return missed


class DataCache:
    """Content cache of downloaded objects. A blob with one link is used by no run.

    Beside the blobs, trees: the links of one stage-in's whole listing, named by what it
    listed (keys and ETags), mounted read-only as DATA_DIR by every run whose stage-in
    lists the same. A warm stage-in lists and links nothing (1,004 links took 13 ms of a
    39 ms stage-in). A tree holds its blobs; over max_bytes the trees no run mounts go
    first."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self._held: dict[str, str] = {}  # run id -> the tree it mounts (or is about to)
        self._lock = threading.Lock()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        for partial in (root / "trees").glob(".partial-*"):  # a stage-in cut off
            shutil.rmtree(partial, ignore_errors=True)

    def blob(self, endpoint: str, bucket: str, key: str, etag: str) -> str:
        digest = hashlib.sha256(f"{endpoint}\0{bucket}\0{key}\0{etag}".encode()).hexdigest()
        return f"{self.root}/blobs/{digest[:2]}/{digest}"

    def link(self, blob: str, target: str, made: set[str]) -> bool:
        """Link `blob` at `target`; False if the blob is not in the cache. Strings, not
        Paths: this runs once for every file of every run's data."""
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        try:
            os.link(blob, target)
        except FileNotFoundError:
            return False
        except FileExistsError:  # a resumed stage-in
            os.unlink(target)
            return self.link(blob, target, made)
        except OSError:  # another file system: copy instead
            shutil.copyfile(blob, target)
            os.utime(blob)  # recently used (a link says so itself: see evict)
        return True

    def tree_name(self, store: str, bucket: str, prefix: str, objects: list[dict]) -> str:
        digest = hashlib.sha256(f"{store}\0{bucket}\0{prefix}".encode())
        for o in sorted(objects, key=lambda o: o["key"]):
            digest.update(f"\0{o['key']}\0{o['etag']}\0{o['size']}".encode())
        return digest.hexdigest()

    def tree(self, name: str) -> Path:
        return self.root / "trees" / name

    def hold(self, run_id: str, name: str) -> bool:
        """Keep the tree from eviction while the run uses it (see release); whether it is
        made already (marked used now, then)."""
        with self._lock:
            self._held[run_id] = name
            try:
                os.utime(self.tree(name))
                return True
            except FileNotFoundError:
                return False

    def release(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)

    def partial_tree(self) -> Path:
        (self.root / "trees").mkdir(exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root / "trees"))
        partial.chmod(0o755)  # DATA_DIR: read by the learner's user, as its folders are
        return partial

    def keep_tree(self, partial: Path, name: str) -> None:
        """A tree made whole takes its name; one made meanwhile by another run stays."""
        with self._lock:
            try:
                os.rename(partial, self.tree(name))
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise

    def evict(self) -> int:
        """Beyond max_bytes: first the trees no run holds, then the least recently used
        blobs nothing links; the bytes freed. A blob's ctime is its last use: a link to
        it, or a link removed, changes it, and no system call more per file is needed to
        say so."""
        total, blobs = self._blobs()
        if total > self.max_bytes and self._drop_trees():
            total, blobs = self._blobs()  # what only the trees linked is unlinked now
        freed = 0
        for _, size, path in sorted(blobs):
            if total - freed <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            freed += size
        return freed

    def _blobs(self) -> tuple[int, list[tuple[float, int, Path]]]:
        """The bytes of all blobs, and (last use, size, path) of those nothing links."""
        blobs = []
        total = 0
        for path in (self.root / "blobs").glob("*/*"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            total += st.st_size
            if st.st_nlink == 1 and ".part-" not in path.name:
                blobs.append((max(st.st_mtime, st.st_ctime), st.st_size, path))
        return total, blobs

    def _drop_trees(self) -> int:
        """Drop the trees no run holds: each renamed away at once (no run finds it half
        removed, and a restart removes what is left), then removed."""
        with self._lock:
            held = set(self._held.values())
            dropped = []
            for tree in (self.root / "trees").glob("[!.]*"):
                if tree.name not in held:
                    dropped.append(tree.rename(tree.with_name(f".partial-dropped-{tree.name}")))
        for tree in dropped:
            shutil.rmtree(tree, ignore_errors=True)
        return len(dropped)
