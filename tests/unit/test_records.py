"""dlaasd.records: what the database's JSON columns hold, typed; and the database hands
out typed records, not dicts: a run whole (`get`) or as the queue shows it (`runs`,
`in_status`), an experiment, a step of a run's history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dlaasd.codes import Status
from dlaasd.database import Database
from dlaasd.errors import Ambiguous, NotFound
from dlaasd.records import Event, Experiment, Outcome, Run, RunSummary, StagingFigures


def test_an_outcome_survives_its_column():
    out = Outcome("FAILED", "timed out", "C203", 137)
    assert Outcome.from_json(out.to_json()) == out


def test_an_older_outcome_without_codes_reads():
    assert Outcome.from_json({"status": "COMPLETED", "message": "done"}) == Outcome(
        "COMPLETED", "done"
    )


def test_staging_figures_default_to_zero_and_ignore_unknown_keys():
    figures = StagingFigures.from_json({"bytes_downloaded": 5, "from_the_future": 1})
    assert figures == StagingFigures(bytes_downloaded=5)
    assert StagingFigures.from_json(None) == StagingFigures()
    assert set(figures.to_json()) == {
        "bytes_downloaded",
        "files_downloaded",
        "cache_hits",
        "download_seconds",
        "bytes_uploaded",
        "files_uploaded",
        "upload_seconds",
    }


ROW = {
    "id": "training-abcdefghi",
    "name": "mnist",
    "owner_uid": 1000,
    "owner_name": "alice",
    "status": "QUEUED",
    "status_message": "waiting for resources",
    "gpus": [],
    "gpu_count": 1,
    "cpus": 2.0,
    "memory": 1 << 30,
    "learners": 1,
    "framework": "pytorch 1.13",
    "image": "dlaas/pytorch:1.13",
    "manifest": "name: mnist\n",
    "source": "api",
    "staging": {},
    "warnings": ["a note"],
}


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "dlaas.db")


def test_a_run_comes_back_as_a_typed_record(db: Database):
    db.insert_run(ROW)
    db.transition(ROW["id"], Status.DOWNLOADING, "placed", gpus=["GPU-1"])
    run = db.get(ROW["id"])
    assert isinstance(run, Run)
    assert run.status is Status.DOWNLOADING and run.gpus == ["GPU-1"]
    assert run.warnings == ["a note"] and run.staging == StagingFigures()
    assert run.halt_requested is False
    assert [e.status for e in db.events(run.id)] == [Status.QUEUED, Status.DOWNLOADING]
    assert all(isinstance(e, Event) for e in db.events(run.id))
    (listed,), total = db.runs()
    assert total == 1 and type(listed) is RunSummary and not hasattr(listed, "manifest")
    assert db.in_status([Status.DOWNLOADING])[0].id == run.id


def test_nulls_of_an_older_database_read_as_defaults(db: Database, tmp_path: Path):
    db.insert_run({k: v for k, v in ROW.items() if k not in ("warnings", "staging", "source")})
    conn = sqlite3.connect(tmp_path / "dlaas.db")  # as a dlaasd before these columns left it
    with conn:
        conn.execute("update runs set halt_requested = null, gpus = null")
    conn.close()
    run = db.get(ROW["id"])
    assert run.warnings == [] and run.staging == StagingFigures() and run.source == ""
    assert run.gpus == [] and run.halt_requested is False


def test_experiments_and_missing_ids(db: Database):
    db.insert_experiment(
        {"id": "experiment-abcdefghi", "name": "sweep", "owner_uid": 1000, "owner_name": "a"}
    )
    assert isinstance(db.experiment("experiment-abcdefghi"), Experiment)
    assert [e.id for e in db.experiments()] == ["experiment-abcdefghi"]
    with pytest.raises(NotFound):
        db.get("training-nothere00")
    db.insert_run(ROW)
    db.insert_run({**ROW, "id": "training-abcdefxyz"})
    with pytest.raises(Ambiguous) as exc:
        db.resolve("abcdef")
    assert exc.value.matches == ["training-abcdefghi", "training-abcdefxyz"]


def test_updates_and_notes_are_committed_and_refuse_a_missing_run(db: Database, tmp_path: Path):
    db.insert_run(ROW)
    db.update(ROW["id"], staging={"files_downloaded": 3}, exit_code=0)
    db.note(ROW["id"], "downloading: 1 of 3 files")
    with db.db.conn:  # a transition inside an open transaction stays in it
        db.transition(ROW["id"], Status.COMPLETED, "training completed", exit_code=0)
    again = Database(tmp_path / "dlaas.db")  # another connection sees it all
    run = again.get(ROW["id"])
    assert run.staging.files_downloaded == 3 and run.exit_code == 0
    assert run.status is Status.COMPLETED and run.completed
    assert [e.message for e in again.events(run.id)][-1] == "training completed"
    usage = again.usage(run.id)
    assert usage and usage["status"] == "COMPLETED"
    db.transition(ROW["id"], Status.FAILED, "found broken later")  # its usage row follows
    assert (again.usage(run.id) or {})["status"] == "FAILED"
    for call in (
        lambda: db.update("training-nothere00", exit_code=1),
        lambda: db.note("training-nothere00", "x"),
    ):
        with pytest.raises(NotFound):
            call()
