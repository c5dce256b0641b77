"""Links planted by a training or a drop must not make dlaasd (maybe root) read or write
anything outside the run's own folder."""

from __future__ import annotations

import ctypes
import json
import os
import struct
import threading
import time
from pathlib import Path

import pytest
import yaml
from minio.error import S3Error

from tests.harness import manifest, model
from tests.test_inbox import SETTLE, accepted, wait_for

pytestmark = pytest.mark.integration

SECRET = "/etc/hostname"  # readable here, stands for any file a user may not read


def test_links_a_training_plants_are_not_followed(daemon, tmp_path):
    cmd = (
        f"ln -s {SECRET} $RESULT_DIR/stolen; ln -s / $RESULT_DIR/root; "
        "echo kept > $RESULT_DIR/real.txt; "
        "rm -f $LOG_DIR/evaluation-metrics.txt; ln -s /etc/passwd $LOG_DIR/metrics.jsonl; "
        'echo \'{"values": {"x": {"value": 1}}}\' > $LOG_DIR/evaluation-metrics.txt; '
        f"rm $LOG_DIR/training-log.txt; ln -s {SECRET} $LOG_DIR/training-log.txt"
    )
    run_id = daemon.submit(model(tmp_path / "m", manifest(cmd)))
    run = daemon.wait(run_id)
    assert run["status"] == "COMPLETED", run
    out = tmp_path / "out"
    assert daemon.ctl("download", run_id, "--dest", str(out)).returncode == 0
    names = sorted(os.listdir(out))
    assert "real.txt" in names and "stolen" not in names and "root" not in names
    assert "training-log.txt" not in names  # a link now, left alone
    secret = Path(SECRET).read_text()
    assert secret not in daemon.ctl("logs", run_id).stdout
    # metrics.jsonl was a link to /etc/passwd: not written through, not uploaded
    assert "metrics.jsonl" not in names
    assert Path("/etc/passwd").read_text().startswith("root:")


def test_links_in_the_drop_folder_are_not_followed(make_daemon, minio, tmp_path):
    d = make_daemon(drop_settle=f"{SETTLE}s")
    inbox = d.state / "inbox"
    wait_for(lambda: (inbox / ".accepted").exists(), what="inbox ready")
    code = tmp_path / "code"
    code.mkdir()
    (code / "manifest.yml").write_text(
        "name: x\nframework: {name: python, version: '3', command: 'true'}\n"
        "cpus: 0.5\nmemory: 256MiB\n"
    )
    os.symlink(code, inbox / "linked-folder")  # a drop that is a link
    folder = inbox / "with-link"
    folder.mkdir()
    (folder / "manifest.yml").write_text((code / "manifest.yml").read_text())
    os.symlink(SECRET, folder / "stolen.txt")  # a link inside a drop
    bucket = inbox / "data" / "linked-data"
    bucket.mkdir(parents=True)
    os.symlink(SECRET, bucket / "stolen.txt")
    (bucket / "real.txt").write_text("real")
    rejected = inbox / ".rejected"
    wait_for(lambda: len(list(rejected.glob("*.error.txt"))) == 2, what="two rejections")
    reasons = " ".join(p.read_text() for p in rejected.glob("*.error.txt"))
    assert "symbolic link" in reasons
    assert not accepted(inbox)
    sdk = minio.client()

    def uploaded() -> bool:
        try:  # the bucket is made before its files are uploaded
            return sdk.get_object("linked-data", "real.txt").read() == b"real"
        except S3Error:
            return False

    wait_for(uploaded, what="upload")
    time.sleep(SETTLE * 2)
    keys = [o.object_name for o in sdk.list_objects("linked-data", recursive=True)]
    assert keys == ["real.txt"]


def on_open(folder: Path, name: str, action) -> threading.Thread:
    """Call `action()` as soon as anyone opens `folder`/`name` (inotify IN_OPEN, on the
    folder's inode: it follows the folder when it is renamed)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, str(folder).encode(), 0x20) >= 0

    def watch() -> None:
        try:
            while True:
                data, pos = os.read(fd, 65536), 0
                while pos < len(data):
                    _, _, _, size = struct.unpack_from("iIII", data, pos)
                    opened = data[pos + 16 : pos + 16 + size].rstrip(b"\0").decode()
                    pos += 16 + size
                    if opened == name:
                        action()
                        return
        finally:
            os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_manifest_swapped_for_a_link_while_taken_is_not_read(make_daemon, tmp_path):
    """The dropper swaps manifest.yml for a link to a root-only file the moment dlaasd
    opens it: what dlaasd submits is what it read then, never the link's target."""
    d = make_daemon(drop_settle=f"{SETTLE}s")
    inbox = d.state / "inbox"
    wait_for(lambda: (inbox / ".accepted").exists(), what="inbox ready")
    secret = tmp_path / "root-only.yml"
    secret.write_text(yaml.safe_dump(manifest("echo stolen", name="LEAKED-SECRET-c0ffee")))
    secret.chmod(0o600)
    drop = tmp_path / "swapper"
    drop.mkdir()
    (drop / "manifest.yml").write_text(yaml.safe_dump(manifest("echo honest", name="honest")))
    # packed after manifest.yml: time for the swap before anything reads the manifest again
    (drop / "model.bin").write_bytes(os.urandom(24 * 1024**2))
    folder_fd = os.open(drop, os.O_RDONLY | os.O_DIRECTORY)

    def swap() -> None:
        os.symlink(secret, "link", dir_fd=folder_fd)
        os.rename("link", "manifest.yml", src_dir_fd=folder_fd, dst_dir_fd=folder_fd)

    swapper = on_open(drop, "manifest.yml", swap)
    os.rename(drop, inbox / "swapper")
    rejected = inbox / ".rejected"
    wait_for(
        lambda: accepted(inbox) or list(rejected.glob("*.error.txt")), what="taken", timeout=90
    )
    swapper.join(30)
    assert not swapper.is_alive(), "dlaasd never opened the manifest"
    os.close(folder_fd)
    (run_id,) = accepted(inbox)
    taken = inbox / ".accepted" / run_id / "swapper" / "manifest.yml"
    assert taken.is_symlink()  # the swap happened, after dlaasd opened the manifest
    shown = d.ctl_json("show", run_id)
    assert shown["name"] == "honest", shown  # the manifest as read, not the link's target
    assert "LEAKED-SECRET" not in json.dumps(shown)
    definition = tmp_path / "definition"
    assert d.ctl("download", run_id, "--definition", "--dest", str(definition)).returncode == 0
    assert "name: honest" in (definition / "manifest.yml").read_text()
    assert d.wait(run_id)["status"] == "COMPLETED"
    assert "honest" in d.ctl("logs", run_id).stdout
