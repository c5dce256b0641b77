"""dlaasd.archive: model code zips that cannot escape their folder or explode."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from dlaasd import archive
from dlaasd.archive import ArchiveError

FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755


def make_zip(path: Path, entries: list[tuple]) -> Path:
    """entries: (name, data) or (name, data, mode); mode is the Unix st_mode."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, *mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = (mode[0] if mode else DIR if name.endswith("/") else FILE) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def refused(path: Path, **kw) -> list[str]:
    with pytest.raises(ArchiveError) as info:
        archive.check(path, **kw)
    assert info.value.code == "C102"
    return info.value.problems


# --- good archives ----------------------------------------------------------------------


def test_normal_zip(tmp_path):
    z = make_zip(
        tmp_path / "m.zip",
        [("manifest.yml", "name: a\n"), ("train.py", "print(1)\n"), ("pkg/util.py", "x = 1\n")],
    )
    info = archive.check(z)
    assert info.files == 3 and info.bytes == 8 + 9 + 6
    assert info.manifest == b"name: a\n"
    archive.unpack(z, tmp_path / "out")
    assert tree(tmp_path / "out") == ["manifest.yml", "pkg", "pkg/util.py", "train.py"]
    assert (tmp_path / "out" / "train.py").read_text() == "print(1)\n"


def test_zipped_folder_has_its_top_folder_stripped(tmp_path):
    z = make_zip(
        tmp_path / "m.zip",
        [("model/", ""), ("model/manifest.yml", "name: b\n"), ("model/src/train.py", "x")],
    )
    assert archive.check(z).manifest == b"name: b\n"
    archive.unpack(z, tmp_path / "out")
    assert tree(tmp_path / "out") == ["manifest.yml", "src", "src/train.py"]


def test_zipped_folder_without_directory_entries(tmp_path):
    z = make_zip(tmp_path / "m.zip", [("model/manifest.yaml", "name: c\n"), ("model/t.py", "")])
    assert archive.check(z).manifest == b"name: c\n"  # manifest.yaml is found too
    archive.unpack(z, tmp_path / "out")
    assert tree(tmp_path / "out") == ["manifest.yaml", "t.py"]


def test_two_top_folders_are_kept(tmp_path):
    z = make_zip(tmp_path / "m.zip", [("a/x.py", ""), ("b/y.py", "")])
    archive.unpack(z, tmp_path / "out")
    assert tree(tmp_path / "out") == ["a", "a/x.py", "b", "b/y.py"]


def test_manifest_below_the_top_is_not_the_manifest(tmp_path):
    z = make_zip(tmp_path / "m.zip", [("sub/manifest.yml", "name: a\n"), ("train.py", "")])
    assert archive.check(z).manifest is None


def test_no_manifest(tmp_path):
    assert archive.check(make_zip(tmp_path / "m.zip", [("train.py", "")])).manifest is None


def test_empty_zip(tmp_path):
    z = make_zip(tmp_path / "m.zip", [])
    assert archive.check(z).files == 0
    archive.unpack(z, tmp_path / "out")
    assert tree(tmp_path / "out") == []


def test_unpack_keeps_the_execute_bit_only(tmp_path):
    z = make_zip(
        tmp_path / "m.zip",
        [
            ("run.sh", "#!/bin/sh\n", stat.S_IFREG | 0o777),
            ("secret", "", stat.S_IFREG | 0o600),
            ("plain", "", stat.S_IFREG | 0o644),
        ],
    )
    archive.unpack(z, tmp_path / "out")
    mode = {
        n: stat.S_IMODE(os.stat(tmp_path / "out" / n).st_mode)
        for n in ("run.sh", "secret", "plain")
    }
    assert mode == {"run.sh": 0o755, "secret": 0o644, "plain": 0o644}


def test_pack_dir_round_trip(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "manifest.yml").write_text("name: a\n")
    (src / "pkg" / "m.py").write_text("x")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    z = tmp_path / "m.zip"
    assert archive.pack_dir(src, z) == 2
    assert archive.check(z).manifest == b"name: a\n"
    archive.unpack(z, tmp_path / "out")
    assert tree(tmp_path / "out") == ["manifest.yml", "pkg", "pkg/m.py"]


def test_zip_with_permission_bits_only_is_accepted(tmp_path):
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("train.py", "print(1)\n")  # external_attr = 0o600 << 16
    assert archive.check(z).files == 1


def test_zip_without_unix_modes_is_accepted(tmp_path):
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("train.py")
        zf.writestr(info, "x")
        # as made on Windows: MS-DOS attributes only (the archive bit), no Unix mode;
        # set after writestr, which would put 0o600 in an empty external_attr
        info.create_system, info.external_attr = 0, 0x20
    assert archive.check(z).files == 1


