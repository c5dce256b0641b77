"""The drop folder: drops taken once complete and exactly once; data and results mirrored."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.harness import Minio, manifest, short_tmp

pytestmark = pytest.mark.integration

SETTLE = 1.0
GRACE = 8.0  # an unreadable zip is waited for this long


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def accepted(inbox: Path) -> dict[str, list[str]]:
    """run id -> names of the drops accepted for it."""
    root = inbox / ".accepted"
    return {run: os.listdir(root / run) for run in os.listdir(root)} if root.exists() else {}


def write_drop(folder: Path, command: str = "echo dropped", name: str = "drop") -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.yml").write_text(yaml.safe_dump(manifest(command, name=name)))
    (folder / "train.py").write_text("print('training from a drop')\n")
    return folder


@pytest.fixture
def dropd(make_daemon):
    d = make_daemon(drop_settle=f"{SETTLE}s", drop_grace=f"{GRACE}s")
    d.inbox = d.state / "inbox"
    wait_for(lambda: (d.inbox / ".accepted").exists(), what="inbox ready")
    return d


def test_copied_drop_runs_once_and_results_appear_beside_it(dropd, tmp_path):
    src = write_drop(tmp_path / "src", "python3 train.py && echo out > $RESULT_DIR/out.txt")
    shutil.copytree(src, dropd.inbox / "exp1")
    runs = wait_for(lambda: accepted(dropd.inbox), what="acceptance")
    ((run_id, names),) = runs.items()
    assert names == ["exp1"]
    run = dropd.wait(run_id)
    assert run["status"] == "COMPLETED"
    assert run["owner_uid"] == os.getuid()
    results = dropd.inbox / "results" / run_id
    wait_for(lambda: (results / "out.txt").exists(), what="results mirrored")
    assert (results / "out.txt").read_text() == "out\n"
    assert "training from a drop" in (results / "training-log.txt").read_text()
    time.sleep(SETTLE * 2)
    assert len(accepted(dropd.inbox)) == 1  # exactly once
    assert dropd.ctl_json("list")["total"] == 1


def test_slow_writer_is_waited_for(dropd, tmp_path):
    drop = dropd.inbox / "slow"
    drop.mkdir()
    (drop / "manifest.yml").write_text(yaml.safe_dump(manifest("python3 big.py")))
    with open(drop / "big.py", "w") as f:  # written in pieces, each sooner than the settle time
        for i in range(6):
            f.write(f"x{i} = {i}\n")
            f.flush()
            time.sleep(SETTLE * 0.6)
            assert not accepted(dropd.inbox), "taken while still being written"
        f.write("print('complete', x5)\n")
    runs = wait_for(lambda: accepted(dropd.inbox), what="acceptance")
    (run_id,) = runs
    assert dropd.wait(run_id)["status"] == "COMPLETED"
    assert "complete 5" in dropd.ctl("logs", run_id).stdout


def test_a_zip_whose_writer_pauses_longer_than_the_settle_time_is_not_lost(dropd, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.yml", yaml.safe_dump(manifest("python3 z.py", name="paused")))
        zf.writestr("z.py", "print('the whole zip arrived')\n")
        zf.writestr("weights.bin", os.urandom(256 * 1024))
    data = buf.getvalue()
    with open(dropd.inbox / "paused.zip", "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(SETTLE * 3)  # settled, but not a readable zip yet: left where it is
        assert not accepted(dropd.inbox) and not os.listdir(dropd.inbox / ".rejected")
        assert (dropd.inbox / "paused.zip").exists()
        f.write(data[len(data) // 2 :])
    runs = wait_for(lambda: accepted(dropd.inbox), what="acceptance")
    (run_id,) = runs
    assert dropd.wait(run_id)["status"] == "COMPLETED"
    assert "the whole zip arrived" in dropd.ctl("logs", run_id).stdout
    assert not os.listdir(dropd.inbox / ".rejected")
    assert "event=drop_incomplete name='paused.zip'" in dropd.log.read_text()


def test_write_then_rename_zip_and_bare_manifest(dropd, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/manifest.yml", yaml.safe_dump(manifest("python3 z.py", name="zipped")))
        zf.writestr("model/z.py", "print('from the zip')\n")
    hidden = dropd.inbox / ".upload.zip.part"
    hidden.write_bytes(buf.getvalue())
    time.sleep(SETTLE * 2)
    assert not accepted(dropd.inbox)  # hidden and partial names are never taken
    os.rename(hidden, dropd.inbox / "zipped.zip")
    (tmp_path / "m.yml").write_text(yaml.safe_dump(manifest("echo bare manifest", name="bare")))
    os.rename(tmp_path / "m.yml", dropd.inbox / "bare.yml")
    runs = wait_for(lambda: len(accepted(dropd.inbox)) == 2 and accepted(dropd.inbox))
    by_name = {names[0]: run for run, names in runs.items()}
    assert set(by_name) == {"zipped.zip", "bare.yml"}
    assert "from the zip" in dropd.ctl("logs", "--follow", by_name["zipped.zip"]).stdout
    assert "bare manifest" in dropd.ctl("logs", "--follow", by_name["bare.yml"]).stdout


def test_broken_drops_are_rejected_with_reasons(dropd, tmp_path):
    (dropd.inbox / "notes.txt").write_text("not a drop")
    bad = dropd.inbox / "bad"
    bad.mkdir()
    (bad / "manifest.yml").write_text("name: x\nframwork: {name: python}\ngpus: two\n")
    nomanifest = dropd.inbox / "nomanifest"
    nomanifest.mkdir()
    (nomanifest / "train.py").write_text("print(1)\n")
    (dropd.inbox / "broken.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    rejected = dropd.inbox / ".rejected"
    wait_for(lambda: len(list(rejected.glob("*.error.txt"))) == 4, what="four rejections")
    reasons = {p.name: p.read_text() for p in rejected.glob("*.error.txt")}
    assert "not a drop" in reasons["notes.txt.error.txt"]
    bad_reason = reasons["bad.error.txt"]
    assert "framwork" in bad_reason and "did you mean 'framework'" in bad_reason
    assert "gpus" in bad_reason and "line 3" in bad_reason and "C101" in bad_reason
    assert "no manifest.yml" in reasons["nomanifest.error.txt"]
    assert "zip" in reasons["broken.zip.error.txt"]
    assert (rejected / "bad" / "manifest.yml").exists()  # the drop is kept, not lost
    assert not accepted(dropd.inbox)
    assert dropd.ctl_json("list")["total"] == 0
    assert dropd.api.json("GET", "/v1/health")["status"] == "ok"


def test_duplicate_drops_and_a_drop_removed_before_it_is_taken(dropd, tmp_path):
    src = write_drop(tmp_path / "src")
    for name in ("copy-a", "copy-b"):  # the same content twice: two drops, two runs
        shutil.copytree(src, dropd.inbox / name)
    gone = dropd.inbox / "gone"
    shutil.copytree(src, gone)
    shutil.rmtree(gone)  # removed before it settled
    runs = wait_for(lambda: len(accepted(dropd.inbox)) == 2 and accepted(dropd.inbox))
    assert sorted(n for names in runs.values() for n in names) == ["copy-a", "copy-b"]
    shutil.copytree(src, dropd.inbox / "copy-a")  # the same name again, later: a new drop
    wait_for(lambda: len(accepted(dropd.inbox)) == 3, what="third acceptance")
    time.sleep(SETTLE * 2)
    assert dropd.ctl_json("list")["total"] == 3
    assert not list((dropd.inbox / ".rejected").iterdir())


def test_drops_made_while_down_are_taken_at_start(dropd, tmp_path):
    dropd.stop()
    for name in ("while-down-1", "while-down-2"):
        write_drop(dropd.inbox / name)
    # a drop taken just before a crash: it sits in .processing/ and must finish once
    interrupted = dropd.inbox / ".processing" / "20260101T000000-abcdef"
    interrupted.mkdir(parents=True)
    write_drop(interrupted / "interrupted")
    dropd.start()
    runs = wait_for(lambda: len(accepted(dropd.inbox)) == 3 and accepted(dropd.inbox))
    names = sorted(n for ns in runs.values() for n in ns)
    assert names == ["interrupted", "while-down-1", "while-down-2"]
    assert not os.listdir(dropd.inbox / ".processing")
    for run_id in runs:
        assert dropd.wait(run_id)["status"] == "COMPLETED"
    assert dropd.ctl_json("list")["total"] == 3


def test_data_folder_is_mirrored_to_its_bucket(dropd, minio):
    bucket_dir = dropd.inbox / "data" / "dropped-data"
    (bucket_dir / "sub").mkdir(parents=True)
    (bucket_dir / "sub" / "a.csv").write_text("1,2,3\n")
    sdk = minio.client()

    def content(key: str) -> bytes | None:
        try:
            return sdk.get_object("dropped-data", key).read()
        except Exception:
            return None

    wait_for(lambda: content("sub/a.csv") == b"1,2,3\n", what="upload")
    # a file written slowly is only uploaded once complete
    stop = threading.Event()
    half_seen = []

    def watch():
        while not stop.is_set():
            data = content("big.csv")
            if data is not None and not data.endswith(b"END\n"):
                half_seen.append(len(data))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with open(bucket_dir / "big.csv", "w") as f:
        for i in range(5):
            f.write(f"{i}\n" * 1000)
            f.flush()
            time.sleep(SETTLE * 0.6)
        f.write("END\n")
    wait_for(lambda: (content("big.csv") or b"").endswith(b"END\n"), what="complete upload")
    stop.set()
    watcher.join()
    assert half_seen == []
    (bucket_dir / "sub" / "a.csv").write_text("4,5,6\n")  # a changed file goes up again
    wait_for(lambda: content("sub/a.csv") == b"4,5,6\n", what="changed upload")


def test_data_folder_with_an_ffdl_bucket_name_fills_the_mapped_bucket(dropd, minio):
    folder = dropd.inbox / "data" / "tf_training_data"  # FfDL's name, which S3 refuses
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text("1,2\n")

    def content() -> bytes | None:
        try:
            return minio.client().get_object("tf-training-data", "train.csv").read()
        except Exception:
            return None

    assert wait_for(content, what="upload to tf-training-data") == b"1,2\n"
    listing = dropd.ctl_json("data", "ls", "tf_training_data")  # the same bucket by both names
    assert listing["bucket"] == "tf-training-data"
    assert [o["key"] for o in listing["objects"]] == ["train.csv"]


def test_an_ffdl_manifest_dropped_as_it_is(make_daemon, tmp_path):
    """FfDL's pytorch example's shape, its bucket names and cluster store kept: refused
    while its data is missing (saying all), run once the data is dropped under FfDL's name."""
    minio = Minio(short_tmp("dlaas-own-")).start()  # its own: no tf-training-data yet
    try:
        dropd = make_daemon(server=minio, drop_settle=f"{SETTLE}s")
        dropd.inbox = dropd.state / "inbox"
        wait_for(lambda: (dropd.inbox / ".accepted").exists(), what="inbox ready")
        _ffdl_drop(dropd, minio, tmp_path)
    finally:
        minio.stop()
        shutil.rmtree(minio.root, ignore_errors=True)


