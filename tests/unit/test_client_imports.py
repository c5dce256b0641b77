"""The client never imports the daemon: dlaasctl runs from its own folder alone (a user's
system Python beside the client's source, as tests/test_users.py runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"


def test_every_client_module_imports_without_the_daemon():
    modules = sorted(
        ".".join(p.relative_to(CLIENT).with_suffix("").parts)
        for p in (CLIENT / "dlaasctl").rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "assert not any(m == 'dlaasd' or m.startswith('dlaasd.') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('dlaasd'))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=CLIENT, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
