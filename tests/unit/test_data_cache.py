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


def _tree(cache: DataCache, name: str, *blobs: str) -> Path:
    """A tree as a stage-in makes it: the blobs linked in a partial one, then kept."""
    partial = cache.partial_tree()
    made: set[str] = set()
    for i, blob in enumerate(blobs):
        assert cache.link(blob, str(partial / "sub" / f"f{i}"), made)
    cache.keep_tree(partial, name)
    return cache.tree(name)


def test_over_the_limit_the_trees_no_run_holds_go_first_and_their_blobs_after(tmp_path: Path):
    cache = DataCache(tmp_path / "cache", max_bytes=10)
    a, b = _blob(cache, "a"), _blob(cache, "b")
    old, held = _tree(cache, "t-old", a), _tree(cache, "t-held", b)
    assert cache.hold("run-1", "t-held")  # made: a run mounts it
    assert not cache.hold("run-2", "t-new")  # not made yet: held all the same
    assert cache.evict() == 10  # 20 bytes over 10: the tree nobody holds, then its blob
    assert not old.exists() and not os.path.exists(a)
    assert not list((tmp_path / "cache" / "trees").glob(".partial-*"))  # renamed, removed
    assert (held / "sub" / "f0").read_bytes() == b"x" * 10 and os.path.exists(b)
    cache.release("run-1")
    cache.max_bytes = 0
    assert cache.evict() == 10
    assert not held.exists() and not os.path.exists(b)


def test_a_tree_made_twice_keeps_the_first_and_a_cut_off_one_is_gone_after_a_restart(
    tmp_path: Path,
):
    cache = DataCache(tmp_path / "cache", max_bytes=100)
    a = _blob(cache, "a")
    first = _tree(cache, "t", a)
    inode = first.stat().st_ino
    assert _tree(cache, "t", a).stat().st_ino == inode  # another run's, made meanwhile
    assert oct(first.stat().st_mode & 0o777) == "0o755"  # the learner's user reads it
    cut_off = cache.partial_tree()
    DataCache(tmp_path / "cache", max_bytes=100)  # the daemon started again
    assert not cut_off.exists() and first.exists()
    assert [p.name for p in (tmp_path / "cache" / "trees").iterdir()] == ["t"]


def test_a_trees_name_is_what_was_listed(tmp_path: Path):
    cache = DataCache(tmp_path / "cache", max_bytes=100)
    objects = [
        {"key": "p/a", "etag": "1", "size": 3},
        {"key": "p/b", "etag": "2", "size": 4},
    ]
    name = cache.tree_name("store", "bucket", "p/", objects)
    assert name == cache.tree_name("store", "bucket", "p/", objects[::-1])  # in any order
    changed = [objects[0], {**objects[1], "etag": "3"}]
    assert name != cache.tree_name("store", "bucket", "p/", changed)
    assert name != cache.tree_name("store", "bucket", "p/", objects[:1])
    assert name != cache.tree_name("other", "bucket", "p/", objects)
    assert name != cache.tree_name("store", "bucket2", "p/", objects)
