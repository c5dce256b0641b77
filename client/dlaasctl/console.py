"""What every command shares: printing JSON for scripts, messages on stderr, and the
failure that exits 1."""

from __future__ import annotations

import json
import sys


class Failed(Exception):
    """The command ran but its outcome is a failure (exit code 1)."""


def out_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def err(message: str) -> None:
    print(message, file=sys.stderr)


def warn(result: dict) -> None:
    for warning in result.get("warnings", []):
        err(f"warning: {warning}")
