"""dlaasd.schema on a tiny dataclass tree: every problem, with its path and line."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest
import yaml

from dlaasd import schema
from dlaasd.schema import Parse, Problem, Rule, SchemaError, spec


def _even(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v % 2:
        raise ValueError("odd")
    return v


Even = Annotated[int, Parse(_even, "an even whole number")]
Small = Annotated[int, Rule(lambda v: v < 10, "a whole number below 10")]


@dataclass
class Inner:
    x: int = spec(help="the x coordinate")
    tags: list[str] = field(default_factory=list)


@dataclass
class Outer:
    name: str
    inner: Inner
    opt: int | None = None
    mode: Literal["fast", "slow"] = "fast"
    extra: dict[str, int] = field(default_factory=dict)
    in_: str = spec(key="in", default="")
    ratio: float = 1.0
    flag: bool = False
    even: Even = 2
    small: Small = 1
    items: list[Inner] = field(default_factory=list)


def load(text: str) -> Outer:
    return schema.load_text(Outer, text)


def problems(text: str) -> list[Problem]:
    with pytest.raises(SchemaError) as info:
        load(text)
    return info.value.problems


def by_path(text: str) -> dict[str, Problem]:
    return {p.path: p for p in problems(text)}


# --- values -------------------------------------------------------------------------


def test_defaults_fill_the_missing_keys():
    o = load("name: n\ninner:\n  x: 1\n")
    assert o == Outer(name="n", inner=Inner(x=1, tags=[]))
    assert o.opt is None and o.mode == "fast" and o.extra == {} and o.in_ == ""
    assert o.ratio == 1.0 and o.flag is False and o.even == 2 and o.items == []


def test_every_kind_of_field_is_read():
    o = load(
        """
name: n
inner: {x: 3, tags: [a, b]}
opt: 7
mode: slow
extra: {a: 1, b: 2}
in: somewhere
ratio: 2
flag: true
even: 4
small: 9
items:
  - x: 1
  - x: 2
    tags: [t]
