"""Metrics from a training while it runs: FfDL emetrics lines, TensorBoard event files, or
lines of the training log matched by a regular expression (the manifest's
`evaluation_metrics` says which; emetrics are always read when present).

A `MetricsReader` remembers how far it read; `poll()` returns only new points. It reads
from the start after a daemon restart, so the run's points are replaced, not doubled.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import EvaluationMetrics
from .runfolder import IN_CONTAINER, RunFolder

log = logging.getLogger(__name__)

EMETRICS = "evaluation-metrics.txt"
STEP_GROUPS = ("step", "epoch", "iteration", "iter")


@dataclass(frozen=True)
class Point:
    step: int
    name: str
    value: float
    time: float


class _Tail:
    """New complete lines of a growing text file in the job folder."""

    def __init__(self, folder: RunFolder, path: Path):
        self.folder = folder
        self.path = path
        self.offset = 0

    def lines(self) -> list[str]:
        try:
            with self.folder.open(self.path) as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self.offset += end
        return data[:end].decode(errors="replace").splitlines()


def container_path(folder: RunFolder, path: str) -> Path | None:
    """Where a path inside the container ($LOG_DIR/tb, /job/logs/tb) is on this host."""
    expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: IN_CONTAINER.get(m[1], m[0]), path)
    if not expanded.startswith("/"):
        expanded = f"{IN_CONTAINER['JOB_STATE_DIR']}/{expanded}"
    job = IN_CONTAINER["JOB_STATE_DIR"]
    rel = os.path.normpath(expanded)
    if rel != job and not rel.startswith(job + "/"):
        return None
    return folder.job / os.path.relpath(rel, job)


class MetricsReader:
    def __init__(self, folder: RunFolder, spec: EvaluationMetrics | None):
        self.folder = folder
        self.emetrics = _Tail(folder, folder.logs / EMETRICS)
        self.log: _Tail | None = None
        self.pattern: re.Pattern | None = None
        self.counts: dict[str, int] = {}  # steps for log metrics that give none
        self.tensorboard = None
        if spec and spec.type == "log":
            self.log = _Tail(folder, folder.log_file)
            self.pattern = re.compile(spec.pattern)
        elif spec and spec.type == "tensorboard":
            from .tbevents import EventTail

            self.where = container_path(folder, spec.in_ or "$LOG_DIR/tb")
            self.tensorboard = EventTail(self.where) if self.where else None

    def poll(self) -> list[Point]:
        """New points since the last poll (blocking file reads: call it in a thread)."""
        now = time.time()
        points = [p for line in self.emetrics.lines() for p in parse_emetrics(line, now)]
        if self.log and self.pattern:
            for line in self.log.lines():
                points += self._log_points(line, now)
        # not a planted link
        if self.tensorboard and self.where and self.folder.is_real_dir(self.where):
            points += [
                Point(int(p.step), p.name, float(p.value), p.wall_time)
                for p in self.tensorboard.poll()
            ]
        return points

    def _log_points(self, line: str, now: float) -> list[Point]:
        m = self.pattern.search(line) if self.pattern else None
        if not m:
            return []
        found = {k: v for k, v in m.groupdict().items() if v is not None}
        step_key = next((k for k in STEP_GROUPS if k in found), None)
        out = []
        for name, text in found.items():
            if name == step_key:
                continue
            try:
                value = float(text)
            except ValueError:
                continue
            if step_key:
                step = int(float(found[step_key]))
            else:
                step = self.counts[name] = self.counts.get(name, 0) + 1
            out.append(Point(step, name, value, now))
        return out


def parse_emetrics(line: str, now: float) -> list[Point]:
    """One FfDL emetrics line: {"meta": {"time": ms}, "grouplabel": "test", "etimes":
    {"iteration": {"value": N}}, "values": {"loss": {"value": x}, ...}}. A value is named
    after its group: "test.loss"."""
    try:
        record = json.loads(line)
        values = record.get("values") or {}
        etimes = record.get("etimes") or {}
        step_entry = next((etimes[k] for k in ("iteration", "step", "epoch") if k in etimes), None)
        step = int(_value(step_entry)) if step_entry is not None else 0
        stamp = (record.get("meta") or {}).get("time")
        at = float(stamp) / 1000 if stamp else now
        group = record.get("grouplabel") or ""
        return [
            Point(step, f"{group}.{name}" if group else name, float(_value(v)), at)
            for name, v in values.items()
            if isinstance(_value(v), int | float)
        ]
    except (ValueError, TypeError, AttributeError):
        log.debug("event=emetrics_skip line=%r", line[:200])
        return []


def resolve_name(wanted: str, names: list[str]) -> str | None:
    """The metric an objective means: its exact name, else the one named `<group>.wanted`
    (emetrics groups their values: "test.accuracy"), the test group first."""
    if wanted in names:
        return wanted
    matches = sorted(n for n in names if n.endswith("." + wanted))
    if not matches:
        return None
    return next((n for n in matches if n.startswith("test.")), matches[0])


def _value(entry: object) -> Any:
    """emetrics wrap values as {"type": "FLOAT", "value": x}; accept a bare number too."""
    return entry.get("value") if isinstance(entry, dict) else entry
