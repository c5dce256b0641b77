"""Experiment files: a training manifest, a search space, a method and an objective.
Pure: parsing, expanding the search into trials, ranking, and ASHA's stopping rule.

Watson ML's names: `hyper_parameters` entries with `double_range` / `int_range`
(`min_value`, `max_value`, `step` or `power`) or `double_values` / `int_values` /
`string_values`; `objective` with `maximize_or_minimize`.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from . import schema
from .codes import Code
from .manifest import ENV_NAME, RESERVED_ENV, PositiveInt
from .schema import Parse, Problem, Rule, SchemaError

MAX_TRIALS = 500


@dataclass
class Range:
    min_value: float = schema.spec(help="the smallest value")
    max_value: float = schema.spec(help="the largest value")
    step: float | None = None  # min, min+step, ... <= max
    power: float | None = None  # min, min*power, min*power^2, ... <= max


def _hp_name(value: object) -> str:
    if not isinstance(value, str) or not ENV_NAME.match(value):
        raise ValueError("letters, digits and _: it becomes an environment variable")
    if value in RESERVED_ENV or value == "SUBID":
        raise ValueError(f"{value} is set by dlaasd itself; choose another name")
    return value


HpName = Annotated[str, Parse(_hp_name, "a name such as learning_rate")]


@dataclass
class HyperParameter:
    name: HpName = schema.spec(help="the name, also the environment variable the trial gets")
    double_range: Range | None = None
    int_range: Range | None = None
    double_values: list[float] | None = None
    int_values: list[int] | None = None
    string_values: list[str] | None = None


@dataclass
class Method:
    name: Literal["grid", "random", "asha"] = schema.spec(help="grid, random or asha")
    num_trials: PositiveInt | None = None  # random; asha (without it, asha tries the grid)
    seed: int | None = None
    reduction_factor: Annotated[int, Rule(lambda v: v >= 2, "a whole number, 2 or more")] = 3
    min_steps: PositiveInt = 1  # asha: the first rung
    max_steps: PositiveInt | None = None  # asha: no rung beyond this


@dataclass
class Objective:
    name: str = schema.spec(help="the metric to rank by, e.g. accuracy")
    maximize_or_minimize: Literal["maximize", "minimize"] = "maximize"


@dataclass
class Experiment:
    name: str = schema.spec(help="a short name for the experiment")
    manifest: Any = schema.spec(help="the training manifest: a path, or the manifest inline")
    hyper_parameters: list[HyperParameter] = schema.spec(help="the search space")
    method: Method = schema.spec(help="grid, random (num_trials, seed) or asha")
    objective: Objective = schema.spec(help="the metric to rank by, and its goal")
    description: str = ""

    @property
    def maximize(self) -> bool:
        return self.objective.maximize_or_minimize == "maximize"


class ExperimentError(SchemaError):
    code = Code.BAD_MANIFEST


def parse(text: str | bytes, source: str = "experiment.yml") -> Experiment:
    """Parse and check an experiment file; ExperimentError lists every problem."""
    return schema.parse_document(
        Experiment,
        text,
        source,
        ExperimentError,
        "name, manifest, hyper_parameters, ...",
        checks=lambda e, _, lines: _checks(e, lines) if e else [],
        shorthand=_method_name,
    )


def _method_name(data: dict) -> None:
    """`method: grid` is short for `method: {name: grid}`."""
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}


def _checks(e: Experiment, lines: dict[str, int]) -> list[Problem]:
    problems: list[Problem] = []

    def fail(path: str, message: str) -> None:
        problems.append(Problem(path, message, schema.line_of(lines, path)))

    if not isinstance(e.manifest, str | dict):
        fail("manifest", "expected the path of a manifest.yml, or the manifest inline")
    if not e.hyper_parameters:
        fail("hyper_parameters", "is empty; list at least one hyperparameter to search")
    seen = set()
    for i, hp in enumerate(e.hyper_parameters):
        base = f"hyper_parameters[{i}]"
        if hp.name in seen:  # the name's form is checked by its type, HpName
            fail(f"{base}.name", f"{hp.name!r} is listed twice")
        seen.add(hp.name)
        kinds = [
            k
            for k in ("double_range", "int_range", "double_values", "int_values", "string_values")
            if getattr(hp, k) is not None
        ]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            fail(
                base,
                f"give exactly one of double_range, int_range, double_values, "
                f"int_values, string_values (found: {found})",
            )
            continue
        kind = kinds[0]
        if kind.endswith("_values") and not getattr(hp, kind):
            fail(f"{base}.{kind}", "is empty; list at least one value")
        if kind.endswith("_range"):
            r = getattr(hp, kind)
            where = f"{base}.{kind}"
            if r.min_value > r.max_value:
                fail(where, f"min_value {r.min_value} is larger than max_value {r.max_value}")
            if r.step is not None and r.power is not None:
                fail(where, "give step or power, not both")
            if r.step is not None and r.step <= 0:
                fail(f"{where}.step", "must be more than 0")
            if r.power is not None and (r.power <= 1 or r.min_value <= 0):
                fail(
                    f"{where}.power",
                    "needs power > 1 and min_value > 0 (values grow min, min*power, ...)",
                )
            if kind == "int_range" and r.step is not None and r.step != int(r.step):
                fail(f"{where}.step", "must be a whole number for int_range")
            if _is_grid(e.method) and r.step is None and r.power is None:
                fail(where, "a grid needs step or power to know which values to try")
    m = e.method
    if m.name == "random" and m.num_trials is None:
        fail("method.num_trials", "missing; method random needs the number of trials")
    if m.max_steps is not None and m.max_steps < m.min_steps:
        fail("method.max_steps", "is smaller than min_steps")
    if not problems:
        n = count_trials(e)
        if n > MAX_TRIALS:
            fail(
                "method",
                f"the search has {n} trials; at most {MAX_TRIALS} (narrow the "
                "ranges, or use method random with num_trials)",
            )
    return problems


# --- the search ----------------------------------------------------------------------


def values(hp: HyperParameter) -> list[Any]:
    """Every value a grid tries for `hp`."""
    if hp.double_values is not None:
        return list(hp.double_values)
    if hp.int_values is not None:
        return list(hp.int_values)
    if hp.string_values is not None:
        return list(hp.string_values)
    r = hp.double_range or hp.int_range
    assert r is not None, "the schema asks for a range where no values are listed"
    is_int = hp.int_range is not None
    top = r.max_value + 1e-9 * max(1.0, abs(r.max_value))  # float steps may overshoot max
    out: list[Any] = []
    v, k = r.min_value, 0
    while v <= top and len(out) <= MAX_TRIALS:
        out.append(int(round(v)) if is_int else _tidy(v))
        k += 1
        if r.step is not None:
            v = r.min_value + k * r.step
        else:
            assert r.power is not None, "the schema asks for a step or a power"
            v = r.min_value * r.power**k
    return list(dict.fromkeys(out))


def _tidy(v: float) -> float:
    return float(f"{v:.12g}")  # 0.30000000000000004 -> 0.3


def sample(hp: HyperParameter, rng: random.Random) -> Any:
    """One random value for `hp`: from the listed values, or within the range (uniform;
    log-uniform for a range with power)."""
    r = hp.double_range or hp.int_range
    if r is None:
        return rng.choice(values(hp))
    if r.step is not None:  # min + k*step for any k (a grid's list stops at MAX_TRIALS)
        last = math.floor((r.max_value - r.min_value) / r.step + 1e-9)
        v = r.min_value + r.step * rng.randint(0, last)
    elif r.power is not None:
        v = math.exp(rng.uniform(math.log(r.min_value), math.log(r.max_value)))
    elif hp.int_range is not None:
        return rng.randint(int(math.ceil(r.min_value)), int(math.floor(r.max_value)))
    else:
        v = rng.uniform(r.min_value, r.max_value)
    return int(round(v)) if hp.int_range is not None else _tidy(v)


def _is_grid(m: Method) -> bool:
    """asha without num_trials stops early over the whole grid; with it, over random ones."""
    return m.name == "grid" or (m.name == "asha" and m.num_trials is None)


def count_trials(e: Experiment) -> int:
    if _is_grid(e.method):
        return math.prod(len(values(hp)) for hp in e.hyper_parameters)
    return e.method.num_trials or 0


def trials(e: Experiment) -> list[dict[str, Any]]:
    """The hyperparameters of each trial, in the order they are submitted."""
    names = [hp.name for hp in e.hyper_parameters]
    if _is_grid(e.method):
        combos = itertools.product(*(values(hp) for hp in e.hyper_parameters))
        return [dict(zip(names, c, strict=True)) for c in combos]
    rng = random.Random(e.method.seed)
    return [
        {hp.name: sample(hp, rng) for hp in e.hyper_parameters}
        for _ in range(e.method.num_trials or 0)
    ]


# --- ranking and early stopping --------------------------------------------------------


def rank(values_by_run: dict[str, float | None], maximize: bool) -> list[str]:
    """Run ids best first; runs without a value last."""

    def key(run_id: str) -> tuple:
        v = values_by_run[run_id]
        return (v is None, -(v or 0) if maximize else (v or 0))

    return sorted(values_by_run, key=key)


def rungs(method: Method) -> list[int]:
    """The steps at which ASHA compares trials: min_steps * reduction_factor^k."""
    out: list[int] = []
    step = method.min_steps
    while step <= (method.max_steps or 10**9) and len(out) < 40:
        out.append(step)
        step *= method.reduction_factor
    return out


@dataclass(frozen=True)
class Stop:
    run_id: str
    rung: int
    value: float
    cutoff: float
    reached: int  # how many trials reached the rung

    def reason(self, objective: str) -> str:
        return (
            f"stopped early by asha at step {self.rung}: {objective} {self.value:.4g} is not "
            f"in the top of the {self.reached} trials that reached that step "
            f"(cutoff {self.cutoff:.4g})"
        )


@dataclass
class Asha:
    """ASHA's stopping rule, applied as results arrive. A trial reaching a rung is
    compared with every trial that reached it before; outside the top
    1/reduction_factor, it stops. Each (trial, rung) is decided once."""

    method: Method
    maximize: bool
    decided: set[tuple[str, int]] = field(default_factory=set)

    def stops(self, curves: dict[str, list[tuple[int, float]]], active: set[str]) -> list[Stop]:
        """The active trials to stop now: each at the first rung it fails."""
        eta = self.method.reduction_factor
        levels = rungs(self.method)
        reached = {
            rung: {
                run_id: v
                for run_id, curve in curves.items()
                if (v := value_at(curve, rung)) is not None
            }
            for rung in levels
        }
        out = []
        for run_id in sorted(active):
            for rung in levels:
                value = reached[rung].get(run_id)
                if value is None:
                    break  # not there yet
                if (run_id, rung) in self.decided:
                    continue
                self.decided.add((run_id, rung))
                order = sorted(reached[rung].values(), reverse=self.maximize)
                cutoff = order[max(1, len(order) // eta) - 1]
                if value < cutoff if self.maximize else value > cutoff:
                    out.append(Stop(run_id, rung, value, cutoff, len(order)))
                    break
        return out


def value_at(curve: list[tuple[int, float]], step: int) -> float | None:
    """The objective a trial reported at `step` (its first point at or after it)."""
    for s, v in curve:
        if s >= step:
            return v
    return None
