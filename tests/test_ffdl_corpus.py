"""FfDL's example manifests (our copies of their shapes, tests/corpus/ffdl) submitted
unchanged to a real daemon with the real dlaasctl: each one accepted, or refused for a
reason of this machine, named; the ones accepted train from and store to the buckets their
FfDL names map to; `show` gives both names."""

from __future__ import annotations

import json

import pytest
import yaml

from dlaasd.buckets import store_name
from tests.ffdl_corpus import CORPUS, DATA_BUCKETS, EXPECTED, said
from tests.harness import manifest

pytestmark = pytest.mark.integration

# What FfDL's `mnist.py` stands in for: reads DATA_DIR, writes RESULT_DIR.
MNIST = """
import os, pathlib
data = pathlib.Path(os.environ["DATA_DIR"])
files = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
print("data:", " ".join(files), flush=True)
pathlib.Path(os.environ["RESULT_DIR"], "model.txt").write_text(" ".join(files))
"""


def test_every_corpus_manifest_on_the_test_daemon(make_daemon, minio, tmp_path):
    d = make_daemon(containers={"pull_missing_images": False})
    sample = tmp_path / "train.csv"
    sample.write_text("1,2\n")
    for bucket in DATA_BUCKETS:  # uploaded as the manifests name them
        r = d.ctl("data", "upload", bucket, str(sample), "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["bucket"] == store_name(bucket)
        if store_name(bucket) != bucket:
            assert f"is stored as {store_name(bucket)!r}" in r.stderr
    code = tmp_path / "code"
    code.mkdir()
    (code / "mnist.py").write_text(MNIST)
    accepted = {}
    for name, (image, outcome, pieces) in sorted(EXPECTED.items()):
        r = d.ctl("train", str(CORPUS / name), str(code), "--json")
        if outcome == "accepted":
            assert r.returncode == 0, (name, r.stderr)
            result = json.loads(r.stdout)
            assert result["status"] == "QUEUED"
            for piece in pieces:
                assert said(piece, result["warnings"]), (name, piece, result["warnings"])
                assert "warning: " in r.stderr
            accepted[name] = result["id"]
        elif outcome == "S103":  # an image this machine does not have, and no pulling
            assert r.returncode == 1, (name, r.stdout)
            assert "error [S103]" in r.stderr and f"image {image!r}" in r.stderr, (name, r.stderr)
        else:
            code_, fields = outcome
            assert r.returncode == 1, (name, r.stdout)
            assert f"error [{code_}]" in r.stderr, (name, r.stderr)
            assert all(f"  - {f}: " in r.stderr for f in fields), (name, r.stderr)
        if outcome != "accepted":  # a refusal says the rest too: one attempt tells all
            said_too = [ln[9:] for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
            for piece in pieces:
                assert said(piece, said_too), (name, piece, r.stderr)
    assert sorted(accepted) == ["metrics-keys.yml", "pytorch-model.yml"]
    assert d.ctl_json("list")["total"] == 2  # nothing refused was queued

    run = d.wait(accepted["pytorch-model.yml"])
    assert run["status"] == "COMPLETED", run
    assert "data: train.csv" in d.ctl("logs", run["id"]).stdout
    keys = [
        o.object_name
        for o in minio.client().list_objects("tf-trained-model", prefix=run["id"], recursive=True)
    ]
    assert f"{run['id']}/model.txt" in keys
    shown = d.ctl("show", run["id"]).stdout
    assert "training data bucket: tf_training_data (stored as tf-training-data)" in shown
    assert "results bucket: tf_trained_model (stored as tf-trained-model)" in shown
    assert "warnings at submit:" in shown and IN_CLUSTER_WORDS in shown
    detail = d.ctl_json("show", run["id"])
    assert detail["buckets"][0] == {
        "use": "training data",
        "manifest": "tf_training_data",
        "store": "tf-training-data",
    }
    assert d.wait(accepted["metrics-keys.yml"])["status"] == "COMPLETED"


IN_CLUSTER_WORDS = "FfDL's in-cluster object store"


def test_accepted_where_the_machine_has_what_they_ask(make_daemon, tmp_path):
    """A daemon with 4 (simulated) GPUs, 32 CPUs and 64GiB queues every one of them; a
    run holding all the memory keeps them queued (no image is pulled), then all halt."""
    d = make_daemon(
        simulate_gpus=4,
        capacity={"cpus": 32, "memory": "64GiB"},
        containers={"allowed_volumes": ["/cosdata"]},
    )
    sample = tmp_path / "train.csv"
    sample.write_text("1,2\n")
    for bucket in DATA_BUCKETS:
        assert d.ctl("data", "upload", bucket, str(sample)).returncode == 0
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "manifest.yml").write_text(
        yaml.safe_dump(manifest("sleep 600", name="blocker", memory="64GiB"))
    )
    blocker_id = d.submit(blocker)
    d.wait(blocker_id, "PROCESSING")
    queued = []
    for name, (image, _, pieces) in sorted(EXPECTED.items()):
        r = d.ctl("train", str(CORPUS / name), "--json")
        assert r.returncode == 0, (name, r.stderr)
        result = json.loads(r.stdout)
        assert result["status"] == "QUEUED"
        warnings = result["warnings"]
        for piece in pieces:
            assert said(piece, warnings), (name, piece, warnings)
        if not image.startswith("dlaas/"):
            assert f"image {image!r} is not on this machine: it is pulled" in " ".join(warnings)
        assert d.run(result["id"])["image"] == image
        queued.append(result["id"])
    # each submit woke the scheduler: none of them fits beside the blocker
    assert {d.run(i)["status"] for i in queued} == {"QUEUED"}
    for run_id in queued + [blocker_id]:
        assert d.ctl("halt", run_id).returncode == 0
    assert {d.wait(i)["status"] for i in queued} == {"HALTED"}
