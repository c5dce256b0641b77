"""The routes of dlaasd's API: the one contract between the daemon and dlaasctl.

dlaasd registers its handlers by these routes and builds its OpenAPI document's paths and
query parameters from them; dlaasctl builds every URL it asks for with `Route.url`, which
refuses a query parameter its route does not declare. tests/unit/test_routes.py checks that
each handler reads only the query parameters its route declares.

The daemon may import this module; it imports nothing of the daemon (and, for dlaasctl's
start time, nothing that the client does not load anyway: no dataclasses, no typing).
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

MAX_LIMIT = 10_000  # runs or experiments in one answer
MAX_OFFSET = 10**9
MAX_POSITION = 2**62  # a byte offset in a log, a metric's seq
MAX_LEARNERS = 10_000
MAX_PRIORITY = 1000  # priorities are whole numbers from -1000 to 1000
FLAGS = {"1": True, "true": True, "0": False, "false": False}


class Query:
    """A query parameter a route accepts: what it means, and its JSON schema."""

    __slots__ = ("description", "schema")

    def __init__(self, description: str, schema: dict[str, object] | None = None) -> None:
        self.description = description
        self.schema: dict[str, object] = schema or {"type": "string"}

    def __repr__(self) -> str:
        return f"Query({self.description!r}, {self.schema!r})"


def whole(description: str, lo: int, hi: int) -> Query:
    return Query(description, {"type": "integer", "minimum": lo, "maximum": hi})


def flag(description: str) -> Query:
    return Query(description, {"type": "string", "enum": list(FLAGS)})


# {id}, and {path:.+}: a parameter that may hold slashes (aiohttp's syntax)
_PARAM = re.compile(r"\{(\w+)(:[^}]+)?\}")


class Route:
    """One route: its method and path (aiohttp's syntax), a name that is unique (the
    OpenAPI operationId), what it does in a line, and the query parameters it accepts."""

    __slots__ = ("method", "path", "name", "summary", "query")

    def __init__(
        self,
        method: str,
        path: str,
        name: str,
        summary: str,
        query: dict[str, Query] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.name = name
        self.summary = summary
        self.query: dict[str, Query] = query or {}

    def __repr__(self) -> str:
        return f"Route({self.method} {self.path})"

    @property
    def path_params(self) -> list[str]:
        return [m.group(1) for m in _PARAM.finditer(self.path)]

    @property
    def template(self) -> str:
        """The path as OpenAPI and people write it: {path}, not {path:.+}."""
        return _PARAM.sub(r"{\1}", self.path)

    def url(self, **params: str | int | None) -> str:
        """The path with its parameters filled in (quoted; a {name:.+} one keeps its
        slashes), and the query parameters not None. An undeclared one is refused."""
        values = {k: v for k, v in params.items() if v is not None}

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in values:
                raise TypeError(f"{self.name}: the path parameter {name!r} is missing")
            return quote(str(values.pop(name)), safe="/" if m.group(2) else "")

        path = _PARAM.sub(fill, self.path)
        undeclared = sorted(set(values) - set(self.query))
        if undeclared:
            raise TypeError(f"{self.name}: no query parameter {undeclared[0]!r} on {self.path}")
        return f"{path}?{urlencode(values)}" if values else path


HEALTH = Route("GET", "/v1/health", "health", "Liveness: the daemon answers")
STATUS = Route("GET", "/v1/status", "status", "Docker, object store, GPUs, capacity and run counts")
GPUS = Route("GET", "/v1/gpus", "gpus", "GPU inventory with the run holding each")
DOCTOR = Route("GET", "/v1/doctor", "doctor", "Checks of Docker, GPUs, store, disk, socket, images")
SUBMIT = Route(
    "POST",
    "/v1/runs",
    "submit",
    "Submit a training run",
    {
        "priority": whole(
            "higher starts first; within the config's fair_share range (root: any)",
            -MAX_PRIORITY,
            MAX_PRIORITY,
        )
    },
)
LIST_RUNS = Route(
    "GET",
    "/v1/runs",
    "list_runs",
    "Runs, newest first",
    {
        "limit": whole("page size (default 50)", 1, MAX_LIMIT),
        "offset": whole("skip this many", 0, MAX_OFFSET),
        "status": Query("only these statuses (comma separated)"),
        "experiment": Query("only the trials of this experiment"),
    },
)
SHOW_RUN = Route(
    "GET", "/v1/runs/{id}", "show_run", "One run, with its history and staging figures"
)
DELETE_RUN = Route(
    "DELETE",
    "/v1/runs/{id}",
    "delete_run",
    "Forget a finished run and its local files",
    {"purge": flag("1: also remove its results from the object store")},
)
HALT_RUN = Route("POST", "/v1/runs/{id}/halt", "halt_run", "Halt a run (SIGTERM, then SIGKILL)")
SET_PRIORITY = Route(
    "POST",
    "/v1/runs/{id}/priority",
    "set_priority",
    "Change a waiting run's priority (root and the admin group)",
    {"priority": whole("the new priority; higher starts first", -MAX_PRIORITY, MAX_PRIORITY)},
)
LOGS = Route(
    "GET",
    "/v1/runs/{id}/logs",
    "logs",
    "The training log",
    {
        "follow": flag("1: stream until the run ends"),
        "learner": whole("learner number (default 1)", 1, MAX_LEARNERS),
        "offset": whole("skip this many bytes (where a stream left off)", 0, MAX_POSITION),
    },
)
RESULTS = Route("GET", "/v1/runs/{id}/results", "list_results", "The run's result files")
RESULT_FILE = Route("GET", "/v1/runs/{id}/results/{path:.+}", "get_result", "One result file")
DEFINITION = Route(
    "GET", "/v1/runs/{id}/definition", "list_definition", "The submitted manifest and model"
)
DEFINITION_FILE = Route(
    "GET",
    "/v1/runs/{id}/definition/{path:.+}",
    "get_definition_file",
    "One file of the definition",
)
METRICS = Route(
    "GET",
    "/v1/runs/{id}/metrics",
    "run_metrics",
    "The run's metric points",
    {
        "after": whole("only points after this seq", 0, MAX_POSITION),
        "name": Query("only this metric"),
        "follow": flag("1: stream new points as JSON lines until the run ends"),
        "points": whole(
            "at most about this many points a metric, downsampled (each bucket keeps its "
            "first, lowest, highest and last point; the newest is always kept)",
            10,
            1_000_000,
        ),
    },
)
CREATE_EXPERIMENT = Route(
    "POST", "/v1/experiments", "create_experiment", "Start an experiment (a sweep of trials)"
)
LIST_EXPERIMENTS = Route(
    "GET",
    "/v1/experiments",
    "list_experiments",
    "Experiments, newest first",
    {"limit": whole("how many (default 50)", 1, MAX_LIMIT)},
)
SHOW_EXPERIMENT = Route(
    "GET",
    "/v1/experiments/{id}",
    "show_experiment",
    "An experiment, trials ranked best first",
    {"curves": flag("1: each trial's objective curve")},
)
HALT_EXPERIMENT = Route(
    "POST", "/v1/experiments/{id}/halt", "halt_experiment", "Halt every trial still running"
)
BUCKETS = Route("GET", "/v1/data", "data_buckets", "Buckets in the object store")
OBJECTS = Route(
    "GET",
    "/v1/data/{bucket}",
    "data_list",
    "Objects in a bucket (a name S3 refuses is mapped: README, bucket names)",
    {
        "prefix": Query("only keys under this prefix"),
        "recursive": flag("0: one level (default 1)"),
        "missing": Query(
            "empty: a bucket not there yet lists no objects instead of a 404",
            {"type": "string", "enum": ["empty"]},
        ),
    },
)
PUT_OBJECT = Route(
    "PUT", "/v1/data/{bucket}/{key:.+}", "data_put", "Upload one object (creates the bucket)"
)
GET_OBJECT = Route("GET", "/v1/data/{bucket}/{key:.+}", "data_get", "Download one object")
USAGE = Route(
    "GET",
    "/v1/usage",
    "usage",
    "Resources used by runs that ended in a period (yours; everyone's for root and the "
    "admin group)",
    {
        "since": Query("ended at or after: ISO 8601 date or time, or a duration ago (7d)"),
        "until": Query("ended before: ISO 8601 date or time, or a duration ago"),
        "by": Query(
            "group by (default owner)",
            {"type": "string", "enum": ["owner", "day", "experiment", "framework"]},
        ),
    },
)
DASHBOARD = Route(
    "GET",
    "/v1/dashboard",
    "dashboard",
    "Your URL of the web dashboard the daemon serves (config dashboard.address)",
)
PROMETHEUS = Route(
    "GET",
    "/v1/metrics",
    "prometheus_metrics",
    "The daemon's metrics for Prometheus (text exposition format)",
)
OPENAPI = Route("GET", "/v1/openapi.json", "openapi", "This document")

ROUTES: tuple[Route, ...] = (
    HEALTH,
    STATUS,
    GPUS,
    DOCTOR,
    SUBMIT,
    LIST_RUNS,
    SHOW_RUN,
    DELETE_RUN,
    HALT_RUN,
    SET_PRIORITY,
    LOGS,
    RESULTS,
    RESULT_FILE,
    DEFINITION,
    DEFINITION_FILE,
    METRICS,
    CREATE_EXPERIMENT,
    LIST_EXPERIMENTS,
    SHOW_EXPERIMENT,
    HALT_EXPERIMENT,
    BUCKETS,
    OBJECTS,
    PUT_OBJECT,
    GET_OBJECT,
    USAGE,
    DASHBOARD,
    PROMETHEUS,
    OPENAPI,
)
