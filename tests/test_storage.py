"""The object store: data in, results out, the cache, retries, and the bundled MinIO."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest

from tests.harness import Minio, manifest, model, short_tmp

pytestmark = pytest.mark.integration

READER = """
import os, pathlib
data = pathlib.Path(os.environ["DATA_DIR"])
for p in sorted(data.rglob("*")):
    if p.is_file():
        print(p.relative_to(data), p.read_text().strip())
try:
    (data / "x").write_text("no")
    print("DATA_DIR writable")
except OSError:
    print("DATA_DIR read-only")
pathlib.Path(os.environ["RESULT_DIR"], "seen.txt").write_text(str(len(list(data.rglob("*")))))
"""


def data_manifest(bucket: str, results: str = "test-results", **kw) -> dict:
    return manifest(
        "python3 read.py",
        data_stores=[
            {
                "id": "store",
                "type": "s3_datastore",
                "training_data": {"container": bucket},
                "training_results": {"container": results},
            }
        ],
        **kw,
    )


def test_stage_in_cache_and_changed_objects(make_daemon, tmp_path):
    d = make_daemon()
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha")
    (data / "b.txt").write_text("beta")
    (data / "sub" / "c.txt").write_text("gamma")
    up = d.ctl_json("data", "upload", "stage-in-test", str(data))
    assert sorted(up["uploaded"]) == ["a.txt", "b.txt", "sub/c.txt"]
    again = d.ctl_json("data", "upload", "stage-in-test", str(data))
    assert again["uploaded"] == [] and len(again["skipped"]) == 3  # unchanged: skipped
    listing = d.ctl("data", "ls", "stage-in-test")
    assert "sub/c.txt" in listing.stdout

    folder = model(tmp_path / "m", data_manifest("stage-in-test"), {"read.py": READER})
    first = d.wait(d.submit(folder))
    assert first["status"] == "COMPLETED", first
    log = d.ctl("logs", first["id"]).stdout
    assert "a.txt alpha" in log and "sub/c.txt gamma" in log and "DATA_DIR read-only" in log
    s1 = d.ctl_json("show", first["id"])["staging"]
    assert s1["files_downloaded"] == 3 and s1["bytes_downloaded"] == 14 and s1["cache_hits"] == 0
    assert s1["bytes_uploaded"] > 0 and s1["files_uploaded"] == 2  # seen.txt + training log

    second = d.wait(d.submit(folder))
    s2 = d.ctl_json("show", second["id"])["staging"]
    assert s2["files_downloaded"] == 0 and s2["bytes_downloaded"] == 0 and s2["cache_hits"] == 3
    assert "a.txt alpha" in d.ctl("logs", second["id"]).stdout
    # the same objects: the same tree of the cache, mounted as it was (nothing linked)
    assert data_tree(d, second) == data_tree(d, first)

    (data / "a.txt").write_text("ALPHA, changed")
    changed = d.ctl_json("data", "upload", "stage-in-test", str(data / "a.txt"))
    assert changed["uploaded"] == ["a.txt"]
    third = d.wait(d.submit(folder))
    s3 = d.ctl_json("show", third["id"])["staging"]
    assert s3["files_downloaded"] == 1 and s3["cache_hits"] == 2
    assert "a.txt ALPHA, changed" in d.ctl("logs", third["id"]).stdout
    assert data_tree(d, third) != data_tree(d, first)

    run = d.ctl_json("show", third["id"])
    assert run["results"] == f"s3://test-results/{third['id']}/"
    # the run's data links are gone once it ended; the cache keeps the blobs
    assert not (d.state / "runs" / third["id"] / "job" / "data").exists()


def data_tree(d, run: dict) -> str:
    """The name of the data cache's tree the run mounted; the tree is there."""
    name = (d.state / "runs" / run["id"] / "data-tree").read_text()
    assert (d.state / "cache" / "trees" / name).is_dir()
    return name


