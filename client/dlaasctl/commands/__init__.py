"""dlaasctl's commands, one module a group: runs, logs (and metrics), experiments, data,
machine (status, gpus, doctor), usage, dashboard (ui), export (k8s). Each module has a
COMMANDS table; dlaasctl.cli imports only the module of the command at hand (a quick
command's time is mostly start-up)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..http import Client

TYPE_CHECKING = False  # typing itself is not imported: it would slow every command's start
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    # an argument of a command: argparse.add_argument's names and keywords
    Arg: TypeAlias = tuple[tuple[str, ...], dict[str, Any]]


def arg(*names: str, **kw: Any) -> Arg:
    return names, kw


class Command:
    """A command: what runs it, its line of help, its arguments, and whether it takes
    --json."""

    __slots__ = ("run", "help", "args", "json")

    def __init__(
        self,
        run: Callable[[Client, argparse.Namespace], int],
        help: str,
        args: list[Arg] | None = None,
        json: bool = True,
    ) -> None:
        self.run = run
        self.help = help
        self.args: list[Arg] = args or []
        self.json = json


RUN = arg("run", help="run id (or a unique prefix)")
EXP = arg("experiment", metavar="EXP", help="experiment id (or a unique prefix)")