"""
    )
    assert o.inner == Inner(3, ["a", "b"])
    assert o.opt == 7
    assert o.mode == "slow"
    assert o.extra == {"a": 1, "b": 2}
    assert o.in_ == "somewhere"
    assert o.ratio == 2.0 and isinstance(o.ratio, float)
    assert o.flag is True
    assert o.even == 4 and o.small == 9
    assert o.items == [Inner(1), Inner(2, ["t"])]


def test_optional_accepts_null():
    assert load("name: n\ninner: {x: 1}\nopt: null\n").opt is None
    assert load("name: n\ninner: {x: 1}\nopt:\n").opt is None


def test_null_for_a_required_field_is_missing():
    p = by_path("name:\ninner: {x: 1}\n")
    assert "missing" in p["name"].message


def test_null_for_a_field_with_a_default_keeps_the_default():
    assert load("name: n\ninner: {x: 1}\nmode:\n").mode == "fast"


@pytest.mark.parametrize(
    "value, expected", [("1.0", "1.0"), ("1", "1"), ("2.5", "2.5"), ("'x'", "x")]
)
def test_numbers_are_accepted_as_text(value, expected):
    assert load(f"name: {value}\ninner: {{x: 1}}\n").name == expected


def test_whole_float_is_a_whole_number():
    assert load("name: n\ninner: {x: 2.0}\n").inner.x == 2


def test_dates_stay_text():
    assert load("name: 2024-01-02\ninner: {x: 1}\n").name == "2024-01-02"


def test_load_of_none_is_an_empty_mapping():
    with pytest.raises(SchemaError) as info:
        schema.load(Outer, None)
    assert {p.path for p in info.value.problems} == {"name", "inner"}


def test_empty_document_parses_to_none():
    assert schema.load_yaml("") == (None, {})
    assert schema.load_yaml("# a comment only\n") == (None, {})


# --- problems -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path, words, line",
    [
        ("name: n\ninner: {x: 1.5}\n", "inner.x", ["1.5", "whole number"], 2),
        ("name: n\ninner: {x: true}\n", "inner.x", ["true", "whole number"], 2),
        ("name: n\ninner: {x: '1'}\n", "inner.x", ["'1' (text)", "whole number"], 2),
        ("name: [a]\ninner: {x: 1}\n", "name", ["a list", "text"], 1),
        ("name: n\ninner: 3\n", "inner", ["found 3", "mapping"], 2),
        ("name: n\ninner:\n  tags: [a, [b]]\n", "inner.tags[1]", ["a list", "text"], 3),
        ("name: n\ninner:\n  tags: a\n", "inner.tags", ["'a' (text)", "a list"], 3),
        ("name: n\ninner: {x: 1}\nextra: {a: one}\n", "extra.a", ["'one'", "whole number"], 3),
        ("name: n\ninner: {x: 1}\nextra: [1]\n", "extra", ["a list", "mapping"], 3),
        ("name: n\ninner: {x: 1}\nmode: slwo\n", "mode", ["fast, slow", "did you mean 'slow'"], 3),
        ("name: n\ninner: {x: 1}\nmode: 3\n", "mode", ["found 3", "allowed: fast, slow"], 3),
        ("name: n\ninner: {x: 1}\nflag: 1\n", "flag", ["found 1", "true or false"], 3),
        ("name: n\ninner: {x: 1}\nflag: 'yes'\n", "flag", ["'yes'", "true or false"], 3),
        ("name: n\ninner: {x: 1}\nratio: fast\n", "ratio", ["'fast'", "a number"], 3),
        ("name: n\ninner: {x: 1}\nratio: true\n", "ratio", ["true", "a number"], 3),
        ("name: n\ninner: {x: 1}\neven: 3\n", "even", ["(odd)", "an even whole number"], 3),
        ("name: n\ninner: {x: 1}\nsmall: 12\n", "small", ["found 12", "below 10"], 3),
        ("name: n\ninner: {x: 1}\nsmall: big\n", "small", ["'big'", "a whole number"], 3),
        ("name: n\ninner: {x: 1}\nopt: [1]\n", "opt", ["a list", "a whole number"], 3),
        ("name: n\ninner: {}\n", "inner.x", ["missing", "the x coordinate (a whole number)"], 2),
        ("inner: {x: 1}\n", "name", ["missing", "text"], 1),
        ("name: n\n", "inner", ["missing", "mapping"], 1),
        ("name: n\ninner: {x: 1}\nitems:\n  - tags: []\n", "items[0].x", ["missing"], 4),
        ("name: n\ninner: {x: 1}\nitems:\n  - 5\n", "items[0]", ["found 5", "mapping"], 4),
    ],
)
def test_wrong_values(text, path, words, line):
    p = by_path(text)
    assert path in p, [str(x) for x in p.values()]
    for w in words:
        assert w in p[path].message
    assert p[path].line == line


def test_rule_is_not_checked_when_the_base_type_is_wrong():
    (p,) = problems("name: n\ninner: {x: 1}\nsmall: big\n")
    assert "below 10" not in p.message


def test_unknown_key_with_suggestion_and_allowed_keys():
    p = by_path("name: n\ninner: {x: 1}\nflga: true\n")["flga"]
    assert "unknown key" in p.message
    assert "did you mean 'flag'" in p.message
    assert "allowed here: name, inner, opt, mode, extra, in, ratio" in p.message
    assert p.line == 3


def test_unknown_nested_key_has_its_full_path():
    p = by_path("name: n\ninner:\n  x: 1\n  tgas: [a]\n")["inner.tgas"]
    assert "did you mean 'tags'" in p.message
    assert "allowed here: x, tags" in p.message
    assert p.line == 4


def test_unknown_key_far_from_anything_has_no_suggestion():
    p = by_path("name: n\ninner: {x: 1}\nzzzzzz: 1\n")["zzzzzz"]
    assert "did you mean" not in p.message


def test_python_name_of_a_renamed_key_is_unknown():
    p = by_path("name: n\ninner: {x: 1}\nin_: x\n")["in_"]
    assert "did you mean 'in'" in p.message


def test_every_problem_is_listed_sorted_by_line():
    ps = problems("name: [a]\ninner:\n  x: y\nmode: slwo\nflga: 1\nratio: r\n")
    assert [p.path for p in ps] == ["name", "inner.x", "mode", "flga", "ratio"]
    assert [p.line for p in ps] == [1, 3, 4, 5, 6]


def test_schema_error_message_lists_every_problem():
    with pytest.raises(SchemaError) as info:
        schema.load_text(Outer, "name: [a]\ninner: {x: y}\n", source="thing.yml")
    text = str(info.value)
    assert text.startswith("thing.yml has 2 problem(s):")
    assert "  - name (line 1): found a list; expected text" in text
    assert "  - inner.x (line 2): found 'y' (text); expected a whole number" in text
    assert info.value.source == "thing.yml"


def test_unsupported_type_is_a_programming_error():
    @dataclass
    class Bad:
        b: bytes

    with pytest.raises(TypeError, match="unsupported type"):
        schema.load(Bad, {"b": "x"})


# --- YAML ---------------------------------------------------------------------------


def test_load_yaml_maps_paths_to_lines():
    data, lines = schema.load_yaml("a: 1\nb:\n  c: 2\n  d:\n    - x\n    - {e: 3}\n")
    assert data == {"a": 1, "b": {"c": 2, "d": ["x", {"e": 3}]}}
    assert lines["a"] == 1
    assert lines["b"] == 2
    assert lines["b.c"] == 3
    assert lines["b.d"] == 4
    assert lines["b.d[0]"] == 5
    assert lines["b.d[1]"] == 6
    assert lines["b.d[1].e"] == 6


def test_duplicate_key():
    with pytest.raises(SchemaError) as info:
        schema.load_yaml("a: 1\nb: 2\na: 3\n")
    (p,) = info.value.problems
    assert (p.path, p.line) == ("a", 3)
    assert "duplicate key" in p.message


def test_duplicate_nested_key():
    with pytest.raises(SchemaError) as info:
        schema.load_yaml("a:\n  b: 1\n  c: 2\n  b: 3\n")
    (p,) = info.value.problems
    assert (p.path, p.line) == ("a.b", 4)


def test_non_scalar_key_is_refused():
    with pytest.raises(SchemaError) as info:
        schema.load_yaml("a: 1\n[x, y]: 2\n")
    (p,) = info.value.problems
    assert "plain words" in p.message and p.line == 2


def test_syntax_error_has_line_and_column():
    with pytest.raises(SchemaError) as info:
        schema.load_yaml("a: 1\nb: [1, 2\nc: 3\n")
    (p,) = info.value.problems
    assert p.path == ""
    assert p.message.startswith("YAML syntax error:")
    assert p.line is not None and f"line {p.line}, column" in p.message


def test_unknown_scalar_tag_is_refused():
    with pytest.raises(SchemaError) as info:
        schema.load_yaml("a: 1\nc: !foo x\n")
    (p,) = info.value.problems
    assert (p.path, p.line) == ("c", 2)
    assert "cannot read value" in p.message


def test_python_tags_never_construct_objects():
    data, _ = schema.load_yaml("a: !!python/object/apply:os.system ['true']\n")
    assert data == {"a": ["true"]}  # plain data; nothing was called


# --- dump ---------------------------------------------------------------------------


def test_dump_uses_yaml_keys_and_round_trips():
    text = "name: n\ninner: {x: 3, tags: [a]}\nopt: 4\nmode: slow\nextra: {k: 1}\nin: there\n"
    o = load(text)
    data = schema.dump(o)
    assert data["in"] == "there" and "in_" not in data
    assert data["inner"] == {"x": 3, "tags": ["a"]}
    assert schema.load(Outer, data) == o


def test_dump_of_plain_values():
    assert schema.dump([Inner(1), (Inner(2, ["a"]),)]) == [
        {"x": 1, "tags": []},
        [{"x": 2, "tags": ["a"]}],
    ]
    assert schema.dump({"k": Inner(1)}) == {"k": {"x": 1, "tags": []}}
    assert schema.dump(3) == 3


# --- helpers ------------------------------------------------------------------------


def test_describe():
    assert schema.describe(int) == "a whole number"
    assert schema.describe(float) == "a number"
    assert schema.describe(str) == "text"
    assert schema.describe(bool) == "true or false"
    assert schema.describe(list[int]) == "a list"
    assert schema.describe(dict[str, int]) == "a mapping of keys to values"
    assert schema.describe(Inner) == "a mapping of keys to values"
    assert schema.describe(int | None) == "a whole number"
    assert schema.describe(int | str) == "a whole number or text"
    assert schema.describe(Literal["a", "b"]) == "one of 'a', 'b'"
    assert schema.describe(Even) == "an even whole number"
    assert schema.describe(Small) == "a whole number below 10"


def test_found():
    assert schema.found({}) == "a mapping"
    assert schema.found([]) == "a list"
    assert schema.found(None) == "nothing"
    assert schema.found("x") == "'x' (text)"
    assert schema.found(3) == "3"
    long = schema.found("y" * 100)
    assert long.endswith("...' (text)") and len(long) < 80


def test_suggest():
    assert schema.suggest("framwork", ["framework", "name"]) == "; did you mean 'framework'?"
    assert schema.suggest("qqq", ["framework", "name"]) == ""


def test_problem_str_and_json():
    assert str(Problem("a.b", "bad", 3)) == "a.b (line 3): bad"
    assert str(Problem("", "bad")) == "(document): bad"
    assert Problem("a", "m", 2).to_json() == {"field": "a", "line": 2, "message": "m"}


def test_sort_problems_puts_lineless_last():
    ps = [Problem("c", "m"), Problem("b", "m", 5), Problem("a", "m", 2)]
    assert [p.path for p in schema.sort_problems(ps)] == ["a", "b", "c"]


def test_dump_yaml_writes_numbers_as_they_were_written():
    text = "cpus: 0.5\nversion: 1.10\nmemory: 0x10\nname: x\nenv: {lr: 1e-3}\n"
    data, _ = schema.load_yaml(text)
    out = schema.dump_yaml(data)  # safe_dump cannot represent the numbers load_yaml makes
    assert "version: 1.10" in out and "cpus: 0.5" in out and "memory: 0x10" in out
    again, _ = schema.load_yaml(out)
    assert again == data and again["version"].text == "1.10"


def test_parsing_keeps_nothing_of_the_document():
    def nodes() -> int:
        gc.collect()
        return sum(isinstance(o, yaml.Node) for o in gc.get_objects())

    schema.load_yaml("warm: up\n")
    before = nodes()
    for i in range(50):
        schema.load_yaml(f"name: run-{i}\nversion: 1.{i}\nlist: [x, 2.5, true]\nmap: {{d: e}}\n")
    assert nodes() == before  # a daemon parses every manifest again and again
