"""Report evaluation metrics from training code run by dlaasd (optional helper).

dlaasd mounts this folder into training containers at /opt/dlaas/python and puts it on
PYTHONPATH, so training code may write::

    from dlaas_emetrics import report

    report(step=epoch, accuracy=0.93, loss=0.21)  # group "test"
    report(step=epoch, group="train", loss=0.3)

Each call appends one FfDL emetrics JSON line to $LOG_DIR/evaluation-metrics.txt
(./evaluation-metrics.txt where LOG_DIR is unset), flushed at once, which dlaasd collects
while the training runs. Standard library only; Python 3.8 or later.
"""

import json
import os
import time
from datetime import datetime, timezone

__all__ = ["report", "metrics_path"]

FILE_NAME = "evaluation-metrics.txt"


def metrics_path():
    """Where `report` appends: $LOG_DIR/evaluation-metrics.txt, else the working folder."""
    return os.path.join(os.environ.get("LOG_DIR") or ".", FILE_NAME)


def report(step, group="test", **values):
    """Append one emetrics line: `values` (name=number) at iteration `step` in `group`."""
    if not values:
        raise TypeError("report() needs at least one metric, e.g. report(step=1, loss=0.5)")
    numbers = {}
    for name, value in values.items():
        try:
            numbers[name] = {"type": "FLOAT", "value": float(value)}
        except (TypeError, ValueError):
            raise TypeError(f"metric {name}={value!r} is not a number") from None
    now = time.time()
    utc = timezone.utc  # noqa: UP017 (datetime.UTC is 3.11+; containers run 3.8+)
    stamp = datetime.fromtimestamp(now, utc).isoformat(timespec="milliseconds")
    line = {
        "meta": {
            "time": int(now * 1000),
            "training_id": os.environ.get("TRAINING_ID", ""),
            "subid": os.environ.get("SUBID", ""),
        },
        "grouplabel": str(group),
        "etimes": {
            "iteration": {"type": "INT", "value": int(step)},
            "time_stamp": {"type": "STRING", "value": stamp.replace("+00:00", "Z")},
        },
        "values": numbers,
    }
    path = metrics_path()
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    # One write of a whole line, opened per call: a reader never sees half a line for
    # long, and several processes (data-parallel workers) may append to the same file.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