def test_a_runs_data_stays_while_another_runs_download_goes_over_the_cache_limit(
    make_daemon, tmp_path
):
    d = make_daemon(cache={"max_size": "1KiB"})  # every download is over it
    for bucket, text in (("evict-a", "alpha"), ("evict-b", "beta"), ("evict-c", "gamma")):
        (tmp_path / bucket).mkdir()
        (tmp_path / bucket / f"{bucket}.txt").write_text(text * 500)
        d.ctl_json("data", "upload", bucket, str(tmp_path / bucket))

    def submit(bucket: str, first: str = "") -> str:
        m = data_manifest(bucket)
        m["framework"]["command"] = f"{first}python3 read.py | cut -c1-40"
        return d.submit(model(tmp_path / f"m-{bucket}-{first[:5]}", m, {"read.py": READER}))

    # reads its data once told to: after the other run's download and eviction
    slow = submit("evict-a", 'while [ ! -e "$RESULT_DIR/go" ]; do sleep 0.1; done; ')
    d.wait(slow, "PROCESSING")
    other = d.wait(submit("evict-b"))
    assert other["status"] == "COMPLETED"
    assert d.ctl_json("show", other["id"])["staging"]["files_downloaded"] == 1
    (d.state / "runs" / slow / "job" / "results" / "go").touch()
    done = d.wait(slow)
    assert done["status"] == "COMPLETED"
    assert "evict-a.txt alphaalpha" in d.ctl("logs", slow).stdout  # its data was kept
    # both ended: the next download drops their trees, then what only they linked
    third = d.wait(submit("evict-c"))
    assert third["status"] == "COMPLETED"
    assert [t.name for t in (d.state / "cache" / "trees").iterdir()] == [data_tree(d, third)]
    again = d.wait(submit("evict-a"))
    assert d.ctl_json("show", again["id"])["staging"]["files_downloaded"] == 1


def test_results_and_logs_uploaded_after_success_failure_and_halt(make_daemon, minio, tmp_path):
    d = make_daemon()
    script = "import os; open(os.path.join(os.environ['RESULT_DIR'], 'r.txt'), 'w').write('r')\n"
    cases = {
        "COMPLETED": "python3 w.py && echo ok",
        "FAILED": "python3 w.py && echo bad && exit 3",
        "HALTED": "python3 w.py && echo halting && sleep 60",
    }
    ids = {}
    for status, cmd in cases.items():
        m = manifest(
            cmd,
            data_stores=[
                {"id": "s", "type": "s3_datastore", "training_results": {"container": "outcomes"}}
            ],
        )
        ids[status] = d.submit(model(tmp_path / status, m, {"w.py": script}))
    d.wait(ids["HALTED"], "PROCESSING")
    deadline = time.monotonic() + 30
    while "halting" not in d.ctl("logs", ids["HALTED"]).stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert d.ctl("halt", ids["HALTED"]).returncode == 0
    sdk = minio.client()
    for status, run_id in ids.items():
        run = d.wait(run_id, timeout=60)
        assert run["status"] == status, run
        keys = {
            o.object_name for o in sdk.list_objects("outcomes", prefix=f"{run_id}/", recursive=True)
        }
        assert keys == {f"{run_id}/r.txt", f"{run_id}/training-log.txt"}, keys
        # the local copy of the results goes once the upload is verified (the tidy follows
        # the final status)
        local = d.state / "runs" / run_id / "job" / "results"
        deadline = time.monotonic() + 30
        while local.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not local.exists()
    log = sdk.get_object("outcomes", f"{ids['FAILED']}/training-log.txt").read().decode()
    assert "bad" in log


def test_definition_is_kept_exactly(daemon, tmp_path):
    folder = model(
        tmp_path / "m", manifest("cat notes.txt"), {"notes.txt": "v1", "pkg/x.py": "y=1"}
    )
    run = daemon.wait(daemon.submit(folder))
    dest = tmp_path / "def"
    r = daemon.ctl("download", run["id"], "--definition", "--dest", str(dest))
    assert r.returncode == 0, r.stderr
    assert (dest / "manifest.yml").read_bytes() == (folder / "manifest.yml").read_bytes()
    import zipfile

    with zipfile.ZipFile(dest / "model.zip") as zf:
        assert zf.read("notes.txt") == b"v1" and zf.read("pkg/x.py") == b"y=1"


