"""Reading a drop while its owner swaps a file for a link: on a real file system, with a
process flipping the file between a regular file and a link to a secret as fast as it
can. Whatever the interleaving, the secret is never read (dlaasd may run as root)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dlaasd.errors import Invalid
from dlaasd.inbox import _link_or_copy, _open_regular, read_drop

ROUNDS = 5000  # reads at least, and until the reader met the link MET times
MET = 100
MANIFEST = b"name: honest\nframework: {name: python, version: '3', command: 'true'}\n"

FLIPPER = """
import os, sys
target, secret, real = sys.argv[1:4]
link, regular = target + ".l", target + ".r"
while True:
    os.symlink(secret, link)
    os.rename(link, target)         # now a link to the secret...
    with open(regular, "wb") as f:
        f.write(open(real, "rb").read())
    os.rename(regular, target)      # ...now the honest file again
"""


@pytest.fixture
def secret(tmp_path) -> bytes:
    path = tmp_path / "secret.txt"
    text = b"name: LEAKED-SECRET-c0ffee\n"  # a valid manifest too: it would be submitted
    path.write_bytes(text)
    path.chmod(0o600)
    return text


def flipping(target: Path, secret_path: Path, real: Path) -> subprocess.Popen:
    """The flipper, once it has started flipping."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FLIPPER, str(target), str(secret_path), str(real)],
        stderr=subprocess.DEVNULL,
    )
    while not target.is_symlink():
        assert proc.poll() is None, "the flipper died"
    return proc


def read_all(drop: Path, tmp_path: Path, secret: bytes, rounds: int = ROUNDS) -> None:
    """Read the drop `rounds` times, and until the reader met the swapped state MET times:
    the secret must appear in no manifest, no packed code and no refusal."""
    seen = {"read": 0, "refused": 0}
    i = 0
    while i < rounds or seen["refused"] < MET:
        i += 1
        out = tmp_path / f"packed-{i}.zip"
        try:
            text, packed = read_drop(drop, out)
        except Invalid as exc:
            assert secret.decode().strip() not in str(exc.message)
            seen["refused"] += 1
            continue
        except FileNotFoundError:  # the flipper's rename landed between listing and open
            seen["refused"] += 1
            continue
        assert text == MANIFEST, text
        if packed:
            with zipfile.ZipFile(out) as zf:
                assert all(zf.read(n) != secret for n in zf.namelist())
        seen["read"] += 1
        out.unlink(missing_ok=True)


def test_a_folder_drops_manifest_swapped_for_a_link_is_never_followed(tmp_path, secret):
    drop = tmp_path / "holder" / "drop"
    drop.mkdir(parents=True)
    (drop / "train.py").write_text("print('hi')\n")
    real = tmp_path / "real.yml"
    real.write_bytes(MANIFEST)
    (drop / "manifest.yml").write_bytes(MANIFEST)
    proc = flipping(drop / "manifest.yml", tmp_path / "secret.txt", real)
    try:
        read_all(drop, tmp_path, secret, rounds=1000)  # each packs a zip: fewer
    finally:
        proc.kill()
        proc.wait()


def test_a_dropped_manifest_swapped_for_a_link_is_never_followed(tmp_path, secret):
    holder = tmp_path / "holder"
    holder.mkdir()
    real = tmp_path / "real.yml"
    real.write_bytes(MANIFEST)
    drop = holder / "bare.yml"
    drop.write_bytes(MANIFEST)
    proc = flipping(drop, tmp_path / "secret.txt", real)
    try:
        read_all(drop, tmp_path, secret)
    finally:
        proc.kill()
        proc.wait()


def test_links_and_fifos_in_a_folder_drop_are_refused_or_left_out(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "manifest.yml").write_bytes(MANIFEST)

    os.mkfifo(drop / "pipe")  # would block a reader that opened it without O_NONBLOCK
    text, packed = read_drop(drop, tmp_path / "out.zip")
    assert text == MANIFEST and packed
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert zf.namelist() == ["manifest.yml"]
    (drop / "stolen").symlink_to(tmp_path / "out.zip")
    with pytest.raises(Invalid, match="'stolen' is a symbolic link"):
        read_drop(drop, tmp_path / "again.zip")


FOLDER_FLIPPER = """
import os, sys
target, secret_dir = sys.argv[1:3]
away, link = target + ".away", target + ".l"
while True:
    os.rename(target, away)
    os.symlink(secret_dir, link)
    os.rename(link, target)         # now a link to a folder holding a secret...
    os.unlink(target)
    os.rename(away, target)         # ...now the real folder again
"""


def test_a_data_file_reached_through_a_folder_swapped_for_a_link_is_never_read(tmp_path, secret):
    """The data folder's files are uploaded after the scan that found them: a folder on
    the way swapped for a link by then must not lead the upload elsewhere."""
    secret_dir = tmp_path / "elsewhere"
    secret_dir.mkdir()
    (secret_dir / "w.bin").write_bytes(secret)
    data = tmp_path / "inbox" / "data"
    (data / "bucket" / "sub").mkdir(parents=True)
    (data / "bucket" / "sub" / "w.bin").write_bytes(b"weights")
    target = data / "bucket" / "sub"
    proc = subprocess.Popen(
        [sys.executable, "-c", FOLDER_FLIPPER, str(target), str(secret_dir)],
        stderr=subprocess.DEVNULL,
    )
    while not target.is_symlink():
        assert proc.poll() is None, "the flipper died"
    seen = {"read": 0, "refused": 0}
    try:
        while sum(seen.values()) < ROUNDS or seen["refused"] < MET:
            try:
                with _open_regular(target / "w.bin", data) as f:
                    assert f.read() == b"weights"
                seen["read"] += 1
            except (Invalid, FileNotFoundError):
                seen["refused"] += 1
    finally:
        proc.kill()
        proc.wait()


def test_a_checked_result_is_mirrored_as_a_hard_link_not_a_copy(tmp_path):
    """A copy would double a large result on the same disk (and can fill it)."""
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 4096)
    with open(src, "rb") as f:
        _link_or_copy(f, tmp_path / "mirrored.bin")
    assert (tmp_path / "mirrored.bin").samefile(src)