def _ffdl_drop(dropd, minio, tmp_path):
    corpus = Path(__file__).parent / "corpus" / "ffdl" / "pytorch-model.yml"
    code = "import os\nprint(sorted(os.listdir(os.environ['DATA_DIR'])))\n"
    src = tmp_path / "ffdl"
    src.mkdir()
    shutil.copy(corpus, src / "manifest.yml")
    (src / "mnist.py").write_text(code)
    shutil.copytree(src, dropd.inbox / "first")
    report = dropd.inbox / ".rejected" / "first.error.txt"
    text = wait_for(lambda: report.exists() and report.read_text(), what="rejection")
    assert "'tf-training-data' ('tf_training_data' in the manifest) does not exist" in text
    assert "warning: bucket 'tf_trained_model' is stored as 'tf-trained-model'" in text
    assert "warning: data_stores[0].connection auth_url" in text

    (dropd.inbox / "data" / "tf_training_data").mkdir(parents=True)
    (dropd.inbox / "data" / "tf_training_data" / "train.csv").write_text("1\n")
    wait_for(lambda: "tf-training-data" in dropd.ctl("data", "ls").stdout, what="data upload")
    shutil.copytree(src, dropd.inbox / "second")
    ((run_id, _),) = wait_for(lambda: accepted(dropd.inbox), what="acceptance").items()
    run = dropd.wait(run_id)
    assert run["status"] == "COMPLETED", run
    assert "['train.csv']" in dropd.ctl("logs", run_id).stdout
    keys = [o.object_name for o in minio.client().list_objects("tf-trained-model", run_id)]
    assert keys == [f"{run_id}/"]


def inotify_watches(pid: int) -> int:
    """How many inotify watches a process holds (each is an `inotify wd:` line)."""
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    count = 0
    for fd in os.listdir(fdinfo):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += (fdinfo / fd).read_text().count("inotify wd:")
    return count


def test_finished_runs_hold_no_watches(dropd, tmp_path):
    """Each run's results mirrored into results/ must not cost the daemon a watch."""
    before = inotify_watches(dropd.proc.pid)
    for i in range(3):
        src = write_drop(tmp_path / f"src{i}", "echo out > $RESULT_DIR/out.txt", name=f"w{i}")
        shutil.copytree(src, dropd.inbox / f"w{i}")
    runs = wait_for(lambda: len(accepted(dropd.inbox)) == 3 and accepted(dropd.inbox))
    for run_id in runs:
        dropd.wait(run_id)
        out = dropd.inbox / "results" / run_id / "out.txt"
        wait_for(lambda out=out: out.exists(), what="results mirrored")
    time.sleep(SETTLE)  # the watcher has seen the new folders
    assert before > 0 and inotify_watches(dropd.proc.pid) == before
