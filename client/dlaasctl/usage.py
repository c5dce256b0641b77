"""`dlaasctl usage`: what runs used, grouped; `dlaasctl priority`: reorder the queue."""

from __future__ import annotations

import csv
import json
import sys

from .http import Client
from .routes import USAGE

COLUMNS = (
    ("runs", "RUNS"),
    ("gpu_seconds", "GPU-H"),
    ("cpu_seconds", "CPU-H"),
    ("memory_gib_seconds", "MEM-GIB-H"),
    ("cpu_used_seconds", "CPU-USED-H"),
    ("waiting_seconds", "WAITING-H"),
    ("training_seconds", "TRAINING-H"),
)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f}"


def cmd_usage(c: Client, a) -> int:
    report = c.json("GET", USAGE.url(by=a.by, since=a.since, until=a.until))
    if a.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = [*report["groups"], report["total"]]
    if a.csv:  # seconds, as measured: a spreadsheet does its own sums
        w = csv.writer(sys.stdout)
        keys = [k for k, _ in COLUMNS] + ["staging_in_seconds", "storing_seconds"]
        w.writerow([a.by, *keys])
        for line in lines:
            w.writerow([line["key"], *(line[k] for k in keys)])
        return 0
    from . import fmt

    rows = [
        [line["key"], line["runs"], *(_hours(line[k]) for k, _ in COLUMNS[1:])] for line in lines
    ]
    print(fmt.table([a.by.upper(), *(h for _, h in COLUMNS)], rows))
    whose = "every user's" if report["everyone"] else "your"
    period = f"since {report['since'] or 'the start'} until {report['until'] or 'now'}"
    print(f"\n{whose} runs that ended {period}; hours allocated from allocation to results stored")
    return 0
