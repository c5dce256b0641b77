"""Experiment files: parsing, the search space, ranking, ASHA's stopping rule."""

from __future__ import annotations

import pytest

from dlaasd import sweep
from dlaasd.sweep import Asha, Method, parse, rank, rungs, trials, value_at

BASE = """
name: sweep
manifest: ../m/manifest.yml
hyper_parameters:
  - name: lr
    double_values: [0.1, 0.01]
  - name: hidden
    int_range: {min_value: 16, max_value: 64, power: 2}
method: grid
objective:
  name: accuracy
  maximize_or_minimize: maximize
"""


def test_grid_expands_every_combination_in_order():
    e = parse(BASE)
    got = trials(e)
    assert len(got) == 6
    assert got[0] == {"lr": 0.1, "hidden": 16} and got[-1] == {"lr": 0.01, "hidden": 64}
    assert {t["hidden"] for t in got} == {16, 32, 64}


@pytest.mark.parametrize(
    "hp, expected",
    [
        (
            {"name": "x", "double_range": {"min_value": 0.1, "max_value": 0.5, "step": 0.1}},
            [0.1, 0.2, 0.3, 0.4, 0.5],
        ),
        (
            {"name": "x", "double_range": {"min_value": 0.001, "max_value": 1, "power": 10}},
            [0.001, 0.01, 0.1, 1.0],
        ),
        ({"name": "x", "int_range": {"min_value": 1, "max_value": 10, "step": 3}}, [1, 4, 7, 10]),
        ({"name": "x", "string_values": ["adam", "sgd"]}, ["adam", "sgd"]),
        (  # a negative max is reached too, despite float steps
            {"name": "x", "double_range": {"min_value": -0.7, "max_value": -0.1, "step": 0.2}},
            [-0.7, -0.5, -0.3, -0.1],
        ),
    ],
)
def test_range_values(hp, expected):
    text = BASE.replace(
        "  - name: lr\n    double_values: [0.1, 0.01]\n  - name: hidden\n"
        "    int_range: {min_value: 16, max_value: 64, power: 2}\n",
        "  - " + __import__("json").dumps(hp) + "\n",
    )
    e = parse(text)
    assert sweep.values(e.hyper_parameters[0]) == expected
    assert len(trials(e)) == len(expected)


def test_random_is_reproducible_with_a_seed_and_stays_in_range():
    text = BASE.replace("method: grid", "method: {name: random, num_trials: 20, seed: 42}")
    text = text.replace("power: 2}", "}")
    a, b = trials(parse(text)), trials(parse(text))
    assert a == b and len(a) == 20
    assert all(t["lr"] in (0.1, 0.01) and 16 <= t["hidden"] <= 64 for t in a)
    assert isinstance(a[0]["hidden"], int)
    other = trials(parse(text.replace("seed: 42", "seed: 7")))
    assert other != a


def test_random_over_a_stepped_range_reaches_its_whole_length():
    # 10,000 steps: more than a grid may list, all of them possible picks
    text = BASE.replace("method: grid", "method: {name: random, num_trials: 200, seed: 3}")
    text = text.replace("power: 2}", "}").replace(
        "double_values: [0.1, 0.01]", "int_range: {min_value: 0, max_value: 20000, step: 2}"
    )
    picks = [t["lr"] for t in trials(parse(text))]
    assert all(isinstance(v, int) and v % 2 == 0 and 0 <= v <= 20000 for v in picks)
    assert max(picks) > 10000  # not only the first 500 steps


def test_log_uniform_random_for_a_power_range():
    text = BASE.replace("method: grid", "method: {name: random, num_trials: 200, seed: 1}")
    text = text.replace(
        "double_values: [0.1, 0.01]", "double_range: {min_value: 0.0001, max_value: 1, power: 10}"
    )
    values = [t["lr"] for t in trials(parse(text))]
    assert all(0.0001 <= v <= 1 for v in values)
    assert sum(v < 0.01 for v in values) > 60  # half the decades are below 0.01


