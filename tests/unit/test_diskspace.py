from __future__ import annotations

import errno
import sqlite3

from dlaasd import diskspace


def test_disk_full_is_recognised_through_causes():
    assert diskspace.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert diskspace.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert diskspace.is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not diskspace.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not diskspace.is_disk_full(sqlite3.OperationalError("database is locked"))
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert diskspace.is_disk_full(outer)
    loop = RuntimeError("a cause that is itself")
    loop.__cause__ = loop
    assert not diskspace.is_disk_full(loop)


def test_reserve_is_made_given_back_and_made_again(tmp_path):
    reserve = diskspace.Reserve(tmp_path, size=1024 * 1024)
    assert not reserve.held
    reserve.ensure()
    assert reserve.held and reserve.path.stat().st_size == 1024 * 1024
    assert reserve.release() is True
    assert not reserve.held and reserve.release() is False
    reserve.ensure()
    assert reserve.held
    assert not list(tmp_path.glob("*.part"))


def test_reserve_is_not_made_without_room(tmp_path):
    huge = diskspace.Reserve(tmp_path, size=diskspace.free_bytes(tmp_path))
    huge.ensure()  # it would take more than half of what is free
    assert not huge.held


def test_sentence_names_the_folder_and_what_to_do(tmp_path):
    text = diskspace.sentence(tmp_path, "staging the run in")
    assert str(tmp_path) in text and "staging the run in" in text and "free space" in text
    assert diskspace.error(tmp_path, "x").code == "S304"
