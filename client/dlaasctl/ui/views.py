"""What the pages show, computed from the daemon's JSON: pure functions, unit-tested."""

from __future__ import annotations

import math
from collections.abc import Iterable

import yaml

MAX_POINTS = 2000  # per series sent to a browser; more is downsampled


def kept(ys: list, target: int = MAX_POINTS) -> list[int]:
    """The indexes of at most `target` points that draw like all of them: the series is
    cut into buckets and each keeps its first, lowest, highest and last point (spikes
    survive, unlike with averaging), in order; the last point is always kept."""
    n = len(ys)
    if n <= target:
        return list(range(n))
    buckets = max(1, target // 4)
    size = n / buckets
    keep: list[int] = []
    for b in range(buckets):
        lo, hi = int(b * size), min(n, int((b + 1) * size))
        if lo >= hi:
            continue
        finite = [i for i in range(lo, hi) if ys[i] is not None and math.isfinite(ys[i])]
        picks = {lo, hi - 1}
        if finite:
            picks.add(min(finite, key=ys.__getitem__))
            picks.add(max(finite, key=ys.__getitem__))
        keep += sorted(picks)
    return keep


def downsample(xs: list, ys: list, target: int = MAX_POINTS) -> tuple[list, list]:
    """`kept` applied to a series given as its x and y values."""
    keep = kept(ys, target)
    return [xs[i] for i in keep], [ys[i] for i in keep]


def thin(points: list[dict], target: int) -> list[dict]:
    """A run's metric points (in the order they came), each metric downsampled to about
    `target` points; the newest of each stays, so the last `seq` is the same."""
    by_name: dict[str, list[dict]] = {}
    for p in points:
        by_name.setdefault(p["name"], []).append(p)
    out = []
    for pts in by_name.values():
        out += [pts[i] for i in kept([p["value"] for p in pts], target)]
    return sorted(out, key=lambda p: p["seq"])


def series(points: Iterable[dict], target: int = MAX_POINTS) -> dict[str, dict]:
    """A run's metric points as one series per name, by step (reported order kept for
    equal steps), each downsampled to `target` points: {name: {x, y, count}}."""
    by_name: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        x = p["step"] if p.get("step") is not None else p["seq"]
        by_name.setdefault(p["name"], []).append((x, p["value"]))
    out = {}
    for name, pts in sorted(by_name.items()):
        pts.sort(key=lambda xy: xy[0])  # stable: a step reported twice keeps its order
        xs, ys = downsample([x for x, _ in pts], [y for _, y in pts], target)
        out[name] = {"x": xs, "y": ys, "count": len(pts)}
    return out


def aligned(curves: dict[str, list], target: int = MAX_POINTS) -> dict:
    """Several runs' (step, value) curves on one shared x axis (the union of their steps,
    each downsampled first), None where a run has no point: what one chart draws."""
    per_run = {}
    for run_id, curve in curves.items():
        pts = sorted(((s if s is not None else i), v) for i, (s, v) in enumerate(curve))
        xs, ys = downsample([s for s, _ in pts], [v for _, v in pts], target)
        per_run[run_id] = dict(zip(xs, ys, strict=True))
    xs = sorted({x for pts in per_run.values() for x in pts})
    return {"x": xs, "runs": {rid: [pts.get(x) for x in xs] for rid, pts in per_run.items()}}


def matches(run: dict, owner: str, name: str) -> bool:
    """The runs page's owner and name filters: case-blind parts of either."""
    return (not owner or owner.lower() in (run.get("owner") or "").lower()) and (
        not name
        or name.lower() in (run.get("name") or "").lower()
        or name.lower() in run["id"].lower()
    )


def queue_positions(newest_first: list[dict], total: int) -> dict[str, int]:
    """Each QUEUED run's place in the queue, 1 = next to start (submit order), from the
    newest `len(newest_first)` of the `total` queued runs."""
    return {r["id"]: total - i for i, r in enumerate(newest_first)}


def best_yaml(experiment: dict) -> str:
    """The best trial's hyperparameters, ready to paste into a manifest."""
    best = experiment.get("best_run")
    trial = next((t for t in experiment.get("runs", []) if t["id"] == best), None)
    if trial is None:
        return ""
    return yaml.safe_dump({"hyperparameters": trial["hyperparameters"]}, sort_keys=True)


def hyperparameter_names(trials: list[dict]) -> list[str]:
    return sorted({k for t in trials for k in (t.get("hyperparameters") or {})})


def objective_vs(trials: list[dict], name: str) -> dict:
    """One scatter: the objective against hyperparameter `name` (numbers only; a choice
    among words is drawn at its index, with the words as labels)."""
    given: list[tuple[object, float, str]] = []
    for t in trials:
        x = (t.get("hyperparameters") or {}).get(name)
        if x is not None and t.get("objective_value") is not None:
            given.append((x, t["objective_value"], t["id"]))
    words = sorted({str(x) for x, _, _ in given if _number(x) is None})
    pts = sorted((_at(x, words), y, rid) for x, y, rid in given)
    return {
        "name": name,
        "x": [p[0] for p in pts],
        "y": [p[1] for p in pts],
        "runs": [p[2] for p in pts],
        "labels": words,
    }


def _at(x: object, words: list[str]) -> float:
    """Where x goes on the axis: its value, or a word's index."""
    n = _number(x)
    return n if n is not None else float(words.index(str(x)))


def _number(x: object) -> float | None:
    """x as a number, if it is one (a bool is a word here)."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None
