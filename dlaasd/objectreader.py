"""Small objects and the folders' listings read through obstore (Rust's object_store)
for stage-in: its cost a request is a third of the minio SDK's, and on an object of a
few hundred KiB (or a listing's page) the request is the most of the work. Imported on
a stage-in's first use, not at start: the library is 7 MB of the daemon's memory."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
from obstore import Bytes
from obstore.exceptions import (
    BaseError,
    InvalidPathError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore.store import S3Config

S3_CODE = re.compile(r"<Code>(\w+)</Code>")  # in the store's answer, which obstore quotes


class Reader:
    """GETs from one endpoint; obstore's client is bound to a bucket: one per bucket."""

    def __init__(
        self, url: str, access_key: str, secret_key: str, region_of: Callable[[str], str]
    ) -> None:
        self.config: S3Config = {
            "endpoint": url,
            "access_key_id": access_key,
            "secret_access_key": secret_key,
        }
        self.region_of = region_of  # a bucket's region: requests are signed for it
        self._clients: dict[str, S3Store] = {}
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str, whole_below: int) -> tuple[Iterable[bytes | Bytes], str]:
        """The object's bytes and its ETag: whole (in Rust's memory) if it is smaller
        than `whole_below`, else in chunks of that size (it may have grown since it was
        listed). ValueError: a key obstore cannot name (a control character, say),
        refused before any request."""
        result = obstore.get(self._client(bucket), key)
        etag = (result.meta.get("e_tag") or "").strip('"')
        if result.meta["size"] < whole_below:
            return [result.bytes()], etag
        return result.stream(whole_below), etag

    def list(self, bucket: str, folder: str, page: int) -> Iterator[list[dict]]:
        """The objects under `folder` (a prefix ending in '/'), `page` at a time in key
        order, as objectstore's listing gives them. Unnamed: a key obstore cannot name
        (a control character, say), in the page it would have come in."""
        for found in obstore.list(self._client(bucket), prefix=folder, chunk_size=page):
            yield [
                {
                    "key": o["path"],
                    "size": o["size"],
                    "etag": (o["e_tag"] or "").strip('"'),
                    "modified": o["last_modified"].isoformat(),
                    "dir": False,
                }
                for o in found
            ]

    def _client(self, bucket: str) -> S3Store:
        with self._lock:
            client = self._clients.get(bucket)
            if client is None:
                client = self._clients[bucket] = S3Store(
                    bucket,
                    config={**self.config, "region": self.region_of(bucket)},
                    # as the SDK's: a short connect, a long read, one retry (a store that
                    # is down is retried by the lifecycle, which says so in the status)
                    client_options={
                        "allow_http": True,
                        "connect_timeout": "3s",
                        "read_timeout": "120s",
                        "timeout": "24h",
                    },
                    retry_config={"max_retries": 1, "retry_timeout": timedelta(seconds=30)},
                )
            return client


ReaderError = BaseError  # what obstore raises, besides FileNotFoundError for a 404
Unnamed = (ValueError, InvalidPathError)  # a key obstore cannot name


def refusal(exc: BaseException) -> str | None:
    """The S3 error code of the store's answer that `exc` reports; None when the store
    did not answer (down, a timeout): worth a retry."""
    if not isinstance(exc, BaseError | FileNotFoundError):  # obstore's not-found is the latter
        return None
    if found := S3_CODE.search(str(exc)):
        return found[1]
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        return "AccessDenied"
    return None
