"""The data cache's eviction: least recently used first, never a blob a run still links."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dlaasd.objectstore import DataCache


def _blob(cache: DataCache, key: str) -> str:
    path = cache.blob("store", "bucket", key, "etag")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(b"x" * 10)
    time.sleep(0.05)  # file times are coarse: let each step get a later one
    return path


def test_eviction_keeps_the_recently_linked_and_the_linked(tmp_path: Path):
    cache = DataCache(tmp_path / "cache", max_bytes=20)
    a, b, c = (_blob(cache, k) for k in ("a", "b", "c"))
    made: set[str] = set()
    # a was staged into a run that is gone since: used after c was made
    assert cache.link(a, str(tmp_path / "run1" / "a"), made)
    os.unlink(tmp_path / "run1" / "a")
    time.sleep(0.05)
    assert cache.link(b, str(tmp_path / "run2" / "b"), made)  # a run still uses b
    assert not cache.link(cache.blob("store", "bucket", "d", "etag"), str(tmp_path / "d"), made)
    assert cache.evict() == 10  # 30 bytes over 20: the least recently used unlinked one
    assert os.path.exists(a) and os.path.exists(b) and not os.path.exists(c)
    cache.max_bytes = 0
    assert cache.evict() == 10  # a goes too; b is linked, so it stays
    assert not os.path.exists(a) and os.path.exists(b)
