"""Links planted by a training or a drop must not make dlaasd (maybe root) read or write
anything outside the run's own folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

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
    wait_for(
        lambda: (
            sdk.bucket_exists("linked-data")
            and sdk.get_object("linked-data", "real.txt").read() == b"real"
        ),
        what="upload",
    )
    time.sleep(SETTLE * 2)
    keys = [o.object_name for o in sdk.list_objects("linked-data", recursive=True)]
    assert keys == ["real.txt"]
