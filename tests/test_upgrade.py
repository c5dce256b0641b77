"""Upgrades: a state folder written by an earlier release opens and works with this code.

The fixtures (tests/fixtures/state-<version>.tar.gz) are made by make_state_fixture.py
with that release's code; a change of the database or the folder layout must keep them
working. Each one: its runs listed and shown as they ended, their logs and results
readable, its experiment shown, and a new run of an old definition, on the old data
bucket, completes with the same results.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.make_state_fixture import checksums
from tests.harness import Dlaasd, short_tmp

pytestmark = pytest.mark.integration

FIXTURES = sorted(Path(__file__).parent.glob("fixtures/state-*.tar.gz"))


@pytest.fixture
def old_state(request, docker_client):
    """A daemon started on a copy of the fixture's state folder, and the fixture's facts."""
    tarball: Path = request.param
    facts = json.loads(tarball.with_name(tarball.name.replace(".tar.gz", ".json")).read_text())
    root = short_tmp("dlaas-up-")
    with tarfile.open(tarball) as tar:
        # extraction filters came with Python 3.11.4 (Debian 12 has 3.11.2); the tarball is ours
        tar.extractall(root, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    d = Dlaasd(root)  # the bundled MinIO, whose data the fixture holds
    try:
        yield d.start(), facts
    finally:
        d.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("old_state", FIXTURES, ids=lambda p: p.name, indirect=True)
def test_state_of_an_earlier_release_opens_and_works(old_state, tmp_path):
    d, facts = old_state
    listed = {r["id"]: r for r in d.ctl_json("list", "--limit", "100")["runs"]}
    every = {**facts["runs"], **{t: {"status": "COMPLETED"} for t in facts["trials"]}}
    assert {i: r["status"] for i, r in listed.items()} == {i: f["status"] for i, f in every.items()}
    for run_id, fact in facts["runs"].items():
        shown = d.ctl_json("show", run_id)
        assert shown["status"] == fact["status"] and shown["error_code"] == fact["error_code"]
        assert shown["history"][-1]["status"] == fact["status"]
        assert facts["logs"][run_id] in d.ctl("logs", run_id).stdout

    # the runs that had ended before accounting came are accounted for from their history
    usage = {r["run_id"]: r for r in d.ctl_json("usage")["runs"]}
    assert set(usage) == set(every)
    for run_id, shown in ((i, d.ctl_json("show", i)) for i in facts["runs"]):
        assert usage[run_id] == {**shown["usage"], "final": True}

    old = tmp_path / "old"
    r = d.ctl("download", facts["completed"], "--dest", str(old))
    assert r.returncode == 0, r.stderr
    assert checksums(old) == facts["results"]

    e = d.ctl_json("experiment", "show", facts["experiment"])
    assert e["status"] == "COMPLETED" and {t["id"] for t in e["runs"]} == set(facts["trials"])

    # the old definition again, on the old bucket: the same results
    definition = tmp_path / "definition"
    r = d.ctl("download", facts["completed"], "--definition", "--dest", str(definition))
    assert r.returncode == 0, r.stderr
    r = d.ctl("train", str(definition / "manifest.yml"), str(definition / "model.zip"))
    assert r.returncode == 0, r.stderr
    new_id = r.stdout.split()[0]
    run = d.wait(new_id, timeout=180)
    assert run["status"] == "COMPLETED", (run, d.ctl("logs", new_id).stdout)
    new = tmp_path / "new"
    assert d.ctl("download", new_id, "--dest", str(new)).returncode == 0
    assert checksums(new) == facts["results"]  # the log too: the same lines
