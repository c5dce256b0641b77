"""A state folder left with looser modes (an older dlaasd) is tightened at start."""

from __future__ import annotations

import os
import stat

from dlaasd import filemodes


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_tighten_a_loose_state_folder(tmp_path):
    state = tmp_path / "state"
    run = state / "runs" / "training-abcdefghi"
    (run / "job" / "results").mkdir(parents=True)
    (state / "runs" / ".incoming").mkdir()
    (state / "cache" / "blobs").mkdir(parents=True)
    (state / "inbox").mkdir()
    for f in (state / "dlaas.db", state / "dlaas.db-wal", run / "manifest.yml", run / "model.zip"):
        f.write_text("x")
    (state / "dlaasd.sock.started").write_text("{}")
    for p in (state, state / "runs", run, run / "job", state / "cache", state / "inbox"):
        os.chmod(p, 0o755)
    for f in (state / "dlaas.db", state / "dlaas.db-wal", run / "manifest.yml", run / "model.zip"):
        os.chmod(f, 0o644)
    os.symlink("/etc/passwd", state / "runs" / "training-linkxxxxx")

    filemodes.tighten(
        state,
        keep=[state / "inbox", state / "dlaasd.sock.started"],
        owners={run.name: (1234, 1234)},
    )

    reach = 0o711 if os.geteuid() == 0 else 0o700
    assert mode(state) == reach and mode(state / "runs") == reach and mode(run) == reach
    assert mode(state / "dlaas.db") == mode(state / "dlaas.db-wal") == 0o600
    assert mode(run / "manifest.yml") == mode(run / "model.zip") == 0o600
    assert mode(run / "job") == 0o700
    assert mode(state / "cache") == mode(state / "runs" / ".incoming") == 0o700
    assert mode(state / "inbox") == 0o755  # the drop folder has its own rules
    assert mode(state / "dlaasd.sock.started") == 0o644
    assert mode("/etc/passwd") == 0o644  # a link is never followed
    if os.geteuid() == 0:
        assert os.stat(run / "job").st_uid == 1234  # the run's job folder is its owner's


def test_tighten_the_drop_folder(tmp_path):
    drop = tmp_path / "inbox"
    for sub in ("results/training-abcdefghi", ".accepted/training-abcdefghi", ".processing"):
        (drop / sub).mkdir(parents=True)
        os.chmod(drop / sub, 0o755)
    (drop / ".rejected").mkdir()
    report = drop / ".rejected" / "x.yml.error.txt"
    report.write_text("why")
    os.chmod(report, 0o644)

    filemodes.tighten_drop(drop, {"training-abcdefghi": (4321, -1)}.get)

    assert mode(drop / "results" / "training-abcdefghi") == 0o700
    assert mode(drop / ".accepted" / "training-abcdefghi") == 0o700
    assert mode(drop / ".processing") == 0o700
    assert mode(report) == 0o600
    if os.geteuid() == 0:
        assert os.stat(drop / "results" / "training-abcdefghi").st_uid == 4321


def test_a_later_start_seals_the_runs_not_ended_only(tmp_path):
    """After the first start (every_run=False) only the runs named are visited: a start
    does not walk the folders of a long history, which dlaasd made private itself. A
    link named like a run is not followed."""
    state = tmp_path / "state"
    runs = state / "runs"
    for name in ("training-active000", "training-ended0000"):
        (runs / name / "job").mkdir(parents=True)
        (runs / name / "manifest.yml").write_text("x")
        os.chmod(runs / name / "job", 0o755)
    os.symlink(tmp_path, runs / "training-linkxxxxx")
    os.chmod(tmp_path, 0o755)

    filemodes.tighten(
        state,
        keep=[],
        owners={"training-active000": (1234, 1234), "training-linkxxxxx": (1234, 1234)},
        every_run=False,
    )

    assert mode(runs / "training-active000" / "job") == 0o700
    assert mode(runs / "training-active000" / "manifest.yml") == 0o600
    assert mode(runs / "training-ended0000" / "job") == 0o755  # not visited
    assert mode(tmp_path) == 0o755  # the link is not followed
