"""The dashboard's pure parts: downsampling, series, filters, queue places, best config."""

from __future__ import annotations

import math

import yaml

from dlaasctl.ui import views


def test_a_short_series_is_sent_whole():
    assert views.downsample([1, 2, 3], [3.0, 1.0, 2.0], target=10) == ([1, 2, 3], [3.0, 1.0, 2.0])


def test_a_long_series_keeps_its_ends_and_its_spikes():
    n = 100_000
    xs = list(range(n))
    ys = [math.sin(i / 1000) for i in xs]
    ys[54_321] = 50.0  # a spike averaging would hide
    ys[77_777] = -50.0
    dx, dy = views.downsample(xs, ys, target=2000)
    assert len(dx) <= 2000 and dx == sorted(dx)
    assert dx[0] == 0 and dx[-1] == n - 1
    assert 50.0 in dy and -50.0 in dy
    assert all(ys[x] == y for x, y in zip(dx, dy, strict=True))


def test_series_group_points_by_name_in_step_order():
    points = [
        {"seq": 1, "step": 2, "name": "loss", "value": 0.5},
        {"seq": 2, "step": 1, "name": "loss", "value": 0.9},
        {"seq": 3, "step": None, "name": "acc", "value": 0.1},
    ]
    out = views.series(points)
    assert out["loss"] == {"x": [1, 2], "y": [0.9, 0.5], "count": 2}
    assert out["acc"] == {"x": [3], "y": [0.1], "count": 1}  # no step: its seq


def test_curves_share_one_x_axis_with_gaps():
    out = views.aligned({"a": [(1, 1.0), (2, 2.0)], "b": [(2, 5.0), (3, 6.0)]})
    assert out == {"x": [1, 2, 3], "runs": {"a": [1.0, 2.0, None], "b": [None, 5.0, 6.0]}}


def test_filters_match_parts_of_owner_name_or_id_ignoring_case():
    run = {"id": "training-abc123def", "owner": "Alice", "name": "ResNet-50"}
    assert views.matches(run, "ali", "resnet")
    assert views.matches(run, "", "abc123")
    assert not views.matches(run, "bob", "")
    assert not views.matches(run, "", "vgg")


def test_queue_places_count_from_the_oldest():
    newest_first = [{"id": "c"}, {"id": "b"}]  # the two newest of 5 queued
    assert views.queue_positions(newest_first, 5) == {"c": 5, "b": 4}


def test_the_best_trials_hyperparameters_as_yaml():
    e = {
        "best_run": "t2",
        "runs": [
            {"id": "t2", "hyperparameters": {"lr": 0.01, "opt": "adam"}},
            {"id": "t1", "hyperparameters": {"lr": 0.1, "opt": "sgd"}},
        ],
    }
    assert yaml.safe_load(views.best_yaml(e)) == {"hyperparameters": {"lr": 0.01, "opt": "adam"}}
    assert views.best_yaml({"best_run": None, "runs": []}) == ""


def test_objective_against_a_word_valued_hyperparameter_uses_indexes():
    trials = [
        {"id": "a", "hyperparameters": {"opt": "sgd"}, "objective_value": 1.0},
        {"id": "b", "hyperparameters": {"opt": "adam"}, "objective_value": 2.0},
        {"id": "c", "hyperparameters": {}, "objective_value": 3.0},
        {"id": "d", "hyperparameters": {"opt": "sgd"}, "objective_value": None},
    ]
    out = views.objective_vs(trials, "opt")
    assert out["labels"] == ["adam", "sgd"]
    assert (out["x"], out["y"], out["runs"]) == ([0.0, 1.0], [2.0, 1.0], ["b", "a"])


def test_objective_against_a_number_includes_zero():
    trials = [
        {"id": "a", "hyperparameters": {"dropout": 0}, "objective_value": 1.0},
        {"id": "b", "hyperparameters": {"dropout": 0.5}, "objective_value": 2.0},
    ]
    out = views.objective_vs(trials, "dropout")
    assert (out["x"], out["y"], out["labels"]) == ([0.0, 0.5], [1.0, 2.0], [])


def test_thinning_keeps_each_metrics_shape_and_the_newest_point():
    points = []
    for i in range(10_000):  # two metrics, interleaved, as a training reports them
        points.append({"seq": 2 * i + 1, "step": i, "name": "loss", "value": 1 / (i + 1)})
        points.append({"seq": 2 * i + 2, "step": i, "name": "acc", "value": i % 7})
    thinned = views.thin(points, 200)
    assert [p["seq"] for p in thinned] == sorted(p["seq"] for p in thinned)
    assert thinned[-1] == points[-1]  # where a stream of newer points goes on from
    for name in ("loss", "acc"):
        mine = [p for p in thinned if p["name"] == name]
        assert len(mine) <= 200
        assert mine[0]["step"] == 0 and mine[-1]["step"] == 9_999
    assert {p["value"] for p in thinned if p["name"] == "acc"} == set(range(7))  # the extremes
    assert views.thin(points[:50], 200) == points[:50]
