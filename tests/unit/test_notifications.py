"""dlaasd.notifications: the notices a final status makes, and their delivery (to a
real HTTP server on loopback, and a real command)."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dlaasd.notifications import allowed, backoff, key_of, notices, post, run_command

FACTS = {
    "id": "training-abc",
    "name": "mnist",
    "owner": "alice",
    "status": "FAILED",
    "error_code": "C201",
    "results": "s3://dlaas-results/training-abc/",
    "experiment_id": None,
    "status_message": "the training command exited with code 1",
}


def test_a_final_status_makes_one_notice_per_target_with_a_stable_key():
    ns = notices("run", FACTS, ["/usr/local/bin/tell"], ["http://a/x", "http://b/y", "http://a/x"])
    assert [(n.kind, n.target) for n in ns] == [
        ("command", "/usr/local/bin/tell"),
        ("webhook", "http://a/x"),
        ("webhook", "http://b/y"),
    ]
    assert len({n.key for n in ns}) == 3
    again = notices("run", FACTS, ["/usr/local/bin/tell"], ["http://a/x"])
    assert again[1].key == ns[1].key == key_of("training-abc", "FAILED", "http://a/x")
    assert ns[1].payload == {"event": "run.failed", "run": FACTS}
    env = ns[0].env
    assert env["DLAAS_RUN_ID"] == "training-abc" and env["DLAAS_OWNER"] == "alice"
    assert env["DLAAS_STATUS"] == "FAILED" and env["DLAAS_ERROR_CODE"] == "C201"
    assert env["DLAAS_RESULTS"] == "s3://dlaas-results/training-abc/"


def test_nothing_configured_makes_nothing():
    assert notices("run", FACTS, [], []) == []


def test_allowed_webhooks_are_prefixes():
    assert allowed("http://127.0.0.1:8080/hooks/mine", ["http://127.0.0.1:8080/hooks/"])
    assert not allowed("http://127.0.0.1:8080/other", ["http://127.0.0.1:8080/hooks/"])
    assert not allowed("http://anything", [])


def test_backoff_doubles_up_to_five_minutes():
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(30) == 300


@pytest.fixture
def receiver():
    got: list[tuple[str, dict, bytes]] = []
    answers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, dict(self.headers), body))
            code = answers.pop(0) if answers else 200
            self.send_response(code)
            if code == 302:
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got, answers
    server.shutdown()


def test_post_sends_the_json_with_the_idempotency_key(receiver):
    url, got, answers = receiver
    post(f"{url}/hook", json.dumps({"a": 1}).encode(), "k-1", timeout=5)
    path, headers, body = got[0]
    assert path == "/hook" and json.loads(body) == {"a": 1}
    assert headers["Idempotency-Key"] == "k-1"
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("code", [500, 302])
def test_an_error_or_a_redirect_is_a_failure_to_retry(receiver, code):
    url, got, answers = receiver
    answers.append(code)
    with pytest.raises(OSError):
        post(f"{url}/hook", b"{}", "k", timeout=5)
    assert len(got) == 1  # the redirect was not followed


def test_the_command_gets_the_facts_in_its_environment(tmp_path):
    out = tmp_path / "out"
    script = f"import os; open({str(out)!r}, 'w').write(os.environ['DLAAS_STATUS'])"
    env = notices("run", FACTS, ["x"], [])[0].env
    run_command([sys.executable, "-c", script], env, "k", timeout=30)
    assert out.read_text() == "FAILED"
    with pytest.raises(OSError, match="exited with 3"):
        run_command([sys.executable, "-c", "raise SystemExit(3)"], env, "k", timeout=30)
