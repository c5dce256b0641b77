"""dlaasd/helpers/dlaas_emetrics.py: the optional helper training code imports in containers.

It is a plain module (the folder is mounted at /opt/dlaas/python, not imported as part of
the dlaasd package), so it is loaded by path here.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import dlaasd

HELPER = Path(dlaasd.__file__).parent / "helpers" / "dlaas_emetrics.py"


@pytest.fixture
def emetrics(monkeypatch, tmp_path):
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("TRAINING_ID", "training-42")
    monkeypatch.delenv("SUBID", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in helpers/
    spec = importlib.util.spec_from_file_location("dlaas_emetrics", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_report_appends_one_ffdl_line(emetrics, tmp_path):
    before = time.time()
    emetrics.report(step=3, accuracy=0.93, loss=0.21)
    after = time.time()
    (record,) = lines(tmp_path / "logs" / "evaluation-metrics.txt")
    assert set(record) == {"meta", "grouplabel", "etimes", "values"}
    meta = record["meta"]
    assert meta["training_id"] == "training-42" and meta["subid"] == ""
    assert isinstance(meta["time"], int)
    assert int(before * 1000) <= meta["time"] <= int(after * 1000)
    assert record["grouplabel"] == "test"
    assert record["etimes"]["iteration"] == {"type": "INT", "value": 3}
    stamp = record["etimes"]["time_stamp"]
    assert stamp["type"] == "STRING" and stamp["value"].endswith("Z")
    parsed = datetime.fromisoformat(stamp["value"].replace("Z", "+00:00"))
    assert parsed.tzinfo is not None and parsed.utcoffset().total_seconds() == 0
    assert abs(parsed.timestamp() - meta["time"] / 1000) < 0.002
    assert record["values"] == {
        "accuracy": {"type": "FLOAT", "value": 0.93},
        "loss": {"type": "FLOAT", "value": 0.21},
    }


def test_groups_subid_and_appending(emetrics, tmp_path, monkeypatch):
    monkeypatch.setenv("SUBID", "learner-1")
    emetrics.report(step=1, group="train", loss=0.3)
    emetrics.report(step=2, loss=1)  # ints become floats
    first, second = lines(tmp_path / "logs" / "evaluation-metrics.txt")
    assert first["grouplabel"] == "train" and second["grouplabel"] == "test"
    assert first["meta"]["subid"] == "learner-1"
    assert second["etimes"]["iteration"]["value"] == 2
    assert second["values"] == {"loss": {"type": "FLOAT", "value": 1.0}}
    assert isinstance(second["values"]["loss"]["value"], float)


def test_without_log_dir_it_writes_in_the_working_folder(emetrics, tmp_path, monkeypatch):
    monkeypatch.delenv("LOG_DIR")
    monkeypatch.delenv("TRAINING_ID")
    monkeypatch.chdir(tmp_path)
    emetrics.report(step=0, loss=0.5)
    (record,) = lines(tmp_path / "evaluation-metrics.txt")
    assert record["meta"]["training_id"] == ""
    assert not (tmp_path / "logs").exists()


def test_numbers_from_libraries_and_bad_values(emetrics, tmp_path):
    class Tensor:  # torch/numpy scalars convert with float() and int()
        def __init__(self, v):
            self.v = v

        def __float__(self):
            return float(self.v)

        def __index__(self):
            return int(self.v)

        __int__ = __index__

    emetrics.report(step=Tensor(4), loss=Tensor(0.25))
    (record,) = lines(tmp_path / "logs" / "evaluation-metrics.txt")
    assert record["etimes"]["iteration"]["value"] == 4
    assert record["values"]["loss"]["value"] == 0.25
    with pytest.raises(TypeError, match="loss='high'"):
        emetrics.report(step=1, loss="high")
    with pytest.raises(TypeError, match="at least one metric"):
        emetrics.report(step=1)
    assert len(lines(tmp_path / "logs" / "evaluation-metrics.txt")) == 1


def test_each_line_is_flushed_at_once(emetrics, tmp_path):
    path = tmp_path / "logs" / "evaluation-metrics.txt"
    for step in range(3):
        emetrics.report(step=step, loss=step / 10)
        assert path.read_text().endswith("\n")
        assert len(lines(path)) == step + 1


def test_dlaasd_reads_what_it_writes(emetrics, tmp_path):
    from dlaasd.metrics import parse_emetrics as parse

    emetrics.report(step=5, group="train", loss=0.5, accuracy=0.75)
    line = (tmp_path / "logs" / "evaluation-metrics.txt").read_text()
    points = parse(line, 0.0)
    # (how dlaasd names a group's metrics is its own business: "loss" or "train.loss")
    assert sorted((p.step, p.name.rpartition(".")[2], p.value) for p in points) == [
        (5, "accuracy", 0.75),
        (5, "loss", 0.5),
    ]


def test_plain_module_for_python_3_8():
    source = HELPER.read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported <= set(sys.stdlib_module_names)
    assert not (HELPER.parent / "__init__.py").exists()


# Standard-library names added after 3.8 that this kind of code reaches for; none may be
# used (ast.parse(feature_version=...) checks the grammar only, not the library).
NEWER_THAN_3_8 = {
    "removeprefix", "removesuffix", "zoneinfo", "graphlib", "UTC", "pairwise", "batched",
    "cache", "TopologicalSorter", "lcm", "nextafter", "ulp", "randbytes",
    "BooleanOptionalAction", "kw_only", "bit_count", "aiter", "anext", "tomllib",
}  # fmt: skip


def test_uses_nothing_newer_than_python_3_8():
    tree = ast.parse(HELPER.read_text(), feature_version=(3, 8))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.keyword)}  # kw_only=...
    assert not names & NEWER_THAN_3_8
    # builtins subscripted (list[int]) fail at run time before 3.9 outside annotations
    subscripted = {
        n.value.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
    }
    assert not subscripted & {"list", "dict", "set", "tuple", "frozenset", "type"}


def test_runs_as_a_plain_module_in_a_fresh_interpreter(tmp_path):
    """As in a container: found by path, without dlaasd or site packages (-I -S), and
    leaving no __pycache__ in helpers/ (-B)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from dlaas_emetrics import report; report(step=1, group='train', loss=0.5)"
    )
    env = {"LOG_DIR": str(tmp_path), "TRAINING_ID": "t"}
    subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code, str(HELPER.parent)],
        env=env,
        check=True,
        cwd=tmp_path,
    )
    (record,) = lines(tmp_path / "evaluation-metrics.txt")
    assert record["grouplabel"] == "train" and record["meta"]["training_id"] == "t"
    assert record["values"] == {"loss": {"type": "FLOAT", "value": 0.5}}
    assert abs(record["meta"]["time"] / 1000 - datetime.now(UTC).timestamp()) < 60
