"""README's tables against the code they describe (Datasette's test_docs.py idea): a
code, route or command added without its line in README fails here."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dlaasctl import cli, routes
from dlaasd.codes import Code

README = (Path(__file__).parent.parent / "README.md").read_text()


def table_under(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table in the section `heading`."""
    section = README.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [  # a cell may hold an escaped \|
        [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row.strip("|"))]
        for row in rows[2:]
    ]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --- the REST API's routes ------------------------------------------------------------

ROUTE_ROWS = {code_spans(row[0])[0]: row for row in table_under("## The REST API")}


def test_every_route_is_in_readme_and_no_other():
    assert sorted(ROUTE_ROWS) == sorted(f"{r.method} {r.template}" for r in routes.ROUTES)


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: r.name)
def test_readme_names_each_routes_query_parameters(route: routes.Route):
    row = ROUTE_ROWS[f"{route.method} {route.template}"]
    assert code_spans(row[1]) == list(route.query), row


# --- dlaasctl's commands ----------------------------------------------------------------


def command_of(synopsis: str) -> str:
    """'data ls [BUCKET[/PREFIX]]' -> 'data ls': the words before the arguments."""
    words = re.match(r"[a-z0-9 ]+?(?= [^a-z0-9]|$)", synopsis)  # "export k8s"
    assert words, synopsis
    return words.group(0)


COMMAND_ROWS = {
    command_of(code_spans(row[0])[0]): code_spans(row[0])[0] for row in table_under("## dlaasctl")
}
EVERY_COMMAND_HAS = {"-h", "--help", "--socket", "--json"}  # said under the table


def test_every_command_is_in_readme_and_no_other():
    assert sorted(COMMAND_ROWS) == sorted(cli.WHERE)


def synopsis(parser: argparse.ArgumentParser) -> tuple[list[str], set[str]]:
    """A command's positional arguments as README writes them (FILE, [MODEL], PATH...),
    and its options (the long names)."""
    positional, options = [], set()
    for action in parser._actions:
        if action.option_strings:
            options |= {o for o in action.option_strings if o.startswith("--")}
            continue
        name = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        positional.append({"?": f"[{name}]", "+": f"{name}..."}.get(str(action.nargs), name))
    return positional, options - EVERY_COMMAND_HAS


@pytest.mark.parametrize("name", list(cli.WHERE))
def test_readme_gives_each_commands_arguments_and_options(name: str):
    written = COMMAND_ROWS[name][len(name) :]
    options = set(re.findall(r"\[(--[a-z-]+)[^\]]*\]", written))
    positional = re.sub(r"\[--[a-z-]+[^\]]*\]", "", written).split()
    assert (positional, options) == synopsis(cli.parser_of(name)), COMMAND_ROWS[name]


# --- error codes ------------------------------------------------------------------------

ERROR_ROWS = {row[0]: row[1] for row in table_under("## Statuses and error codes")}


def test_every_error_code_is_in_readme_and_no_other():
    assert sorted(ERROR_ROWS) == sorted(c.value for c in Code)


@pytest.mark.parametrize("code", list(Code), ids=lambda c: c.value)
def test_readme_says_what_each_code_means(code: Code):
    """Each row starts with the meaning others see of a failure (`dlaasctl list`)."""
    assert ERROR_ROWS[code.value].startswith(code.meaning), (code, ERROR_ROWS[code.value])


def test_each_code_has_one_meaning():
    meanings = [c.meaning for c in Code]
    assert len(set(meanings)) == len(meanings)
    assert all(re.fullmatch(r"[CS]\d{3}", c.value) for c in Code)
