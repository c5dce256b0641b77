"""dlaasctl's layout: each command in one module of dlaasctl.commands, the index in cli.py
naming it, and a start that loads only what the command at hand needs."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

from dlaasctl import cli, commands


def test_the_index_names_each_commands_module_and_nothing_else():
    modules = [m.name for m in pkgutil.iter_modules(commands.__path__)]
    found = {}
    for name in modules:
        module = __import__(f"dlaasctl.commands.{name}", fromlist=["COMMANDS"])
        found |= {command: name for command in module.COMMANDS}
    assert found == cli.WHERE
    assert set(cli.WHERE.values()) == set(modules)


def loaded_by(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after `code`."""
    script = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_every_command_loads_nothing_of_the_daemon_nor_typing():
    """The whole parser (--help) loads every command module: still no dlaasd, and none of
    the imports that would slow each start."""
    code = "from dlaasctl import cli\ncli.build_parser()\nfrom dlaasctl import fmt, transfer"
    loaded = loaded_by(code)
    assert [m for m in loaded if m.split(".")[0] == "dlaasd"] == []
    slow = {"typing", "dataclasses", "yaml", "tqdm", "matplotlib", "email", "http.client"}
    assert slow & set(loaded) == set()


@pytest.mark.parametrize(
    "argv, modules",
    [
        (["list"], ["runs"]),
        (["train", "m", "--follow"], ["runs"]),  # its other modules: once it runs
        (["gpus"], ["machine"]),
        (["data", "ls"], ["data"]),
        (["experiment", "show", "e"], ["experiments"]),
        (["logs", "r"], ["logs"]),
    ],
)
def test_a_command_loads_only_its_module(argv: list[str], modules: list[str]):
    loaded = loaded_by(f"from dlaasctl import cli\ncli.parse_args({argv!r})")
    prefix = "dlaasctl.commands."
    assert [m[len(prefix) :] for m in loaded if m.startswith(prefix)] == modules
