"""Accounting: usage, what runs used, grouped."""

from __future__ import annotations

import argparse
import json
import sys

from .. import routes
from ..http import Client
from . import Command, arg

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


def usage(c: Client, a: argparse.Namespace) -> int:
    report = c.call(routes.USAGE, by=a.by, since=a.since, until=a.until)
    if a.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = [*report["groups"], report["total"]]
    if a.csv:  # seconds, as measured: a spreadsheet does its own sums
        import csv

        w = csv.writer(sys.stdout)
        keys = [k for k, _ in COLUMNS] + ["staging_in_seconds", "storing_seconds"]
        w.writerow([a.by, *keys])
        for line in lines:
            w.writerow([line["key"], *(line[k] for k in keys)])
        return 0
    from .. import fmt

    rows = [
        [line["key"], line["runs"], *(_hours(line[k]) for k, _ in COLUMNS[1:])] for line in lines
    ]
    print(fmt.table([a.by.upper(), *(h for _, h in COLUMNS)], rows))
    whose = "every user's" if report["everyone"] else "your"
    period = f"since {report['since'] or 'the start'} until {report['until'] or 'now'}"
    print(f"\n{whose} runs that ended {period}; hours allocated from allocation to results stored")
    return 0


COMMANDS = {
    "usage": Command(
        usage,
        "resources used by runs that ended: yours (root and the admin group: everyone's)",
        [
            arg("--since", help="ended at or after: 2026-11-01, 2026-11-30T12:00Z, or 7d ago"),
            arg("--until", help="ended before (same forms)"),
            arg("--by", choices=["owner", "day", "experiment", "framework"], default="owner"),
            arg("--csv", action="store_true", help="CSV of the groups and the total, in seconds"),
        ],
    ),
}
