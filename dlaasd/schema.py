"""Typed loading of YAML documents into dataclasses, listing every problem at once.

Manifests, the daemon's config and experiment files are each a tree of dataclasses.
A document is checked against the tree's type hints; each problem keeps its field path
and YAML line, so a user can fix them all in one go instead of one per attempt.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(document)"
        if self.line:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"

    def to_json(self) -> dict:
        return {"field": self.path, "line": self.line, "message": self.message}


class SchemaError(ValueError):
    """A document that does not fit its schema; `problems` lists every one."""

    def __init__(self, problems: list[Problem], source: str = "document"):
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class Parse:
    """Annotated marker: convert the raw YAML value with `fn` (raises ValueError)."""

    fn: Callable[[Any], Any]
    allowed: str


@dataclass(frozen=True)
class Rule:
    """Annotated marker: after the base type is checked, `fn(value)` must be true."""

    fn: Callable[[Any], bool]
    allowed: str


def spec(*, key: str | None = None, help: str | None = None, **kw: Any) -> Any:
    """A dataclass field with a YAML key other than its Python name (`in`, say) and/or a
    short help text that error messages quote."""
    meta = {k: v for k, v in (("key", key), ("help", help)) if v}
    return dataclasses.field(metadata=meta, **kw)


# --- YAML with line numbers -------------------------------------------------------

# libyaml's parser where PyYAML was built with it: ten times the pure-Python one, and
# every submit parses a manifest
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes, source: str = "document") -> tuple[Any, dict[str, int]]:
    """Parse YAML; return the data and a map from field path to line number."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        msg = f"YAML syntax error: {problem}"
        if mark:
            msg += f" at line {mark.line + 1}, column {mark.column + 1}"
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start:
            msg += f" ({context} that starts at line {start.line + 1}, column {start.column + 1})"
            if "end of stream" in problem or "<stream end>" in problem:
                line = start.line + 1  # the end says little; where the open block began does
        raise SchemaError([Problem("", msg, line)], source) from None
    if node is None:
        return None, {}
    lines: dict[str, int] = {}
    problems: list[Problem] = []
    budget = [MAX_NODES]
    data = _construct(node, "", lines, problems, budget)
    if problems:
        raise SchemaError(problems, source)
    return data, lines


# Aliases are expanded; this bounds what a "billion laughs" document can cost.
MAX_NODES = 100_000
_constructor = yaml.constructor.SafeConstructor()


class YamlFloat(float):
    """A float that remembers how it was written: `version: 1.10` means "1.10"."""

    text: str


class YamlInt(int):
    text: str


class _AsWritten(yaml.SafeDumper):
    """Writes the numbers `load_yaml` read as they were written (1.10 stays 1.10)."""


def _as_written(tag: str) -> Callable[[yaml.SafeDumper, Any], yaml.ScalarNode]:
    return lambda dumper, v: dumper.represent_scalar(f"tag:yaml.org,2002:{tag}", v.text)


_AsWritten.add_representer(YamlFloat, _as_written("float"))
_AsWritten.add_representer(YamlInt, _as_written("int"))


def dump_yaml(data: Any) -> str:
    """YAML text of what `load_yaml` read (an inline manifest, written out on its own)."""
    return yaml.dump(data, Dumper=_AsWritten, sort_keys=False)


def _construct(
    node: yaml.Node, path: str, lines: dict[str, int], problems: list[Problem], budget: list[int]
) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        if budget[0] == -1:
            problems.append(
                Problem(
                    path,
                    f"the document expands to more than {MAX_NODES} values "
                    "(too many aliases?); write it out plainly",
                    None,
                )
            )
        return None
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if budget[0] < 0:
                break
            k = _construct(key_node, path, {}, problems, budget)
            if not isinstance(k, str | int | float | bool):
                line = key_node.start_mark.line + 1
                problems.append(Problem(path, "keys must be plain words", line))
                continue
            k = getattr(k, "text", str(k))
            child = f"{path}.{k}" if path else k
            if k in out:
                problems.append(Problem(child, "duplicate key", key_node.start_mark.line + 1))
            out[k] = _construct(value_node, child, lines, problems, budget)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(v, f"{path}[{i}]", lines, problems, budget) for i, v in enumerate(node.value)
        ]
    if node.tag == "tag:yaml.org,2002:timestamp":  # keep dates as the text written
        return node.value
    try:
        value = _constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problems.append(Problem(path, f"cannot read value: {exc}", node.start_mark.line + 1))
        return None
    finally:
        # construct_object remembers every node it built (construct_document would forget
        # them): the constructor shared by every parse kept every manifest's nodes alive
        _constructor.constructed_objects.pop(node, None)
        _constructor.recursive_objects.pop(node, None)
    if isinstance(value, float | int) and not isinstance(value, bool):
        value = (YamlFloat if isinstance(value, float) else YamlInt)(value)
        value.text = node.value
    return value


# --- checking against dataclasses -------------------------------------------------


def load(cls: type, data: Any, lines: dict[str, int] | None = None, source: str = "document"):
    """Check `data` against dataclass `cls`; return the instance or raise SchemaError."""
    checker = _Checker(lines or {})
    if data is None:
        data = {}
    value = checker.convert(cls, data, "")
    if checker.problems:
        raise SchemaError(sort_problems(checker.problems), source)
    return value


def load_text(cls: type, text: str | bytes, source: str = "document"):
    data, lines = load_yaml(text, source)
    return load(cls, data, lines, source)


