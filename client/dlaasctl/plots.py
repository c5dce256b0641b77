"""PNG charts of a run's metrics and of an experiment's trials.

matplotlib is imported inside the functions (dlaasctl starts fast for the commands that
draw nothing) and draws on its Agg canvas directly: no pyplot, no GUI backend, no global
figure state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

DPI = 120
MARKERS_UP_TO = 30  # points in a series: markers on shorter ones
BEST_COLOR = "#d62728"  # red; no other trial gets it
# tab10 without its red, for up to 9 other trials
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
PALETTE += ["#bcbd22", "#17becf"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finite(points: Iterable) -> tuple[list[float], list[float]]:
    """Steps and values sorted by step, without missing or non-finite values."""
    pairs = []
    for point in points or ():
        try:
            step, value = float(point[0]), float(point[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(step) and math.isfinite(value):
            pairs.append((step, value))
    pairs.sort(key=lambda p: p[0])
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4g}"


def _grid(n: int) -> tuple[int, int]:
    cols = 1 if n <= 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    return math.ceil(n / cols), cols


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.45")
    ax.set_xticks([])
    ax.set_yticks([])


def _style(ax, steps: list[float]) -> None:
    """Grid, whole-number steps; a lone step gets room either side (not ±0.05)."""
    from matplotlib.ticker import MaxNLocator

    if steps and max(steps) - min(steps) < 2:
        ax.set_xlim(min(steps) - 1, max(steps) + 1)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)


def plot_metrics(run_id: str, series: dict[str, list[tuple[int, float]]], path: str) -> None:
    """Each metric against step, one subplot each, as a PNG at `path`."""
    names = list(series or {})
    rows, cols = _grid(max(len(names), 1))
    width = 7.0 if cols == 1 else 4.3 * cols
    fig = _figure(width, 0.7 + (4.0 if rows == 1 and cols == 1 else 3.0) * rows)
    fig.suptitle(f"run {run_id}", fontsize=13, fontweight="bold")
    if not names:
        _empty_note(fig.add_subplot(), "no metrics yet")
        fig.savefig(path, dpi=DPI, format="png")
        return
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax, name in zip(axes, names, strict=False):
        steps, values = _finite(series[name])
        ax.set_title(name, fontsize=10, loc="left", fontweight="bold")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if not steps:
            _empty_note(ax, "no points")
            continue
        ax.plot(
            steps,
            values,
            color=PALETTE[0],
            linewidth=1.6,
            marker="o" if len(steps) <= MARKERS_UP_TO else None,
            markersize=3.5,
        )
        ax.annotate(  # the latest value, readable without the axis
            f"last {_num(values[-1])}",
            xy=(1, 1.0),
            xycoords="axes fraction",
            ha="right",
            va="bottom",
            fontsize=9,
            color="0.3",
        )
        _style(ax, steps)
    for ax in axes[len(names) :]:  # the grid's unused cells
        ax.set_visible(False)
    fig.savefig(path, dpi=DPI, format="png")


def _constant_params(runs: list[dict]) -> dict:
    """Hyperparameters every trial has with the same value (said once, not in each label)."""
    params = [r.get("hyperparameters") or {} for r in runs]
    if len(params) < 2:
        return {}
    first = params[0]
    return {k: v for k, v in first.items() if all(k in p and p[k] == v for p in params[1:])}


def _label(run: dict, best: bool, objective: str, constant: dict) -> str:
    params = run.get("hyperparameters") or {}
    text = " ".join(f"{k}={_num(v)}" for k, v in params.items() if k not in constant)
    text = text or str(run.get("id", "?"))
    if len(text) > 48:
        text = text[:47] + "…"
    status = "halted early" if run.get("halted_early") else str(run.get("status") or "?")
    if not _finite(run.get("curve") or [])[0]:
        status += ", no points"
    value = run.get("objective_value")
    if value is not None:
        status += f", {objective}={_num(value)}"
    return f"{'best: ' if best else ''}{text} ({status})"


def _rank(runs: list[dict], best_run: str | None, maximize: bool) -> list[dict]:
    """Best first, then by objective value, trials without one last."""

    def key(run: dict) -> tuple[bool, bool, float]:
        value = run.get("objective_value")
        if not (isinstance(value, int | float) and math.isfinite(value)):
            return (run.get("id") != best_run, True, 0)
        return (run.get("id") != best_run, False, -value if maximize else value)

    return sorted(runs, key=key)


def _mark_best(ax, steps: list, values: list, objective: object, maximize: bool) -> None:
    """A star on the best trial's best point, with its value beside it."""
    at = values.index(max(values) if maximize else min(values))
    x, y = steps[at], values[at]
    ax.plot([x], [y], "*", color=BEST_COLOR, markersize=15, mec="white", mew=1.0, zorder=12)
    right = x > (steps[0] + steps[-1]) / 2
    ax.margins(y=0.1)  # room for the value above (below) the top (bottom) point
    ax.annotate(
        f"best {_num(objective if isinstance(objective, int | float) else y)}",
        xy=(x, y),
        xytext=(-8 if right else 8, 9 if maximize else -9),
        textcoords="offset points",
        ha="right" if right else "left",
        va="bottom" if maximize else "top",
        color=BEST_COLOR,
        fontsize=9,
        fontweight="bold",
        zorder=12,
    )


