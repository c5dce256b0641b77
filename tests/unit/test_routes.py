"""The route table dlaasd and dlaasctl share (dlaasctl/routes.py): every route served, each
handler reading exactly the query parameters its route declares, and the URLs the client
builds from it."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable

import pytest

from dlaasctl import routes
from dlaasctl.routes import Query, Route
from dlaasd import api

# Attributes of a request that carry the query string some other way than request.query
QUERY_ELSEWHERE = {"rel_url", "url", "query_string", "path_qs", "raw_path"}
# Calls that receive the request but are aiohttp's own (they read no query parameter)
AIOHTTP_TAKES_REQUEST = {"prepare"}


class Unchecked(Exception):
    """A handler uses the query in a way this test cannot read: make it plain."""


def query_reads(fn: Callable[..., object], request: str | None = None) -> set[str]:
    """The query parameters `fn` reads from its request (its first parameter, or the one
    named `request`), following every function the request is handed to: literal keys of
    request.query[...], .get/.getall/.getone(...) and `in`, and the literal argument of a
    helper that reads a key it is given (`_int(request, "limit", ...)`)."""
    return _Reads(fn, request).names


class _Reads:
    def __init__(self, fn: Callable[..., object], request: str | None) -> None:
        fn = inspect.unwrap(fn)
        self.fn = fn
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        node = tree.body[0]
        assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        self.params = [a.arg for a in node.args.posonlyargs + node.args.args]
        self.request = request or self.params[0]
        self.names: set[str] = set()
        self.by_param: set[int] = set()  # positions of parameters used as a query key
        self._walk(node)

    def _where(self, node: ast.AST) -> str:
        return f"{self.fn.__module__}.{self.fn.__qualname__} line {getattr(node, 'lineno', '?')}"

    def _key(self, node: ast.expr, at: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.names.add(node.value)
        elif isinstance(node, ast.Name) and node.id in self.params:
            self.by_param.add(self.params.index(node.id))
        else:
            raise Unchecked(f"{self._where(at)}: a query key that is not a literal")

    def _is_request(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id == self.request

    def _walk(self, root: ast.AST) -> None:
        parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(root):
            for child in ast.iter_child_nodes(parent):
                parents[child] = parent
        for node in ast.walk(root):
            if self._is_request(node) and not isinstance(
                parents.get(node), ast.Attribute | ast.Call
            ):
                raise Unchecked(f"{self._where(node)}: the request goes where this cannot follow")
            if isinstance(node, ast.Attribute) and self._is_request(node.value):
                if node.attr in QUERY_ELSEWHERE:
                    raise Unchecked(f"{self._where(node)}: reads request.{node.attr}")
                if node.attr == "query":
                    self._query_use(node, parents)
            elif isinstance(node, ast.Call):
                self._call(node)

    def _query_use(self, node: ast.Attribute, parents: dict[ast.AST, ast.AST]) -> None:
        use = parents.get(node)
        if isinstance(use, ast.Subscript) and use.value is node:
            return self._key(use.slice, use)
        if (
            isinstance(use, ast.Compare)
            and node in use.comparators
            and isinstance(use.ops[0], ast.In | ast.NotIn)
        ):
            return self._key(use.left, use)
        call = parents.get(use) if use is not None else None
        if (
            isinstance(use, ast.Attribute)
            and use.attr in ("get", "getall", "getone")
            and isinstance(call, ast.Call)
            and call.func is use
            and call.args
        ):
            return self._key(call.args[0], call)
        raise Unchecked(f"{self._where(node)}: request.query used other than by a key")

    def _call(self, call: ast.Call) -> None:
        given = [i for i, a in enumerate(call.args) if self._is_request(a)]
        given_kw = [k.arg for k in call.keywords if self._is_request(k.value)]
        if not given and not given_kw:
            return
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        target = self.fn.__globals__.get(name) if isinstance(func, ast.Name) else None
        if target is None or not inspect.isfunction(target):
            if name in AIOHTTP_TAKES_REQUEST:
                return
            raise Unchecked(f"{self._where(call)}: the request is handed to {name}(), unread")
        as_name = given_kw[0] if given_kw else list(inspect.signature(target).parameters)[given[0]]
        inner = _Reads(target, as_name)
        self.names |= inner.names
        for i in inner.by_param:  # the helper reads the key it is given: which one here
            if i < len(call.args):
                self._key(call.args[i], call)
            else:
                param = inner.params[i]
                kw = next((k.value for k in call.keywords if k.arg == param), None)
                if kw is None:
                    raise Unchecked(f"{self._where(call)}: {name}() without its key")
                self._key(kw, call)


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: r.name)
def test_each_handler_reads_exactly_the_query_parameters_its_route_declares(route: Route):
    handler = api.SERVES[route].handler
    assert query_reads(handler) == set(route.query), (
        f"{route.method} {route.path}: {handler.__name__} reads these; the route declares "
        "the others (client/dlaasctl/routes.py)"
    )


def test_every_route_is_served_once_and_names_are_unique():
    assert [e.route for e in api.ENDPOINTS] == list(routes.ROUTES)
    assert len({r.name for r in routes.ROUTES}) == len(routes.ROUTES)
    assert len({(r.method, r.path) for r in routes.ROUTES}) == len(routes.ROUTES)


def test_registered_routes_are_the_table():
    app = api.make_app(None)  # nothing is served: only the router is read
    registered = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert registered == {(r.method, r.template) for r in routes.ROUTES}


# --- the reader itself: it must see what a careless handler would do ------------------


def _int(request, name: str, default: int) -> int:
    raw = request.query.get(name)
    return default if raw is None else int(raw)


async def sneaky(request):
    limit = _int(request, "limit", 50)
    if "verbose" in request.query:
        return request.query["secret"], limit
    return request.query.getall("tag"), limit


async def opaque(request):
    return dict(request.query)


async def by_url(request):
    return request.rel_url.query.get("limit")


def _unknown(request):
    return request


async def handed_away(request):
    return [x for x in map(_unknown, [request])]


async def aliased(request):
    r = request
    return r.query.get("x")


def test_reader_sees_undeclared_reads_through_helpers():
    assert query_reads(sneaky) == {"limit", "verbose", "secret", "tag"}


@pytest.mark.parametrize("handler", [opaque, by_url, handed_away, aliased])
def test_reader_refuses_what_it_cannot_check(handler):
    with pytest.raises(Unchecked):
        query_reads(handler)


def test_reader_refuses_a_request_handed_to_what_it_cannot_follow():
    async def handler(request):
        return await some_object.method(request)  # noqa: F821

    with pytest.raises(Unchecked):
        query_reads(handler)


# --- URLs the client builds ------------------------------------------------------------


def test_url_fills_and_quotes_the_path():
    assert routes.SHOW_RUN.url(id="a/b c") == "/v1/runs/a%2Fb%20c"
    assert routes.RESULT_FILE.url(id="r", path="sub dir/f.txt") == (
        "/v1/runs/r/results/sub%20dir/f.txt"
    )
    assert routes.PUT_OBJECT.url(bucket="b", key="x/y") == "/v1/data/b/x/y"


def test_url_adds_query_parameters_in_order_and_leaves_out_none():
    url = routes.LOGS.url(id="r", follow=1, learner=2, offset=0)
    assert url == "/v1/runs/r/logs?follow=1&learner=2&offset=0"
    assert routes.LIST_RUNS.url(limit=5, offset=0, status=None) == "/v1/runs?limit=5&offset=0"
    assert routes.OBJECTS.url(bucket="b", prefix="a b/") == "/v1/data/b?prefix=a+b%2F"


def test_url_refuses_an_undeclared_parameter_or_a_missing_one():
    with pytest.raises(TypeError, match="no query parameter 'offset'"):
        routes.METRICS.url(id="r", offset=3)
    with pytest.raises(TypeError, match="'id' is missing"):
        routes.SHOW_RUN.url()


def test_openapi_templates_have_no_regexes():
    assert routes.GET_OBJECT.template == "/v1/data/{bucket}/{key}"
    assert routes.GET_OBJECT.path_params == ["bucket", "key"]
    assert isinstance(routes.LOGS.query["offset"], Query)
