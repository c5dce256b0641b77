"""`dlaasctl`: the command line for dlaasd. Speaks JSON over the daemon's Unix socket.

Exit codes: 0 ok, 1 refused or failed, 2 usage, 3 daemon not reachable.

The commands live in dlaasctl/commands/, one module a group. Only the module and the
parser of the command at hand are loaded, and modules only some commands need (fmt,
zipfile, tqdm...) are imported inside them: scripts call dlaasctl in loops, and its start
time is most of a quick command's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .console import Failed, err, out_json, warn
from .http import ApiError, Client, Unreachable, default_socket

# command -> its module in dlaasctl.commands, in the order --help lists them; "group
# command" for data and experiment
WHERE = {
    "train": "runs",
    "list": "runs",
    "show": "runs",
    "logs": "logs",
    "halt": "runs",
    "delete": "runs",
    "download": "runs",
    "metrics": "logs",
    "gpus": "machine",
    "status": "machine",
    "doctor": "machine",
    "ui": "dashboard",
    "experiment run": "experiments",
    "experiment list": "experiments",
    "experiment show": "experiments",
    "experiment halt": "experiments",
    "data upload": "data",
    "data ls": "data",
    "data download": "data",
    "priority": "runs",
    "usage": "usage",
    "export k8s": "export",
}
GROUPS = {
    "experiment": "hyperparameter sweeps",
    "data": "training data in the object store",
    "export": "a run as another system's objects, without the daemon",
}

TYPE_CHECKING = False  # typing itself is not imported: it would slow every command's start
if TYPE_CHECKING:
    from .commands import Command


def command(name: str) -> Command:
    """A command's definition, from the one module that has it (imported with the
    import statement's machinery: no importlib to load, and -X importtime sees it)."""
    module = __import__(f"commands.{WHERE[name]}", globals(), None, ["COMMANDS"], 1)
    return module.COMMANDS[name]


def _common() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        # SUPPRESS: given before the command or after it, a subcommand must not reset it
        default=argparse.SUPPRESS,
        help="the daemon's socket (default: $DLAAS_SOCKET, then the "
        "user's and the system's usual places)",
    )
    jsonflag = argparse.ArgumentParser(add_help=False)
    jsonflag.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common, jsonflag


def _command_parser(
    name: str,
    target: argparse._SubParsersAction | None,
    common: argparse.ArgumentParser,
    jsonflag: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    cmd = command(name)
    parents = [common, jsonflag] if cmd.json else [common]
    if target is None:
        sp = argparse.ArgumentParser(prog=f"dlaasctl {name}", description=cmd.help, parents=parents)
    else:
        sp = target.add_parser(
            name.rpartition(" ")[2], help=cmd.help, description=cmd.help, parents=parents
        )
    for names, kw in cmd.args:
        sp.add_argument(*names, **kw)
    sp.set_defaults(fn=cmd.run)
    return sp


def parser_of(name: str) -> argparse.ArgumentParser:
    """The parser of one command alone."""
    return _command_parser(name, None, *_common())


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: for help and for usage errors."""
    common, jsonflag = _common()
    p = argparse.ArgumentParser(
        prog="dlaasctl", parents=[common], description="Submit and follow training runs on dlaasd."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name in WHERE:
        group = name.rpartition(" ")[0]
        if group and group not in groups:
            gp = sub.add_parser(group, help=GROUPS[group], parents=[common])
            groups[group] = gp.add_subparsers(
                dest=f"{group}_command", required=True, metavar="COMMAND"
            )
        _command_parser(name, groups[group] if group else sub, common, jsonflag)
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Only the parser of the command at hand (building all of them is a noticeable part
    of a quick command's time); the whole one for help and mistakes."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-h", "--help"):
        i += 2 if argv[i] == "--socket" else 1
    words = argv[i : i + 2]
    name = " ".join(words) if " ".join(words) in WHERE else (words[:1] or [""])[0]
    if name not in WHERE or "-h" in argv or "--help" in argv:
        return build_parser().parse_args(argv)
    rest = argv[:i] + argv[i + len(name.split()) :]
    return parser_of(name).parse_args(rest)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    socket = getattr(args, "socket", None)
    client = Client(Path(socket) if socket else default_socket())
    try:
        return args.fn(client, args)
    except Unreachable as exc:
        err(f"dlaasctl: {exc}")
        return 3
    except ApiError as exc:
        code = f" [{exc.code}]" if exc.code else ""
        err(f"dlaasctl: error{code}: {exc.message}")
        for p in exc.problems:
            where = p.get("field") or "(document)"
            if p.get("line"):
                where += f" (line {p['line']})"
            err(f"  - {where}: {p['message']}")
        warn({"warnings": exc.warnings})
        if getattr(args, "json", False):
            out_json(
                {
                    "error": {
                        "status": exc.status,
                        "code": exc.code,
                        "message": exc.message,
                        "problems": exc.problems,
                        "warnings": exc.warnings,
                    }
                }
            )
        return 1
    except Failed as exc:
        err(f"dlaasctl: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
