"""A full disk: the state folder (or the store's) on a small tmpfs made here. Each case
ends with a code and a sentence (S304: the state folder's disk; S303: the store's, the
results kept locally), corrupts nothing, and the daemon serves on."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from dlaasctl.http import ApiError
from tests.harness import Minio, manifest, model, short_tmp
from tests.test_storage import READER, data_manifest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.needs_root,  # mounts a tmpfs
]


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(path)], check=True
    )


@pytest.fixture
def small_disk():
    """mount(path, size): a tmpfs of `size` at `path`, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        mount_tmpfs(path, size)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_state(make_daemon, small_disk):
    """A daemon whose state folder is a tmpfs of `size`."""
    daemons = []

    def make(size: str, **kw):
        d = make_daemon(start=False, **kw)
        small_disk(d.state, size)
        daemons.append(d)
        return d.start()

    yield make
    for d in daemons:  # before the tmpfs goes
        d.cleanup()


def fill(folder: Path) -> Path:
    """Fill the disk of `folder` to the last byte; the file that does it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def gone(path: Path, timeout: float = 30) -> None:
    """`path` removed (the tidy follows the final status)."""
    deadline = time.monotonic() + timeout
    while path.exists():
        assert time.monotonic() < deadline, f"{path} is still there"
        time.sleep(0.2)


def intact(d) -> None:
    """The queue database passes SQLite's own check."""
    db = sqlite3.connect(f"file:{d.state / 'dlaas.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def serves_on(d, tmp_path: Path) -> None:
    """Health answers, nothing is half-made, and a new run goes through."""
    assert d.api.json("GET", "/v1/health")["status"] == "ok"
    run = d.wait(d.submit(model(tmp_path / "after", manifest("echo fine"))), timeout=120)
    assert run["status"] == "COMPLETED", run
    assert "fine" in d.ctl("logs", run["id"]).stdout
    intact(d)


def test_disk_full_while_staging_in_is_s304(small_state, minio, tmp_path):
    d = small_state("48m")
    sdk = minio.client()
    if not sdk.bucket_exists("too-big-data"):
        sdk.make_bucket("too-big-data")
        big = 64 * 1024 * 1024
        sdk.put_object("too-big-data", "big.bin", io.BytesIO(bytes(big)), big)
        sdk.put_object("too-big-data", "small.txt", io.BytesIO(b"small"), 5)
    folder = model(tmp_path / "m", data_manifest("too-big-data"), {"read.py": READER})
    run = d.wait(d.submit(folder), timeout=120)
    assert run["status"] == "FAILED" and run["error_code"] == "S304", run
    message = run["status_message"]
    assert "no space left on the disk of" in message and str(d.state) in message, message
    assert "staging the run in" in message and "free space there" in message
    assert not list((d.state / "cache").rglob("*.part-*"))  # no half-written blob stays
    gone(d.state / "runs" / run["id"] / "job" / "data")  # its links go with the tidy
    serves_on(d, tmp_path)


FILL_RESULTS = """
import os
with open(os.path.join(os.environ["RESULT_DIR"], "big.bin"), "wb", buffering=0) as f:
    print("filling", flush=True)
    while True:
        f.write(b"x" * 65536)
"""


def test_training_that_fills_the_disk_is_s304_and_its_outputs_are_stored(
    small_state, minio, tmp_path
):
    d = small_state("48m")
    stores = [{"id": "s", "type": "s3_datastore", "training_results": {"container": "filled"}}]
    m = manifest("python3 fill.py", data_stores=stores)
    run = d.wait(d.submit(model(tmp_path / "m", m, {"fill.py": FILL_RESULTS})), timeout=120)
    assert run["status"] == "FAILED" and run["error_code"] == "S304", (
        run["status_message"],
        [ln for ln in d.log.read_text().splitlines() if "disk" in ln or "reserve" in ln],
    )
    message = run["status_message"]
    assert "No space left on device" in message  # the training's own last line
    assert "no space left on the disk of" in message and "the training wrote" in message
    # what it wrote went to the store (the disk was too full to record anything until the
    # daemon gave back its reserve)
    stored = {o.object_name: o.size for o in minio.client().list_objects("filled", recursive=True)}
    assert stored[f"{run['id']}/big.bin"] > 16 * 1024 * 1024, stored
    assert f"{run['id']}/training-log.txt" in stored
    assert "event=disk_full" in d.log.read_text()
    serves_on(d, tmp_path)


def test_disk_full_at_the_database_refuses_new_runs_and_ends_running_ones(small_state, tmp_path):
    d = small_state("32m")
    cmd = "echo done > $RESULT_DIR/r.txt; echo trained; sleep 5"  # writes nothing after
    run_id = d.submit(model(tmp_path / "m", manifest(cmd)))
    d.wait(run_id, "PROCESSING")
    deadline = time.monotonic() + 30
    while "trained" not in d.ctl("logs", run_id).stdout:
        assert time.monotonic() < deadline, d.log_tail()
        time.sleep(0.2)
    filler = fill(d.state)
    status = d.ctl_json("status")["disk"]
    assert status["ok"] is False and "no space left" in status["detail"], status

    # a new run is refused with a sentence; nothing of it is kept
    r = d.ctl("train", str(model(tmp_path / "new", manifest("true")) / "manifest.yml"))
    assert r.returncode == 1 and "no space left on the disk of" in r.stderr, r.stderr
    with pytest.raises(ApiError) as refused:
        d.api.multipart("/v1/runs", {"manifest": yaml.safe_dump(manifest("true")).encode()}, {})
    assert refused.value.status == 507 and refused.value.code == "S304"
    assert [p.name for p in (d.state / "runs").iterdir() if p.name.startswith("training-")] == [
        run_id
    ]
    assert [r["id"] for r in d.ctl_json("list")["runs"]] == [run_id]

    # the running run still ends, and says so: the reserve is given back for it
    run = d.wait(run_id, timeout=90)
    assert run["status"] == "COMPLETED", run
    assert "trained" in d.ctl("logs", run_id).stdout
    assert "event=disk_full" in d.log.read_text()

    filler.unlink()  # room again: the reserve is made again, new runs go through
    deadline = time.monotonic() + 30
    while not d.ctl_json("status")["disk"]["reserve_held"]:
        assert time.monotonic() < deadline, "the reserve was not made again"
        time.sleep(0.5)
    serves_on(d, tmp_path)


def test_store_disk_full_keeps_the_results_local_s303(make_daemon, small_disk, tmp_path):
    root = short_tmp("dlaas-full-")
    small_disk(root, "96m")
    own = Minio(root).start()
    try:
        d = make_daemon(server=own)
        code = (
            "import os\n"
            "data = os.urandom(1024 * 1024) * 128\n"
            "open(os.path.join(os.environ['RESULT_DIR'], 'big.bin'), 'wb').write(data)\n"
            "print('wrote', flush=True)\n"
        )
        stores = [{"id": "s", "type": "s3_datastore", "training_results": {"container": "full"}}]
        m = manifest("python3 w.py", data_stores=stores, memory="512MiB")
        run = d.wait(d.submit(model(tmp_path / "m", m, {"w.py": code})), timeout=180)
        assert run["status"] == "FAILED" and run["error_code"] == "S303", run
        message = run["status_message"]
        assert "object store is full" in message and "the results stay in" in message, message
        local = d.state / "runs" / run["id"] / "job" / "results" / "big.bin"
        assert local.stat().st_size == 128 * 1024 * 1024
        out = tmp_path / "out"
        r = d.ctl("download", run["id"], "--dest", str(out))
        assert r.returncode == 0, r.stderr
        digest = hashlib.sha256((out / "big.bin").read_bytes()).hexdigest()
        assert digest == hashlib.sha256(local.read_bytes()).hexdigest()
        assert d.api.json("GET", "/v1/health")["status"] == "ok"
        intact(d)
    finally:
        own.stop()
