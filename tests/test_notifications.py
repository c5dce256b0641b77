"""Notifications on a real daemon: a local HTTP receiver gets one POST per final status
(also when the daemon is killed after the run ended and before the POST went out), the
command gets the facts, a manifest's webhook only where the config allows it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from dlaasd.minio_server import free_port
from tests.harness import manifest, model

pytestmark = pytest.mark.integration


class Receiver:
    """An HTTP server on loopback that keeps every POST it gets."""

    def __init__(self, port: int):
        self.posts: list[dict] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append(
                    {"path": self.path, "key": self.headers["Idempotency-Key"], **json.loads(body)}
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def outbox(d) -> list[dict]:
    """The daemon's outbox, read from its database (read-only)."""
    db = sqlite3.connect(f"file:{d.state / 'dlaas.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("select * from outbox order by id")]
    finally:
        db.close()


def delivered(d, n: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = outbox(d)
        if len(rows) >= n and all(r["delivered"] for r in rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"not delivered: {outbox(d)}\n{d.log_tail()}")


def test_one_post_per_final_status_even_if_the_daemon_is_killed_before_it(make_daemon, tmp_path):
    port = free_port()  # nobody listens yet: the POST cannot go out
    url = f"http://127.0.0.1:{port}/hook"
    told = tmp_path / "told"
    script = 'echo "$DLAAS_KIND $DLAAS_ID $DLAAS_STATUS $DLAAS_ERROR_CODE $DLAAS_OWNER" >> ' + str(
        told
    )
    d = make_daemon(notify={"webhooks": [url], "command": ["sh", "-c", script]})
    ok = d.submit(model(tmp_path / "ok", manifest("true", name="fine")))
    bad = d.submit(model(tmp_path / "bad", manifest("exit 2", name="broken")))
    assert d.wait(ok)["status"] == "COMPLETED" and d.wait(bad)["status"] == "FAILED"
    deadline = time.monotonic() + 30
    while not all(r["attempts"] for r in outbox(d) if r["kind"] == "webhook"):
        assert time.monotonic() < deadline, outbox(d)
        time.sleep(0.2)
    d.kill()  # after the runs ended, before their POSTs went out

    receiver = Receiver(port)
    try:
        d.start()
        rows = delivered(d, 4)
        assert sorted((p["event"], p["run"]["id"]) for p in receiver.posts) == sorted(
            [("run.completed", ok), ("run.failed", bad)]
        )
        assert len({p["key"] for p in receiver.posts}) == 2
        failed = next(p["run"] for p in receiver.posts if p["run"]["id"] == bad)
        assert failed["error_code"] == "C201" and failed["usage"]["final"]
        assert {r["key"] for r in rows if r["kind"] == "webhook"} == {
            p["key"] for p in receiver.posts
        }
    finally:
        receiver.close()
    lines = sorted(told.read_text().split("\n")[:-1])
    assert lines == sorted([f"run {ok} COMPLETED  root", f"run {bad} FAILED C201 root"])


def test_a_manifest_webhook_only_where_the_config_allows_and_experiments_too(make_daemon, tmp_path):
    receiver = Receiver(0)
    base = f"http://127.0.0.1:{receiver.server.server_address[1]}"
    try:
        d = make_daemon(notify={"allowed_webhooks": [f"{base}/lab/"]})
        refused = d.ctl(
            "train",
            str(model(tmp_path / "no", manifest("true", notify={"webhooks": [f"{base}/x"]}))),
        )
        assert refused.returncode == 1 and "notify.webhooks[0]" in refused.stderr
        mine = model(tmp_path / "yes", manifest("true", notify={"webhooks": [f"{base}/lab/me"]}))
        run_id = d.submit(mine)
        d.wait(run_id)
        delivered(d, 1)
        assert [(p["path"], p["run"]["id"]) for p in receiver.posts] == [("/lab/me", run_id)]

        # the config's own webhooks also hear of an experiment's end, once
        d.stop()
        d.settings["notify"] = {"webhooks": [f"{base}/all"]}
        d.start()
        receiver.posts.clear()
        folder = model(tmp_path / "exp", manifest("true", cpus=0.5))
        spec = {
            "name": "tiny",
            "manifest": "manifest.yml",
            "hyper_parameters": [{"name": "q", "int_values": [1, 2]}],
            "method": "grid",
            "objective": {"name": "score", "maximize_or_minimize": "maximize"},
        }
        (folder / "experiment.yml").write_text(yaml.safe_dump(spec))
        exp = d.ctl_json("experiment", "run", str(folder / "experiment.yml"))
        delivered(d, 4)  # the first run, two trials and the experiment
        events = sorted(p["event"] for p in receiver.posts)
        assert events == ["experiment.completed", "run.completed", "run.completed"]
        assert (
            next(p for p in receiver.posts if p["event"].startswith("exp"))["experiment"]["id"]
            == exp["id"]
        )
    finally:
        receiver.close()
