"""`dlaasctl doctor` against a real daemon: what is fine, and what is wrong with its fix."""

from __future__ import annotations

import json

import pytest

from tests.harness import dlaasctl, no_daemon

pytestmark = pytest.mark.integration


def test_doctor_reports_each_problem_with_a_fix(make_daemon, tmp_path):
    d = make_daemon(frameworks={"broken": {"*": "dlaas/not-built:1"}})
    (d.state / "inbox" / "data" / "Bad_Name").mkdir(parents=True)
    (d.state / "inbox" / "data" / "Two_Names").mkdir()
    (d.state / "inbox" / "data" / "two-names").mkdir()
    r = d.ctl("doctor")
    assert r.returncode == 1  # a missing image is a failure
    assert "OK    docker" in r.stdout and "OK    store" in r.stdout and "OK    socket" in r.stdout
    assert "FAIL  image dlaas/not-built:1: missing" in r.stdout
    assert "fix: build it: scripts/build-images" in r.stdout
    assert "WARN  drop folder data/Bad_Name: uploaded to bucket 'bad-name'" in r.stdout
    assert "FAIL  drop folder data/Two_Names, data/two-names: all fill bucket 'two-names'" in (
        r.stdout
    )
    data = d.ctl("doctor", "--json")
    assert data.returncode == 1
    checks = {c["name"]: c for c in json.loads(data.stdout)["checks"]}
    assert checks["image dlaas/python:bookworm"]["status"] == "ok"
    assert checks["disk"]["status"] in ("ok", "warn")


def test_doctor_without_a_daemon_says_how_to_start_it(tmp_path):
    r = dlaasctl("doctor", env=no_daemon(tmp_path))
    assert r.returncode == 1
    assert "FAIL  daemon" in r.stdout and "start it" in r.stdout
