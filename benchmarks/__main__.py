"""`python -m benchmarks [--quick]`: every benchmark, one after the other, then a summary.
Each runs as its own process (a clean daemon and MinIO each); its last line is its JSON.
A missed target is a finding, not a failure: the exit status is 0, the summary says."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.common import machine

BENCHMARKS = ("overhead", "throughput", "scale", "queue", "staging", "ui", "slurm")


def main() -> int:
    extra = [a for a in sys.argv[1:] if a == "--quick"]
    results = []
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", *extra], stdout=subprocess.PIPE, text=True
        )
        print(proc.stdout, end="", flush=True)
        lines = proc.stdout.strip().splitlines()
        try:
            results.append(json.loads(lines[-1]))
        except (IndexError, ValueError):
            results.append(
                {
                    "bench": name,
                    "ratio": None,
                    "target": "?",
                    "ok": False,
                    "error": f"exit code {proc.returncode}",
                }
            )
    print(f"\nsummary ({machine()})")
    for r in results:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        verdict = "OK" if r["ok"] else "MISSED"
        print(f"  {r['bench']:<11} {ratio:>7}  target {r['target']:<50} {verdict}")
    print(json.dumps({"bench": "all", "ok": all(r["ok"] for r in results), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