def plot_experiment(experiment: dict, path: str) -> None:
    """Every trial's objective curve against step, the best one highlighted, as a PNG."""
    objective = experiment.get("objective") or {}
    name = objective.get("name") or "objective"
    maximize = objective.get("goal", "maximize") != "minimize"
    best_run = experiment.get("best_run")
    runs = _rank(list(experiment.get("runs") or []), best_run, maximize)

    many = len(runs) > 8
    below = len(runs) > 16  # a legend this long goes below, in columns
    width = 9.5 if below else 12.5 if many else 9.0
    height = 5.5 + (0.24 * math.ceil(len(runs) / 2) + 0.4 if below else 0)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    title = f"{experiment.get('name') or 'experiment'} ({experiment.get('id', '?')})"
    ax.set_title(title, loc="left", fontsize=13, fontweight="bold")
    best = next((r for r in runs if best_run is not None and r.get("id") == best_run), None)
    constant = _constant_params(runs)
    summary = f"{len(runs)} trial{'s' if len(runs) != 1 else ''}"
    if constant:
        summary += " · all: " + " ".join(f"{k}={_num(v)}" for k, v in constant.items())
    if best is not None:
        summary += f" · best {best.get('id')}"
        if best.get("objective_value") is not None:
            summary += f": {name} = {_num(best.get('objective_value'))}"
    ax.set_title(summary, loc="right", fontsize=9.5, color="0.3")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{name} ({'higher' if maximize else 'lower'} is better)")
    if not runs:
        _empty_note(ax, "no trials yet")
        fig.savefig(path, dpi=DPI, format="png")
        return

    others = [r for r in runs if r is not best]
    colors: list[Any]  # names from the palette, or RGBA tuples from a colour map
    if len(others) <= len(PALETTE):
        colors = PALETTE[: len(others)]
    else:  # by rank: good trials dark, poor ones light
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        colors = [cmap(0.9 * i / (len(others) - 1)) for i in range(len(others))]
    color_of = {id(r): c for r, c in zip(others, colors, strict=True)}

    all_steps: list[float] = []
    for run in runs:
        is_best = run is best
        steps, values = _finite(run.get("curve") or [])
        halted = bool(run.get("halted_early"))
        style = {
            "color": BEST_COLOR if is_best else color_of[id(run)],
            "linewidth": 3.2 if is_best else 1.4,
            "linestyle": "--" if halted else "-",
            "alpha": 1.0 if is_best else 0.4 if halted else 0.85,
            "zorder": 10 if is_best else 3 if not halted else 2,
            "label": _label(run, is_best, name, constant),
        }
        if len(steps) <= MARKERS_UP_TO and (is_best or len(runs) <= 10):
            style.update(marker="o", markersize=5 if is_best else 3)
        ax.plot(steps, values, **style)
        all_steps += steps
        if halted and steps:  # where it was stopped
            ax.plot(steps[-1:], values[-1:], "x", color=style["color"], alpha=0.7, zorder=4)
        if is_best and steps:
            _mark_best(ax, steps, values, run.get("objective_value"), maximize)
    if all_steps:
        _style(ax, all_steps)
    else:
        _empty_note(ax, "no points yet")

    if below:
        fig.legend(
            *ax.get_legend_handles_labels(),
            loc="outside lower center",
            ncols=2,
            fontsize=7.5,
            frameon=False,
        )
    elif many:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.savefig(path, dpi=DPI, format="png")