def test_data_upload_large_file_multipart_and_download(daemon, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 * 1024 * 1024))  # three 16 MiB parts
    up = daemon.ctl_json("data", "upload", "big-data", str(big), "--prefix", "raw")
    assert up["uploaded"] == ["raw/big.bin"]
    again = daemon.ctl_json("data", "upload", "big-data", str(big), "--prefix", "raw")
    assert again["skipped"] == ["raw/big.bin"]  # the multipart ETag matched
    listing = daemon.ctl_json("data", "ls", "big-data/raw/")
    assert listing["objects"][0]["etag"].endswith("-3")
    out = tmp_path / "out"
    r = daemon.ctl("data", "download", "big-data/raw/", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "big.bin").read_bytes() == big.read_bytes()


def test_bucket_names_s3_refuses_are_mapped_by_upload_ls_and_download(daemon, minio, tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("mapped")
    up = daemon.ctl("data", "upload", "Bad_Bucket", str(f), "--prefix", "in")
    assert up.returncode == 0, up.stderr
    assert "'Bad_Bucket' is stored as 'bad-bucket'" in up.stderr  # said, every time
    assert "-> s3://bad-bucket/in/" in up.stdout
    assert minio.client().get_object("bad-bucket", "in/f.txt").read() == b"mapped"
    assert daemon.ctl_json("data", "upload", "Bad_Bucket", str(f), "--prefix", "in")["skipped"] == [
        "in/f.txt"
    ]  # the same bucket, found again
    for name in ("Bad_Bucket", "bad-bucket"):  # both names list the same objects
        listing = daemon.ctl_json("data", "ls", f"{name}/in/")
        assert listing["bucket"] == "bad-bucket"
        assert [o["key"] for o in listing["objects"]] == ["in/f.txt"]
    out = tmp_path / "out"
    r = daemon.ctl("data", "download", "Bad_Bucket/in/", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "f.txt").read_text() == "mapped"
    missing = daemon.ctl("data", "ls", "No_Such_Bucket")
    assert missing.returncode == 1
    assert "'No_Such_Bucket' (stored as 'no-such-bucket') does not exist" in missing.stderr


def test_manifest_bucket_missing_names_both_names(daemon, tmp_path):
    folder = model(tmp_path / "m", data_manifest("Not_Uploaded_Yet"), {"read.py": READER})
    r = daemon.ctl("train", str(folder / "manifest.yml"))
    assert r.returncode == 1
    assert "'not-uploaded-yet' ('Not_Uploaded_Yet' in the manifest) does not exist" in r.stderr
    assert "dlaasctl data upload Not_Uploaded_Yet PATH" in r.stderr


def test_missing_bucket_refused_at_submit(daemon, tmp_path):
    folder = model(tmp_path / "m", data_manifest("no-such-bucket-here"), {"read.py": READER})
    r = daemon.ctl("train", str(folder / "manifest.yml"))
    assert r.returncode == 1
    assert "no-such-bucket-here" in r.stderr and "does not exist" in r.stderr
    assert "data upload" in r.stderr


def test_manifest_connection_with_wrong_key_is_c103(daemon, minio, tmp_path):
    m = data_manifest("stage-in-test")
    m["data_stores"][0]["connection"] = {
        "auth_url": minio.url,
        "user_name": minio.access_key,
        "password": "wrong-password",
    }
    r = daemon.ctl("train", str(model(tmp_path / "m", m, {"read.py": READER}) / "manifest.yml"))
    assert r.returncode == 1 and "C103" in r.stderr and "credentials" in r.stderr


def test_manifest_connection_to_another_store(daemon, tmp_path):
    other = Minio(short_tmp("dlaas-other-")).start()
    try:
        other.client().make_bucket("elsewhere")
        import io

        other.client().put_object("elsewhere", "f.txt", io.BytesIO(b"far away"), 8)
        m = data_manifest("elsewhere", results="elsewhere-results")
        m["data_stores"][0]["connection"] = {
            "auth_url": other.url,
            "user_name": other.access_key,
            "password": other.secret_key,
        }
        run = daemon.wait(daemon.submit(model(tmp_path / "m", m, {"read.py": READER})))
        assert run["status"] == "COMPLETED", run
        assert "f.txt far away" in daemon.ctl("logs", run["id"]).stdout
        keys = [
            o.object_name for o in other.client().list_objects("elsewhere-results", recursive=True)
        ]
        assert f"{run['id']}/seen.txt" in keys
    finally:
        other.stop()


def test_store_killed_during_storing_then_back_loses_nothing(make_daemon, tmp_path):
    own = Minio(short_tmp("dlaas-own-")).start()
    try:
        d = make_daemon(server=own)
        code = (
            "import os, time\n"
            "for i in range(20):\n"
            "    path = os.path.join(os.environ['RESULT_DIR'], f'part{i}.txt')\n"
            "    open(path, 'w').write(str(i))\n"
            "print('wrote results', flush=True)\n"
            "time.sleep(2)\n"
        )
        stores = [{"id": "s", "type": "s3_datastore", "training_results": {"container": "kept"}}]
        m = manifest("python3 w.py", data_stores=stores)
        run_id = d.submit(model(tmp_path / "m", m, {"w.py": code}))
        d.wait(run_id, "PROCESSING")
        own.stop(signal.SIGKILL)  # the store dies before the upload starts
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run = d.run(run_id)
            if run["status"] == "STORING" and "retry" in run["status_message"]:
                break
            time.sleep(0.2)
        assert run["status"] == "STORING" and "unavailable" in run["status_message"], run
        assert len(list((d.state / "runs" / run_id / "job" / "results").iterdir())) == 20
        own.start()  # same port, same data
        run = d.wait(run_id, timeout=90)
        assert run["status"] == "COMPLETED", run
        keys = {o.object_name for o in own.client().list_objects("kept", recursive=True)}
        assert {f"{run_id}/part{i}.txt" for i in range(20)} | {f"{run_id}/training-log.txt"} <= keys
    finally:
        own.stop()


def test_store_down_too_long_is_s303_and_keeps_the_local_copy(make_daemon, tmp_path):
    own = Minio(short_tmp("dlaas-own-")).start()
    try:
        d = make_daemon(server=own, store={"upload_retry_for": "3s"})
        m = manifest("echo result > $RESULT_DIR/r.txt; sleep 1")
        run_id = d.submit(model(tmp_path / "m", m))
        d.wait(run_id, "PROCESSING")
        own.stop(signal.SIGKILL)
        run = d.wait(run_id, timeout=60)
        assert run["status"] == "FAILED" and run["error_code"] == "S303", run
        local = d.state / "runs" / run_id / "job" / "results" / "r.txt"
        assert local.read_text() == "result\n"
        assert str(local.parent.parent) in run["status_message"]
    finally:
        own.stop()


def test_wrong_external_key_refuses_to_start(make_daemon, minio):
    d = make_daemon(start=False, store={"secret_key": "not-the-key"})
    with pytest.raises(RuntimeError) as info:
        d.start(timeout=30)
    assert "secret_key" in str(info.value) and "credentials" in str(info.value)


def test_unreachable_external_store_is_reported(make_daemon, tmp_path):
    d = make_daemon(
        store={
            "endpoint": "http://127.0.0.1:9",
            "access_key": "a",
            "secret_key": "b",
            "download_retry_for": "2s",
            "upload_retry_for": "2s",
        }
    )
    status = d.ctl_json("status")
    assert status["store"]["ok"] is False and "connection refused" in status["store"]["detail"]
    r = d.ctl("status")
    assert "PROBLEM" in r.stdout
    folder = model(tmp_path / "m", data_manifest("anything"), {"read.py": READER})
    sub = d.ctl("train", str(folder / "manifest.yml"))
    assert sub.returncode == 0 and "did not answer" in sub.stderr  # queued, with a warning
    run = d.wait(sub.stdout.strip(), timeout=60)
    assert run["status"] == "FAILED" and run["error_code"] == "S302", run
    assert "download" in run["status_message"] and "stay in" in run["status_message"]


def test_bundled_minio_is_started_watched_and_stopped(make_daemon, tmp_path):
    d = make_daemon(bundled=True)
    status = d.ctl_json("status")["store"]
    assert status["mode"] == "bundled" and status["ok"] and status["pid"]
    assert status["endpoint"].startswith("http://127.0.0.1:")
    creds = d.state / "minio" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    secret = __import__("json").loads(creds.read_text())["secret_key"]
    assert secret not in d.ctl("status", "--json").stdout + d.log.read_text()

    os.kill(status["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = d.ctl_json("status")["store"]
        if now["ok"] and now["pid"] and now["pid"] != status["pid"]:
            break
        time.sleep(0.2)
    assert now["ok"] and now["restarts"] >= 1, now
    run = d.wait(d.submit(model(tmp_path / "m", manifest("echo via bundled"))))
    assert run["status"] == "COMPLETED" and run["results"].startswith("s3://dlaas-results/")
    pid = now["pid"]
    d.stop()
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_daemon_killed_while_storing_finishes_after_restart(make_daemon, tmp_path):
    own = Minio(short_tmp("dlaas-own-")).start()
    try:
        d = make_daemon(server=own)
        stores = [{"id": "s", "type": "s3_datastore", "training_results": {"container": "after"}}]
        m = manifest("echo kept > $RESULT_DIR/r.txt; sleep 1", data_stores=stores)
        run_id = d.submit(model(tmp_path / "m", m))
        d.wait(run_id, "PROCESSING")
        own.stop(signal.SIGKILL)  # STORING will wait for the store...
        deadline = time.monotonic() + 60
        while "retry" not in d.run(run_id)["status_message"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert d.run(run_id)["status"] == "STORING"
        d.kill()  # ...and the daemon dies meanwhile
        own.start()
        d.start()
        run = d.wait(run_id, timeout=90)
        assert run["status"] == "COMPLETED", run
        assert own.client().get_object("after", f"{run_id}/r.txt").read() == b"kept\n"
    finally:
        own.stop()


def test_halt_before_the_training_starts_is_not_lost(make_daemon, minio, tmp_path):
    """Halted while its data downloads or its container is being made: the training must
    not run on (it sleeps a minute here)."""
    import io

    sdk = minio.client()
    if not sdk.bucket_exists("many-files"):
        sdk.make_bucket("many-files")
        for i in range(300):
            sdk.put_object("many-files", f"f{i:03d}", io.BytesIO(b"x" * 1024), 1024)
    d = make_daemon()
    m = data_manifest("many-files")
    m["framework"]["command"] = "sleep 60; echo ran-on"
    run_id = d.submit(model(tmp_path / "m", m))
    d.wait(run_id, "DOWNLOADING", "PROCESSING")
    assert d.ctl("halt", run_id).returncode == 0
    run = d.wait(run_id, timeout=120)
    assert run["status"] == "HALTED", run
    assert "ran-on" not in d.ctl("logs", run_id).stdout  # stopped, not waited for


def test_a_killed_daemons_bundled_store_keeps_its_port_and_its_cache_warm(make_daemon, tmp_path):
    d = make_daemon(bundled=True)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (data / name).write_text(name)
    d.ctl_json("data", "upload", "warm-cache", str(data))
    folder = model(tmp_path / "m", data_manifest("warm-cache"), {"read.py": READER})

    def staged() -> dict:
        run = d.wait(d.submit(folder))
        assert run["status"] == "COMPLETED", run
        return d.ctl_json("show", run["id"])["staging"]

    assert staged()["files_downloaded"] == 3
    store = d.ctl_json("status")["store"]
    port = int(store["endpoint"].rpartition(":")[2])
    # a connection MinIO closed keeps its port in TIME_WAIT for a minute...
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET /minio/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while conn.recv(4096):  # until MinIO closed its end, first
            pass
    os.kill(store["pid"], signal.SIGSTOP)  # ...and the orphaned MinIO is slow to go
    orphan = Path(f"/proc/{store['pid']}/cmdline")
    try:
        d.kill()
        d.start()
        # its MinIO got the same port back, the orphan ended...
        assert d.ctl_json("status")["store"]["endpoint"] == store["endpoint"]
        assert not orphan.exists() or b"minio" not in orphan.read_bytes()
    finally:
        with contextlib.suppress(OSError):
            if str(d.state).encode() in orphan.read_bytes():  # still ours: not left stopped
                os.kill(store["pid"], signal.SIGKILL)
    again = staged()
    assert again["cache_hits"] == 3 and again["files_downloaded"] == 0, again

    # ...and when another program took that port meanwhile, the cache still knows the store
    store = d.ctl_json("status")["store"]
    d.kill()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = int(store["endpoint"].rpartition(":")[2])
        deadline = time.monotonic() + 60
        while True:  # once the orphaned MinIO has shut down
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, "the old MinIO never let go of its port"
                time.sleep(0.05)
        squatter.listen()
        d.start()
        assert d.ctl_json("status")["store"]["endpoint"] != store["endpoint"]
        moved = staged()
    assert moved["cache_hits"] == 3 and moved["files_downloaded"] == 0, moved


def test_listing_reads_every_page_and_every_name_as_the_store_holds_it(minio):
    """list_objects parses S3's listing itself (for speed): more than one page (1,000
    keys), URL-encoded names (space, '+', '&', '<', non-ASCII), folders when not
    recursive, and the same sizes, ETags and times as the SDK reads."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from dlaasd.objectstore import Endpoint, ObjectStore

    sdk = minio.client()
    sdk.make_bucket("listing-pages")
    keys = [f"dir {i // 500}/a+b&c<é {i:04d}.bin" for i in range(1003)] + ["top%20.txt"]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda k: sdk.put_object(
                    "listing-pages", k, io.BytesIO(k.encode()), len(k.encode())
                ),
                keys,
            )
        )
    store = ObjectStore(Endpoint(minio.url, minio.access_key, minio.secret_key))

    def by_sdk(prefix: str, recursive: bool) -> list[dict]:
        return [
            {
                "key": o.object_name,
                "size": o.size or 0,
                "etag": (o.etag or "").strip('"'),
                "modified": o.last_modified.isoformat() if o.last_modified else None,
                "dir": bool(o.is_dir),
            }
            for o in sdk.list_objects("listing-pages", prefix=prefix or None, recursive=recursive)
        ]

    listed = list(store.list_objects("listing-pages"))
    assert sorted(o["key"] for o in listed) == sorted(keys)
    assert all(o["size"] == len(o["key"].encode()) for o in listed)
    for prefix, recursive in (("", True), ("", False), ("dir 1/", True), ("dir 2/", False)):
        assert list(store.list_objects("listing-pages", prefix, recursive)) == by_sdk(
            prefix, recursive
        )
    assert sorted(o["key"] for o in store.list_objects("listing-pages", "", False)) == [
        "dir 0/",
        "dir 1/",
        "dir 2/",
        "top%20.txt",
    ]


def test_a_stop_while_the_store_hangs_ends_in_its_grace_and_loses_nothing(make_daemon, tmp_path):
    """A MinIO that hangs (stopped: connections accepted, never answered) holds the
    upload's thread for its read timeout, minutes; stopping dlaasd does not wait for it,
    and after the restart the results are stored."""
    server = Minio(short_tmp("dlaas-s3-")).start()
    try:
        d = make_daemon(server=server)
        go = (
            'while [ ! -e "$RESULT_DIR/go" ]; do sleep 0.2; done; echo kept > "$RESULT_DIR/out.txt"'
        )
        run_id = d.submit(model(tmp_path / "m", manifest(go)))
        d.wait(run_id, "PROCESSING")
        assert server.proc
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            (d.state / "runs" / run_id / "job" / "results" / "go").touch()
            d.wait(run_id, "STORING")
            d.stop()  # fails the test when it takes more than 30 s
            assert "event=stop_abandoned" in d.log.read_text()
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        d.start()
        assert d.wait(run_id, timeout=180)["status"] == "COMPLETED", d.log_tail()
        out = server.client().get_object("dlaas-results", f"{run_id}/out.txt")
        assert out.read() == b"kept\n"
    finally:
        server.stop()


def test_a_listing_of_many_pages_is_staged_whole(minio, tmp_path, monkeypatch):
    """A listing comes a page at a time, the next asked for while this one is linked:
    every object of every page arrives, once, and again from the cache."""
    import io

    from dlaasd import objectstore
    from dlaasd.objectstore import DataCache, Endpoint, ObjectStore, Transfer

    sdk = minio.client()
    sdk.make_bucket("pages-test")
    keys = [f"dir-{i % 3}/file-{i:02d}.txt" for i in range(7)]
    for key in keys:
        sdk.put_object("pages-test", key, io.BytesIO(key.encode()), len(key))
    store = ObjectStore(Endpoint(minio.url, minio.access_key, minio.secret_key), workers=4)
    pages = list(store.pages("pages-test", size=3))
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(o["key"] for p in pages for o in p) == sorted(keys)
    assert sorted(o["key"] for o in store.list_objects("pages-test")) == sorted(keys)
    monkeypatch.setattr(objectstore, "LINK_PAGE", 3)
    cache = DataCache(tmp_path / "cache", 1 << 20)
    for run, hits in (("cold", 0), ("warm", 7)):
        stats = Transfer()
        store.stage_in("pages-test", "", tmp_path / run, cache, stats)
        assert (stats.total_files, stats.cache_hits) == (7, hits)
        for key in keys:
            assert (tmp_path / run / key).read_text() == key


@pytest.mark.parametrize("split_max", [64, 1])
def test_folders_listed_side_by_side_give_every_object_once(
    minio, tmp_path, monkeypatch, split_max
):
    """A stage-in lists the folders below its prefix side by side through obstore (or,
    past SPLIT_MAX folders, all in one listing): every object arrives once, the ones at
    the top too, and again from the cache. A key obstore cannot name (a control
    character) sends the rest of its folder's listing to the SDK, from the key after the
    last one obstore gave (here in the store's second page of 1,000): nothing is lost
    or counted twice."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from dlaasd import objectstore
    from dlaasd.objectstore import DataCache, Endpoint, ObjectStore, Transfer

    sdk = minio.client()
    bucket = f"split-test-{split_max}"
    sdk.make_bucket(bucket)
    keys = [f"data/f/{i:04d}.txt" for i in range(1003)] + ["data/f/1001\x01odd.txt"]
    keys += ["data/g/a.txt", "data/g/h/b.txt", "data/top.txt", "database.txt", "other/x.txt"]
    with ThreadPoolExecutor(16) as pool:
        put = lambda key: sdk.put_object(bucket, key, io.BytesIO(key.encode()), len(key))  # noqa: E731
        list(pool.map(put, keys))
    monkeypatch.setattr(objectstore, "LINK_PAGE", 3)
    monkeypatch.setattr(objectstore, "SPLIT_MAX", split_max)
    store = ObjectStore(Endpoint(minio.url, minio.access_key, minio.secret_key), workers=4)
    cache = DataCache(tmp_path / "cache", 1 << 20)
    mine = [k for k in keys if k.startswith("data")]  # the prefix "data", as S3 means it
    for run, hits in (("cold", 0), ("warm", len(mine))):
        stats = Transfer()
        store.stage_in(bucket, "data", tmp_path / run, cache, stats)
        assert (stats.total_files, stats.cache_hits) == (len(mine), hits)
        for key in mine:
            assert (tmp_path / run / key[len("data") :].lstrip("/")).read_text() == key
        staged = [p for p in (tmp_path / run).rglob("*") if p.is_file()]
        assert len(staged) == len(mine), staged


def test_downloads_by_either_client_give_the_same_blobs_and_the_same_errors(minio, tmp_path):
    """Small objects come through obstore, large ones (and keys obstore cannot name)
    through the SDK: each gives the bytes and ETag the store holds, and a refusal means
    the same to the lifecycle whichever client met it: bad credentials C103, a missing
    bucket or key a final error naming it, a store that is down a retry."""
    import io

    import dlaasd.objectstore as objectstore
    from dlaasd.codes import Code
    from dlaasd.errors import RunError
    from dlaasd.objectstore import DataCache, Endpoint, ObjectStore, StoreUnavailable

    sdk = minio.client()
    sdk.make_bucket("two-clients")
    small, large = os.urandom(1000), os.urandom(objectstore.SMALL + 5)
    contents = {"small.bin": small, "large.bin": large, "tab\there.txt": b"tab"}
    for key, data in contents.items():
        sdk.put_object("two-clients", key, io.BytesIO(data), len(data))
    store = ObjectStore(Endpoint(minio.url, minio.access_key, minio.secret_key))
    cache = DataCache(tmp_path / "cache", 1 << 30)
    listed = {o["key"]: o for o in store.list_objects("two-clients")}
    for key, data in contents.items():
        blob = store._download("two-clients", listed[key], cache)
        assert Path(blob).read_bytes() == data, key
        assert blob == cache.blob(store.endpoint.cache_id, "two-clients", key, listed[key]["etag"])
        assert stat.S_IMODE(os.stat(blob).st_mode) == 0o444

    # changed after it was listed, and grown past SMALL (so read in chunks, not whole):
    # the blob is the new version's, under its own ETag
    grown = os.urandom(objectstore.SMALL * 2 + 7)
    sdk.put_object("two-clients", "small.bin", io.BytesIO(grown), len(grown))
    blob = store._download("two-clients", listed["small.bin"], cache)
    assert Path(blob).read_bytes() == grown
    assert blob != cache.blob(
        store.endpoint.cache_id, "two-clients", "small.bin", listed["small.bin"]["etag"]
    )

    def error(store: ObjectStore, bucket: str, key: str) -> Exception:
        obj = {**listed.get(key, listed["small.bin"]), "key": key}
        with pytest.raises((RunError, StoreUnavailable)) as caught:
            store._download(bucket, obj, cache)
        return caught.value

    for key in ("small.bin", "large.bin"):  # one of each client
        wrong = ObjectStore(Endpoint(minio.url, minio.access_key, "not-the-secret"))
        refused = error(wrong, "two-clients", key)
        assert isinstance(refused, RunError) and refused.code == Code.BAD_CREDENTIALS, refused
        missing = error(store, "no-such-bucket", key)
        assert isinstance(missing, RunError) and missing.code == Code.DOWNLOAD_FAILED
        assert "'no-such-bucket' does not exist" in str(missing), missing
    gone = error(store, "two-clients", "gone.bin")
    assert isinstance(gone, RunError) and "'gone.bin' does not exist" in str(gone), gone
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        down = ObjectStore(Endpoint(f"http://127.0.0.1:{s.getsockname()[1]}", "k", "secret"))
        assert type(error(down, "two-clients", "small.bin")) is StoreUnavailable
    assert not list((tmp_path / "cache").rglob("*.part-*"))  # nothing half-written is left


def test_small_objects_come_from_a_store_in_another_region(tmp_path, monkeypatch):
    """A store whose region is not us-east-1, with no region configured: the requests
    for small objects are signed for the bucket's region, which the SDK asks once."""
    import io

    from dlaasd.objectstore import DataCache, Endpoint, ObjectStore

    monkeypatch.setenv("MINIO_SITE_REGION", "eu-west-3")
    server = Minio(short_tmp("dlaas-s3-")).start()
    try:
        sdk = server.client()
        sdk.make_bucket("regional", location="eu-west-3")
        sdk.put_object("regional", "small.txt", io.BytesIO(b"far"), 3)
        store = ObjectStore(Endpoint(server.url, server.access_key, server.secret_key))
        (obj,) = store.list_objects("regional")
        blob = store._download("regional", obj, DataCache(tmp_path / "cache", 1 << 20))
        assert Path(blob).read_bytes() == b"far"
    finally:
        server.stop()


def test_an_object_changed_while_staged_in_is_listed_again_and_the_tree_holds_what_it_names(
    minio, tmp_path, monkeypatch
):
    from dlaasd.objectstore import DataCache, Endpoint, ObjectStore, Transfer

    sdk, bucket = minio.client(), "tree-changed"
    if not sdk.bucket_exists(bucket):
        sdk.make_bucket(bucket)
    for key, text in (("a.txt", b"one"), ("b.txt", b"two")):
        sdk.put_object(bucket, key, io.BytesIO(text), len(text))
    store = ObjectStore(Endpoint(minio.url, minio.access_key, minio.secret_key))
    cache = DataCache(tmp_path / "cache", 10**9)
    real, listings = store.listing, []

    def stale_first(bucket: str, prefix: str, work):
        """The first listing gives a.txt as an older version (another ETag) than the GET."""
        for page in real(bucket, prefix, work):
            stale = {"etag": "0" * 32} if not listings else {}
            yield [{**o, **stale} if o["key"] == "a.txt" else o for o in page]
        listings.append(prefix)

    monkeypatch.setattr(store, "listing", stale_first)
    tree = store.stage_in_tree(bucket, "", cache, Transfer(), "run-1")
    assert tree is not None and len(listings) == 2  # listed again
    listed = [o for page in real(bucket, "", list) for o in page]
    assert tree.name == cache.tree_name(store.endpoint.cache_id, bucket, "", listed)
    assert (tree / "a.txt").read_bytes() == b"one" and (tree / "b.txt").read_bytes() == b"two"
    assert [t.name for t in (tmp_path / "cache" / "trees").iterdir()] == [tree.name]
