"""Hand-made hostile requests: each gets a 4xx whose JSON error names the field and the
fix, never a 5xx, and the daemon keeps serving. The fuzzing in test_api_fuzz.py covers
the rest of the input space; these pin the cases it found."""

from __future__ import annotations

import os
import threading
import time
from urllib.parse import quote

import pytest
import yaml

from dlaasctl.http import ApiError
from tests.harness import manifest, model

pytestmark = pytest.mark.integration

FORMS = ["/v1/runs", "/v1/experiments"]


def refusal(daemon, method: str, path: str, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        daemon.api.request(method, path, **kw)
    return info.value


def assert_serving(daemon) -> None:
    assert daemon.api.json("GET", "/v1/health")["status"] == "ok"


@pytest.mark.parametrize("path", FORMS)
def test_multipart_without_a_boundary_is_400(daemon, path):
    body = b'--x\r\nContent-Disposition: form-data; name="manifest"\r\n\r\nname: a\r\n--x--\r\n'
    err = refusal(daemon, "POST", path, body=body, headers={"Content-Type": "multipart/form-data"})
    assert err.status == 400, err.message
    assert "boundary" in err.message and "Content-Type" in err.message
    assert_serving(daemon)


@pytest.mark.parametrize("path", FORMS)
@pytest.mark.parametrize(
    "head",
    [
        b"Content-Disposition form-data",  # no colon
        b"\x00\x01: x",  # not a header name
    ],
)
def test_malformed_part_headers_are_400(daemon, path, head):
    body = b"--b\r\n" + head + b"\r\n\r\nname: a\r\n--b--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    err = refusal(daemon, "POST", path, body=body, headers=headers)
    assert err.status == 400, err.message
    assert "malformed" in err.message and "Content-Disposition" in err.message
    assert_serving(daemon)


@pytest.mark.parametrize(
    "body",
    [
        b"no boundary line at all",
        b'--b\r\nContent-Disposition: form-data; name="manifest"\r\n\r\ncut short',
        # a part that is itself multipart
        b"--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n"
        b"--c\r\n\r\nx\r\n--c--\r\n--b--\r\n",
        # the model twice: the first copy must not be left behind
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nPK\r\n'
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nPK\r\n--b--\r\n',
    ],
)
def test_broken_multipart_bodies_are_400_and_leave_nothing(daemon, body):
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    err = refusal(daemon, "POST", "/v1/runs", body=body, headers=headers)
    assert err.status == 400, err.message
    assert "'manifest'" in err.message or "multipart" in err.message, err.message
    incoming = daemon.state / "runs" / ".incoming"
    assert not any(incoming.iterdir())  # no model archive left behind
    assert_serving(daemon)


def test_artifact_paths_out_of_the_run_are_400(daemon, tmp_path):
    run_id = daemon.submit(model(tmp_path / "m", manifest("echo hi > $RESULT_DIR/out.txt")))
    daemon.wait(run_id)
    for kind in ("definition", "results"):
        for path in ("..%2F..%2Fetc%2Fpasswd", "%2E%2E", "%2Fetc%2Fpasswd", "a%2F..%2F..%2Fb"):
            err = refusal(daemon, "GET", f"/v1/runs/{run_id}/{kind}/{path}")
            assert err.status == 400, (kind, path, err.message)
            assert "file path" in err.message and kind in err.message
    # what the listing names can still be fetched
    listed = daemon.api.json("GET", f"/v1/runs/{run_id}/results")["files"]
    assert "out.txt" in [f["path"] for f in listed]
    got = daemon.api.request("GET", f"/v1/runs/{run_id}/results/out.txt").read()
    assert got == b"hi\n"
    assert_serving(daemon)


@pytest.mark.parametrize(
    "key, words",
    [
        ("a%5C..%5Cb", "'.' or '..'"),  # MinIO splits at backslashes too
        ("..%5Cx", "'.' or '..'"),
        ("x/%20.%20/y", "'.' or '..'"),
        ("a/./b", "'.' or '..'"),
        ("a//b", "empty part"),
        ("dir/", "empty part"),
        ("a%00b", "NUL"),
        ("k" * 1025, "1024"),
    ],
)
def test_bad_object_keys_are_400(daemon, key, words):
    for method, body in (("PUT", b"data"), ("GET", None)):
        err = refusal(daemon, method, f"/v1/data/hostile-keys/{key}", body=body)
        assert err.status == 400, (method, key, err.message)
        assert "object key" in err.message and words in err.message, err.message
    assert_serving(daemon)


def test_keys_with_backslashes_but_no_dot_parts_still_work(daemon):
    daemon.api.request("PUT", "/v1/data/hostile-keys/win%5Cpath.txt", body=b"fine").read()
    assert daemon.api.request("GET", "/v1/data/hostile-keys/win%5Cpath.txt").read() == b"fine"


def test_put_data_answers_the_status_its_document_declares(daemon):
    doc = daemon.api.json("GET", "/v1/openapi.json")
    put = doc["paths"]["/v1/data/{bucket}/{key}"]["put"]
    resp = daemon.api.request("PUT", "/v1/data/declared-status/a.txt", body=b"hello")
    resp.read()
    assert str(resp.status) in put["responses"]
    assert list(put["responses"])[0] == str(resp.status)  # the success it declares
    for status in ("400", "411", "503"):  # and the refusals
        schema = put["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}


def test_experiment_with_an_inline_manifest_is_queued(daemon, tmp_path):
    """Found by the fuzzing's seed: an inline manifest with a number was a 500."""
    spec = {
        "name": "inline",
        "manifest": manifest("true", cpus=0.5, version=1.10),
        "hyper_parameters": [{"name": "lr", "double_values": [0.1]}],
        "method": "grid",
        "objective": {"name": "loss", "maximize_or_minimize": "minimize"},
    }
    text = yaml.safe_dump(spec).replace("version: 1.1\n", "version: 1.10\n").encode()
    created = daemon.api.multipart("/v1/experiments", {"experiment": text}, {})
    [trial] = created["runs"]
    assert daemon.wait(trial)["status"] == "COMPLETED"
    assert "version: 1.10" in daemon.run(trial)["manifest"]  # as written, not 1.1


def test_a_method_a_route_lacks_is_405_with_allow(daemon):
    import requests_unixsocket

    url = "http+unix://" + quote(str(daemon.socket), safe="") + "/v1/runs"
    with requests_unixsocket.Session() as s:
        resp = s.patch(url)
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}
    assert "PATCH is not allowed" in resp.json()["error"]["message"]


def test_a_result_swapped_for_a_link_is_never_followed(daemon, tmp_path):
    """The run's owner (or its training) may swap a listed result file for a link to a
    file only dlaasd may read, or remove one, between the listing and the read: the link
    is never followed, and nothing answers 500."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-SECRET\n")
    command = "echo hi > $RESULT_DIR/out.txt; sleep 300"
    run_id = daemon.submit(model(tmp_path / "m", manifest(command)))
    daemon.wait(run_id, "PROCESSING")
    results = daemon.state / "runs" / run_id / "job" / "results"
    for _ in range(600):  # the container has started and written it
        if (results / "out.txt").exists():
            break
        time.sleep(0.1)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.symlink(secret, results / ".link")
            os.replace(results / ".link", results / "out.txt")
            (results / ".file").write_text("hi\n")
            os.replace(results / ".file", results / "out.txt")
            (results / "gone.tmp").write_text("x")
            (results / "gone.tmp").unlink()

    swapper = threading.Thread(target=swap)
    swapper.start()
    served = 0
    try:
        for _ in range(200):
            daemon.api.json("GET", f"/v1/runs/{run_id}/results")  # no 500 for a file gone
            try:
                got = daemon.api.request("GET", f"/v1/runs/{run_id}/results/out.txt").read()
            except ApiError as exc:
                assert exc.status == 404, exc.message  # a link there when it was opened
                continue
            assert got == b"hi\n"
            served += 1
    finally:
        stop.set()
        swapper.join()
    assert served > 0
    daemon.api.json("POST", f"/v1/runs/{run_id}/halt")
    daemon.wait(run_id)
    assert_serving(daemon)


def test_results_swapped_for_links_are_never_stored_or_mirrored(daemon, tmp_path):
    """While a run's results are uploaded and copied to the drop folder, its owner swaps
    each listed file for a link to a file only dlaasd may read: neither the store nor the
    drop folder's copy ever holds that file."""
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-SECRET\n")
    names = [f"r{i}.txt" for i in range(40)]
    command = "for i in $(seq 0 39); do echo hi > $RESULT_DIR/r$i.txt; done; sleep 1"
    run_id = daemon.submit(model(tmp_path / "m", manifest(command)))
    daemon.wait(run_id, "PROCESSING", "STORING", "COMPLETED")
    results = daemon.state / "runs" / run_id / "job" / "results"
    stop = threading.Event()

    def swap() -> None:
        try:
            while not stop.is_set():  # each file a link half of the time
                for name in names:
                    os.symlink(secret, results / ".link")
                    os.replace(results / ".link", results / name)
                for name in names:
                    (results / ".file").write_text("hi\n")
                    os.replace(results / ".file", results / name)
        except OSError:  # the folder tidied once the run ended
            pass

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        run = daemon.wait(run_id)
    finally:
        stop.set()
        swapper.join()
    assert run["status"] == "COMPLETED", run
    stored = daemon.api.json("GET", f"/v1/data/dlaas-results?prefix={run_id}/")["objects"]
    assert stored
    for o in stored:
        got = daemon.api.request("GET", f"/v1/data/dlaas-results/{quote(o['key'])}").read()
        assert b"HOST-SECRET" not in got, o["key"]
    mirrored = daemon.state / "inbox" / "results" / run_id
    copies = [p for p in mirrored.rglob("*") if p.is_file()]
    assert copies
    for p in copies:
        assert not p.is_symlink() and b"HOST-SECRET" not in p.read_bytes(), p
    assert secret.read_text() == "HOST-SECRET\n" and secret.stat().st_uid == os.getuid()
