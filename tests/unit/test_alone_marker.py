"""The `alone` marker: such tests are collected after every other one, whatever their
file names (tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_alone_tests_are_collected_last():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_docker_killed.py",
            "tests/test_runs.py",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    killed = [i for i, nodeid in enumerate(ids) if nodeid.startswith("tests/test_docker_killed.py")]
    others = [i for i, nodeid in enumerate(ids) if nodeid.startswith("tests/test_runs.py")]
    assert killed and others
    # given first on the command line, still collected after every other test
    assert min(killed) > max(others)