# --- refused archives -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, word",
    [
        ("../evil.py", "'..'"),
        ("a/../../evil.py", "'..'"),
        ("model/../../x", "'..'"),
        ("/etc/cron.d/evil", "absolute path"),
        ("/abs.py", "absolute path"),
        ("C:/Windows/evil.dll", "absolute path"),
        ("a\\..\\..\\evil", "backslash"),
    ],
)
def test_escaping_entries_are_refused(tmp_path, name, word):
    z = make_zip(tmp_path / "m.zip", [("ok.py", "x"), (name, "x")])
    (problem,) = refused(z)
    assert problem.startswith(repr(name))
    assert word in problem
    with pytest.raises(ArchiveError):
        archive.unpack(z, tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()


def test_symlink_entry_is_refused(tmp_path):
    z = make_zip(
        tmp_path / "m.zip", [("train.py", "x"), ("link", "/etc/passwd", stat.S_IFLNK | 0o777)]
    )
    (problem,) = refused(z)
    assert problem.startswith("'link'") and "symbolic link" in problem
    with pytest.raises(ArchiveError, match="symbolic link"):
        archive.unpack(z, tmp_path / "out")
    assert not (tmp_path / "out" / "link").exists()


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_device_and_fifo_entries_are_refused(tmp_path, kind):
    (problem,) = refused(make_zip(tmp_path / "m.zip", [("dev", "", kind | 0o666)]))
    assert problem.startswith("'dev'") and "not a regular file" in problem


def test_zip_bomb_is_refused_by_its_declared_size(tmp_path):
    z = make_zip(tmp_path / "m.zip", [("big.bin", b"\0" * 100_000)])
    assert z.stat().st_size < 2_000  # compresses well: a small bomb
    (problem,) = refused(z, max_bytes=10_000)
    assert problem == "unpacks to 97.7KiB; at most 9.8KiB"
    assert archive.check(z, max_bytes=100_000).bytes == 100_000


def test_unpack_stops_at_max_bytes(tmp_path):
    z = make_zip(tmp_path / "m.zip", [("big.bin", b"\0" * 100_000)])
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        archive.unpack(z, tmp_path / "out", max_bytes=10_000)


def test_too_many_files(tmp_path):
    z = make_zip(tmp_path / "m.zip", [(f"f{i}", "") for i in range(5)])
    assert refused(z, max_files=4) == ["5 entries; at most 4 are allowed"]


def test_problems_are_capped_at_twenty(tmp_path):
    z = make_zip(tmp_path / "m.zip", [(f"../e{i}", "") for i in range(30)])
    problems = refused(z)
    assert len(problems) == 21 and problems[-1] == "... and 10 more"


@pytest.mark.parametrize("content", [b"not a zip", b"", b"PK\x03\x04garbage"])
def test_corrupt_file_is_refused(tmp_path, content):
    bad = tmp_path / "m.zip"
    bad.write_bytes(content)
    (problem,) = refused(bad)
    assert "not a readable zip file" in problem


def test_missing_file_is_refused(tmp_path):
    (problem,) = refused(tmp_path / "nope.zip")
    assert "not a readable zip file" in problem


def test_unpack_of_a_corrupt_file_is_an_archive_error(tmp_path):
    bad = tmp_path / "m.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ArchiveError):
        archive.unpack(bad, tmp_path / "out")


def test_error_message_lists_every_problem(tmp_path):
    z = make_zip(tmp_path / "m.zip", [("../a", ""), ("/b", "")])
    with pytest.raises(ArchiveError) as info:
        archive.check(z)
    text = str(info.value)
    assert text.startswith("model archive has 2 problem(s):")
    assert "'../a'" in text and "'/b'" in text


def test_edit_manifest_rewrites_only_the_top_manifest(tmp_path):
    z = make_zip(
        tmp_path / "m.zip",
        [("m/manifest.yml", b"password: hunter2\n"), ("m/train.py", b"print(1)\n", FILE | 0o111)],
    )
    assert archive.edit_manifest(z, lambda b: b.replace(b"hunter2", b"<redacted>"))
    with zipfile.ZipFile(z) as zf:
        assert zf.read("m/manifest.yml") == b"password: <redacted>\n"
        assert zf.read("m/train.py") == b"print(1)\n"
        assert zf.getinfo("m/train.py").external_attr >> 16 == FILE | 0o111
    assert archive.check(z).manifest == b"password: <redacted>\n"


def test_edit_manifest_leaves_an_archive_it_does_not_change(tmp_path):
    z = make_zip(tmp_path / "m.zip", [("manifest.yml", b"name: x\n"), ("t.py", b"")])
    before = z.read_bytes()
    assert not archive.edit_manifest(z, lambda b: b)
    without = make_zip(tmp_path / "n.zip", [("t.py", b"")])
    assert not archive.edit_manifest(without, lambda b: b"changed")
    assert z.read_bytes() == before and not list(tmp_path.glob("*.editing"))
