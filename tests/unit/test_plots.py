"""dlaasctl.plots: PNG charts of a run's metrics and of an experiment's trials."""

from __future__ import annotations

import math
import struct
import subprocess
import sys

import pytest

from dlaasctl.plots import BEST_COLOR, _label, plot_experiment, plot_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """Width and height of a valid PNG file (signature, IHDR first, IEND last)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def red_pixels(path) -> int:
    """Pixels of the best trial's colour."""
    import numpy as np
    from matplotlib.image import imread

    image = imread(path)[..., :3]
    red = np.array([int(BEST_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image - red).max(axis=-1) < 0.05).sum())


def curve(n: int, f) -> list[tuple[int, float]]:
    return [(step, f(step)) for step in range(1, n + 1)]


def trial(i: int, status="COMPLETED", points=12, halted=False, **params) -> dict:
    c = [[s, 0.95 - 0.05 * i - 0.5 * math.exp(-s / 3)] for s in range(1, points + 1)]
    return {
        "id": f"run-{i}",
        "status": status,
        "hyperparameters": params or {"lr": 0.001 * (i + 1), "hidden": 64 * (i + 1)},
        "objective_value": max(v for _, v in c) if c else None,
        "curve": c,
        "halted_early": halted,
    }


def experiment(runs: list[dict], best: str | None = "run-0", goal="maximize") -> dict:
    return {
        "id": "exp-7",
        "name": "digits sweep",
        "objective": {"name": "accuracy", "goal": goal},
        "best_run": best,
        "runs": runs,
    }


def test_plot_metrics(tmp_path):
    series = {
        "train.loss": curve(200, lambda s: 2 * math.exp(-s / 40) + 0.1),
        "train.accuracy": curve(200, lambda s: 1 - math.exp(-s / 30)),
        "test.loss": curve(20, lambda s: 2 * math.exp(-s / 4)),
        "test.accuracy": curve(20, lambda s: 1 - math.exp(-s / 3)),
        "lr": curve(10, lambda s: 0.01 * 0.9**s),
    }
    path = tmp_path / "metrics.png"
    plot_metrics("run-abc", series, str(path))
    width, height = png_size(path)
    assert 1000 <= width <= 2500 and 500 <= height <= 2000
    assert width > height  # a 3 x 2 grid
    assert path.stat().st_size > 30_000


@pytest.mark.parametrize(
    "series",
    [
        {},
        {"loss": []},
        {"loss": [(1, 0.5)]},
        {"loss": [(3, 0.1), (1, 0.3), (2, 0.2)], "empty": []},  # unsorted
        {"loss": [(1, math.nan), (2, math.inf), (3, 0.5), (4, -math.inf)]},
        {"only_nan": [(1, math.nan)]},
        {f"m{i}": curve(50, lambda s, i=i: math.sin(s / 10 + i)) for i in range(13)},
    ],
    ids=["none", "empty", "one-point", "unsorted", "non-finite", "all-nan", "13-metrics"],
)
def test_plot_metrics_edge_cases(tmp_path, series):
    path = tmp_path / "metrics.png"
    plot_metrics("run-x", series, str(path))
    width, height = png_size(path)
    assert 600 <= width <= 3000 and 400 <= height <= 4000


def test_plot_experiment(tmp_path):
    runs = [trial(i) for i in range(5)]
    runs.append(trial(5, status="HALTED", points=4, halted=True))
    runs.append(trial(6, status="FAILED", points=0))
    path = tmp_path / "experiment.png"
    plot_experiment(experiment(runs), str(path))
    width, height = png_size(path)
    assert 900 <= width <= 2000 and 500 <= height <= 1500
    assert path.stat().st_size > 30_000
    assert red_pixels(path) > 1000  # the best trial stands out

    plot_experiment(experiment(runs, best=None), str(path))
    assert red_pixels(path) < 50  # nothing else is drawn in its colour


def test_plot_experiment_minimize_and_many_trials(tmp_path):
    runs = [trial(i, halted=i % 4 == 3, points=5 if i % 4 == 3 else 12) for i in range(30)]
    for run in runs:
        run["curve"] = [[s, 1 - v] for s, v in run["curve"]]
        run["objective_value"] = min(v for _, v in run["curve"])
    path = tmp_path / "experiment.png"
    plot_experiment(experiment(runs, goal="minimize"), str(path))
    width, height = png_size(path)
    assert height >= width  # the legend went below the axes
    assert red_pixels(path) > 1000


@pytest.mark.parametrize(
    "exp",
    [
        experiment([]),
        experiment([trial(0, points=0), trial(1, status="FAILED", points=0)]),
        experiment([trial(0)], best="run-unknown"),
        {"id": "e", "runs": [{"id": "r1"}, {"id": "r2", "curve": None}]},
        {"id": "e", "runs": [{"id": "r1", "curve": [[1, None], [2, "x"], [3]]}]},
        experiment([{**trial(0), "hyperparameters": {"optimizer": "adam", "x": [1, 2]}}]),
    ],
    ids=["no-runs", "no-points", "unknown-best", "bare-runs", "bad-points", "odd-params"],
)
def test_plot_experiment_edge_cases(tmp_path, exp):
    path = tmp_path / "experiment.png"
    plot_experiment(exp, str(path))
    png_size(path)


def test_legend_labels():
    run = trial(0, lr=0.003, hidden=128)
    assert _label(run, False, "accuracy", {}) == (
        "lr=0.003 hidden=128 (COMPLETED, accuracy=0.9408)"
    )
    assert _label(run, True, "accuracy", {"hidden": 128}).startswith("best: lr=0.003 (")
    halted = trial(1, status="HALTED", halted=True, points=0, lr=1e-4)
    assert _label(halted, False, "loss", {}) == "lr=0.0001 (halted early, no points)"
    assert _label({"id": "run-9"}, False, "loss", {}) == "run-9 (?, no points)"


def test_matplotlib_is_imported_only_when_drawing(tmp_path):
    code = f"""
import sys
from dlaasctl import plots
assert "matplotlib" not in sys.modules
plots.plot_metrics("r", {{"loss": [(1, 0.5)]}}, {str(tmp_path / "a.png")!r})
assert "matplotlib" in sys.modules and "matplotlib.pyplot" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True)