@pytest.mark.parametrize(
    "change, path, words",
    [
        (("method: grid", "method: gird"), "method.name", "did you mean 'grid'"),
        (("method: grid", "method: {name: random}"), "method.num_trials", "missing"),
        (
            ("maximize_or_minimize: maximize", "maximize_or_minimize: up"),
            "objective.maximize_or_minimize",
            "maximize, minimize",
        ),
        (("name: lr", "name: 1lr"), "hyper_parameters[0].name", "letters"),
        (("name: lr", "name: MODEL_DIR"), "hyper_parameters[0].name", "set by dlaasd"),
        (("name: hidden", "name: lr"), "hyper_parameters[1].name", "twice"),
        (
            ("double_values: [0.1, 0.01]", "double_values: []"),
            "hyper_parameters[0].double_values",
            "empty",
        ),
        (("power: 2}", "}"), "hyper_parameters[1].int_range", "step or power"),
        (("min_value: 16", "min_value: 100"), "hyper_parameters[1].int_range", "larger"),
        (("hyper_parameters:", "hyperparameters:"), "hyperparameters", "did you mean"),
        (("objective:\n  name: accuracy\n", "objective:\n"), "objective.name", "missing"),
    ],
)
def test_bad_experiment_files(change, path, words):
    with pytest.raises(sweep.ExperimentError) as info:
        parse(BASE.replace(*change))
    problems = {p.path: p for p in info.value.problems}
    assert path in problems, [str(p) for p in info.value.problems]
    assert words in problems[path].message
    assert info.value.code == "C101"


def test_too_many_trials_refused():
    text = BASE.replace(
        "double_values: [0.1, 0.01]", "double_range: {min_value: 0.001, max_value: 1, step: 0.001}"
    )
    with pytest.raises(sweep.ExperimentError) as info:
        parse(text)
    assert "trials" in str(info.value) and "random" in str(info.value)


def test_every_problem_listed_at_once():
    text = BASE.replace("method: grid", "method: bayes").replace("name: lr", "name: 1lr")
    with pytest.raises(sweep.ExperimentError) as info:
        parse(text.replace("maximize_or_minimize: maximize", "maximize_or_minimize: up"))
    assert len(info.value.problems) >= 3


def test_asha_without_num_trials_searches_the_grid():
    e = parse(BASE.replace("method: grid", "method: {name: asha, reduction_factor: 2}"))
    assert trials(e) == trials(parse(BASE))
    random_asha = parse(
        BASE.replace("method: grid", "method: {name: asha, num_trials: 4, seed: 1}")
    )
    assert len(trials(random_asha)) == 4


def test_rank_maximize_and_minimize():
    values = {"a": 0.5, "b": 0.9, "c": None, "d": 0.7}
    assert rank(values, maximize=True) == ["b", "d", "a", "c"]
    assert rank(values, maximize=False) == ["a", "d", "b", "c"]


def test_rungs():
    assert rungs(Method("asha", 9, None, 3, 1, 30)) == [1, 3, 9, 27]
    assert rungs(Method("asha", 9, None, 2, 2, 10)) == [2, 4, 8]


def test_value_at_takes_the_first_point_at_or_after_the_step():
    curve = [(1, 0.1), (3, 0.3), (5, 0.5)]
    assert value_at(curve, 2) == 0.3 and value_at(curve, 5) == 0.5 and value_at(curve, 6) is None


def test_asha_stops_trials_outside_the_top_and_keeps_the_best():
    asha = Asha(Method("asha", 4, None, 2, 2, None), maximize=True)
    curves = {"good": [(1, 0.5), (2, 0.8)]}
    assert asha.stops(curves, {"good"}) == []  # alone at the rung: kept
    curves["bad"] = [(1, 0.2), (2, 0.3)]
    (stop,) = asha.stops(curves, {"good", "bad"})
    assert stop.run_id == "bad" and stop.rung == 2 and stop.cutoff == 0.8
    assert "stopped early" in stop.reason("accuracy")
    curves["best"] = [(2, 0.9)]
    assert asha.stops(curves, {"good", "best"}) == []  # decided once; the best goes on
    curves["worse"] = [(2, 0.1), (4, 0.2), (8, 0.3)]  # many rungs at once: stopped at the first
    (stop,) = asha.stops(curves, {"worse"})
    assert stop.rung == 2


def test_asha_minimize():
    asha = Asha(Method("asha", 4, None, 2, 1, None), maximize=False)
    curves = {"a": [(1, 0.2)], "b": [(1, 0.9)]}
    stops = asha.stops(curves, {"a", "b"})
    assert [s.run_id for s in stops] == ["b"]
