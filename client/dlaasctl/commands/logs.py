"""What a run says as it trains: its log (logs, and train --follow) and its metrics."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator

from .. import routes
from ..console import err, out_json
from ..http import Client, Unreachable
from . import RUN, Command, arg


def stream_log(c: Client, run_id: str, follow: bool, learner: int = 1, quiet: bool = False) -> None:
    """Print the log; when following, ride out a daemon restart (runs keep training while
    dlaasd is down) by reconnecting where the stream broke off."""
    offset, gave_up_at = 0, None
    while True:
        url = routes.LOGS.url(id=run_id, follow=int(follow), learner=learner, offset=offset)
        try:
            for chunk in c.stream(url):
                offset, gave_up_at = offset + len(chunk), None
                if not quiet:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            return
        except Unreachable:
            if not follow:
                raise
            now = time.monotonic()
            if gave_up_at is None:
                gave_up_at = now + 120
                err("dlaasctl: the daemon went away; waiting for it to come back...")
            if now > gave_up_at:
                raise
            time.sleep(1)


def follow(c: Client, run_id: str, quiet: bool = False) -> int:
    """Stream the log until the run ends; 0 only if it COMPLETED."""
    stream_log(c, run_id, follow=True, quiet=quiet)
    run = c.call(routes.SHOW_RUN, id=run_id)
    if quiet:
        out_json(run)
    else:
        err(_outcome_line(run))
    return 0 if run["status"] == "COMPLETED" else 1


def _outcome_line(run: dict) -> str:
    code = f" {run['error_code']}" if run.get("error_code") else ""
    msg = f": {run['status_message']}" if run.get("status_message") else ""
    return f"{run['id']} {run['status']}{code}{msg}"


def logs(c: Client, a: argparse.Namespace) -> int:
    stream_log(c, a.run, a.follow, a.learner)
    return 0


def metrics(c: Client, a: argparse.Namespace) -> int:
    if a.follow:
        for line in _lines(c.stream(routes.METRICS.url(id=a.run, follow=1))):
            p = json.loads(line)
            if a.json:
                print(line, flush=True)
            else:
                print(f"step {p['step']:>6}  {p['name']}  {p['value']:.6g}", flush=True)
        return 0
    data = c.call(routes.METRICS, id=a.run)
    run_id = data["id"]
    series: dict[str, list[tuple[int, float]]] = {}
    for p in data["points"]:
        series.setdefault(p["name"], []).append((p["step"], p["value"]))
    if a.plot:
        from ..plots import plot_metrics

        plot_metrics(run_id, series, a.plot)
        err(f"wrote {a.plot}")
    if a.json:
        out_json(data)
    elif not series:
        print(f"{run_id} has reported no metrics (yet); see `evaluation_metrics` in the README")
    else:
        from .. import fmt

        rows = [
            (
                name,
                len(pts),
                pts[-1][0],
                f"{pts[-1][1]:.6g}",
                f"{min(v for _, v in pts):.6g}",
                f"{max(v for _, v in pts):.6g}",
            )
            for name, pts in sorted(series.items())
        ]
        print(fmt.table(["METRIC", "POINTS", "LAST STEP", "LAST", "MIN", "MAX"], rows))
    return 0


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line.decode() for line in complete if line)


COMMANDS = {
    "logs": Command(
        logs,
        "print a run's training log",
        [
            RUN,
            arg("--follow", "-f", action="store_true", help="keep streaming until the run ends"),
            arg("--learner", type=int, default=1, help="learner number, for multi-learner runs"),
        ],
        json=False,
    ),
    "metrics": Command(
        metrics,
        "a run's metrics: a table, a live stream, or a plot",
        [
            RUN,
            arg("--follow", "-f", action="store_true", help="print points as they come"),
            arg("--plot", metavar="FILE.png", help="draw each metric against the step"),
        ],
    ),
}
