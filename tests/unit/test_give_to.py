"""A job folder handed to the container's user (dlaasd is root) and prepared again on a
resume: no link its owner put in place of a folder or file is followed."""

from __future__ import annotations

import os
import shutil
import zipfile

import pytest

from dlaasd.phases.stage_in import prepare_job
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


def test_a_resumed_job_folder_is_taken_back_before_dlaasd_writes_in_it(tmp_path):
    """A run resumed in DOWNLOADING: its owner had its job folder, and put links where the
    code is unpacked and the helpers copied. Nothing is written where they lead."""
    folder = RunFolder.of(tmp_path / "state", "training-abcdefghi")
    folder.root.mkdir(parents=True)
    with zipfile.ZipFile(folder.model_zip, "w") as zf:
        zf.writestr("train.py", "print('hi')\n")
    prepare_job(folder, None, (OTHER, OTHER))  # the first time
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(folder.model_code)
    folder.model_code.symlink_to(elsewhere)  # as the owner could (the folder is theirs)
    shutil.rmtree(folder.job / ".dlaas")
    (folder.job / ".dlaas").symlink_to(elsewhere)
    (folder.data / "sub").symlink_to(elsewhere)  # where the stage-in would link the data

    prepare_job(folder, {"lr": 0.1}, (OTHER, OTHER))  # the resume

    assert list(elsewhere.iterdir()) == []
    assert not folder.model_code.is_symlink()
    assert (folder.model_code / "train.py").read_text() == "print('hi')\n"
    assert (folder.job / ".dlaas").is_dir() and not (folder.job / ".dlaas").is_symlink()
    assert not (folder.data / "sub").is_symlink()
    assert folder.job.stat().st_uid == OTHER  # handed back