def parse_document(
    cls: type,
    text: str | bytes,
    source: str,
    error: type[SchemaError],
    keys: str,
    checks: Callable[[Any, dict, dict[str, int]], list[Problem]] | None = None,
    shorthand: Callable[[dict], None] | None = None,
) -> Any:
    """YAML text to an instance of dataclass `cls`, or `error` listing every problem:
    syntax, types, and `checks(value or None, raw data, lines)` across fields, which also
    run when the types are wrong, so that everything is listed at once. `shorthand`
    rewrites the raw data first (short spellings of longer forms)."""
    try:
        data, lines = load_yaml(text, source)
    except SchemaError as exc:
        raise error(exc.problems, source) from None
    if data is not None and not isinstance(data, dict):
        message = f"found {found(data)}; expected a mapping of keys ({keys})"
        raise error([Problem("", message, 1)], source)
    data = data or {}
    if shorthand:
        shorthand(data)
    problems: list[Problem] = []
    value = None
    try:
        value = load(cls, data, lines, source)
    except SchemaError as exc:
        problems += exc.problems
    if checks:
        known = {p.path for p in problems}
        problems += [p for p in checks(value, data, lines) if p.path not in known]
    if problems:
        raise error(sort_problems(problems), source)
    return value


def describe(tp: Any) -> str:
    """What a user may write for type `tp`, in words."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *marks = get_args(tp)
        for m in marks:
            if isinstance(m, Parse | Rule):
                return m.allowed
        return describe(base)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp) if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping of keys to values"
    return {str: "text", int: "a whole number", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


def found(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "text"):
        return value.text
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"{shown!r} (text)"
    return repr(value)


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def line_of(lines: dict[str, int], path: str) -> int | None:
    """The line of `path`, or of its nearest parent that has one."""
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""


def field_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


class _Checker:
    def __init__(self, lines: dict[str, int]):
        self.lines = lines
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, line_of(self.lines, path)))

    def wrong(self, path: str, value: Any, tp: Any) -> None:
        self.fail(path, f"found {found(value)}; expected {describe(tp)}")

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        origin = get_origin(tp)
        if origin is Annotated:
            return self._annotated(tp, value, path)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if value is None:
                return None
            return self.convert(args[0] if len(args) == 1 else Any, value, path)
        if tp is Any:
            return value
        if origin is Literal:
            allowed = get_args(tp)
            if value not in allowed:
                hint = (
                    suggest(str(value), [str(a) for a in allowed]) if isinstance(value, str) else ""
                )
                self.fail(
                    path, f"found {found(value)}; allowed: {', '.join(map(str, allowed))}{hint}"
                )
            return value
        if origin is list:
            if not isinstance(value, list):
                return self.wrong(path, value, tp)
            (item,) = get_args(tp)
            return [self.convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                return self.wrong(path, value, tp)
            _, item = get_args(tp)
            return {
                k: self.convert(item, v, f"{path}.{k}" if path else k) for k, v in value.items()
            }
        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp, value, path)
        return self._scalar(tp, value, path)

    def _annotated(self, tp: Any, value: Any, path: str) -> Any:
        base, *marks = get_args(tp)
        parse = next((m for m in marks if isinstance(m, Parse)), None)
        if parse:
            try:
                return parse.fn(value)
            except (ValueError, TypeError) as exc:
                detail = f" ({exc})" if str(exc) else ""
                self.fail(path, f"found {found(value)}{detail}; expected {parse.allowed}")
                return None
        before = len(self.problems)
        converted = self.convert(base, value, path)
        if len(self.problems) == before:
            for rule in (m for m in marks if isinstance(m, Rule)):
                if not rule.fn(converted):
                    self.fail(path, f"found {found(value)}; expected {rule.allowed}")
        return converted

    def _scalar(self, tp: Any, value: Any, path: str) -> Any:
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif isinstance(value, bool):
            pass  # YAML's yes/true are never numbers or text here
        elif tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, int | float):  # `version: 1.10` means the text "1.10"
                return getattr(value, "text", str(value))
        elif tp is int:
            if isinstance(value, int):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif tp is float:
            if isinstance(value, int | float):
                return float(value)
        else:
            raise TypeError(f"schema: unsupported type {tp!r} at {path}")
        return self.wrong(path, value, tp)

    def _dataclass(self, cls: Any, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            return self.wrong(path, value, cls)
        hints, fields = _shape(cls)
        for k in value:
            if k not in fields:
                child = f"{path}.{k}" if path else k
                allowed = ", ".join(fields)
                self.fail(child, f"unknown key{suggest(k, fields)} (allowed here: {allowed})")
        before = len(self.problems)
        kwargs = {}
        for k, f in fields.items():
            child = f"{path}.{k}" if path else k
            if k not in value or (value[k] is None and not _optional(hints[f.name])):
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    what = describe(hints[f.name])
                    if "help" in f.metadata:
                        what = f"{f.metadata['help']} ({what})"
                    self.fail(child, f"missing; required: {what}")
                continue
            kwargs[f.name] = self.convert(hints[f.name], value[k], child)
        if len(self.problems) != before:
            return None
        return cls(**kwargs)


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """In the order of the document: that is how people read and fix them."""
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """A dataclass's resolved type hints and its fields by YAML key (resolving the hints
    is most of the checking's cost, and the classes never change)."""
    fields = {field_key(f): f for f in dataclasses.fields(cls) if f.init}
    return get_type_hints(cls, include_extras=True), fields


def _optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def dump(obj: Any) -> Any:
    """A dataclass tree back into plain data, with YAML key names."""
    if dataclasses.is_dataclass(obj):
        return {field_key(f): dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    return obj
