"""RunFolder.give_to hands a job's folders to the container's user without following a
link its owner put in place of a folder or file (dlaasd is root when it gives)."""

from __future__ import annotations

import os
import shutil

import pytest

from dlaasd.runfolder import RunFolder

pytestmark = pytest.mark.needs_root  # chown to another user

OTHER = 4242


def test_links_in_a_job_folder_are_not_followed(tmp_path):
    folder = RunFolder.of(tmp_path / "state", "training-abcdefghi")
    folder.prepare()
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "f").write_text("not the run's\n")
    shutil.rmtree(folder.results)
    folder.results.symlink_to(outside)  # a folder swapped for a link
    (folder.logs / "sub").mkdir()
    (folder.logs / "sub" / "log.txt").write_text("x\n")
    (folder.logs / "link").symlink_to(outside / "f")
    (folder.logs / "dirlink").symlink_to(outside / "inner")

    folder.give_to(OTHER, OTHER)

    for p in (outside, outside / "inner", outside / "f"):
        assert p.stat().st_uid == os.geteuid(), p
    for p in (folder.job, folder.logs, folder.logs / "sub", folder.logs / "sub" / "log.txt"):
        assert p.lstat().st_uid == OTHER, p
    for p in (folder.logs / "link", folder.logs / "dirlink"):
        assert p.lstat().st_uid == OTHER, p  # the link itself, not what it leads to
