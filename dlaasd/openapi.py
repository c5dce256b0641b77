"""The OpenAPI 3.1 document, built from the API's endpoints (their paths and query
parameters from the route table dlaasd shares with dlaasctl) so the two cannot drift.

Each route names its success status and body schema and the error statuses it can answer;
the fuzzing test (tests/test_api_fuzz.py) holds the daemon to what this says.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import __version__
from .codes import Code, Status

if TYPE_CHECKING:  # api imports this module
    from .api import Endpoint

# Why each error status is answered; a route lists the ones it can give.
ERRORS = {
    400: "the request is wrong; the body names the field and how to fix it",
    403: "the run or experiment belongs to another user",
    404: "no such run, experiment, file, bucket or object",
    409: "not now: the run is in a status that does not allow it",
    411: "the upload has no Content-Length",
    413: "the body is too large",
    503: "the object store or Docker is unavailable; retry later",
    507: "no space left: the state folder's disk (S304) or the store's (S303); the body says "
    "what to free",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: dict, optional: dict | None = None) -> dict:
    """An object that always has the `required` properties and may have the `optional`."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def _nullable(type_: str) -> dict:
    return {"type": [type_, "null"]}


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


_str, _int, _num, _bool = ({"type": t} for t in ("string", "integer", "number", "boolean"))
_time = {**_nullable("string"), "description": "UTC, ISO 8601"}
_status = {"type": "string", "enum": [s.value for s in Status]}
_error_code = {"type": ["string", "null"], "enum": [*sorted(c.value for c in Code), None]}

_run_summary = {
    "id": {"type": "string", "examples": ["training-a1b2c3d4e"]},
    "name": _str,
    "status": _status,
    "error_code": _error_code,
    "status_message": _str,
    "owner": _nullable("string"),
    "owner_uid": _nullable("integer"),
    "gpus": {**_array(_str), "description": "GPU UUIDs"},
    "cpus": _nullable("number"),
    "memory": {**_nullable("integer"), "description": "bytes"},
    "learners": _nullable("integer"),
    "framework": _nullable("string"),
    "image": _nullable("string"),
    "exit_code": _nullable("integer"),
    "submitted": _time,
    "started": _time,
    "completed": _time,
    "results": {**_nullable("string"), "description": "s3://bucket/prefix/"},
    "experiment_id": _nullable("string"),
    "priority": {**_int, "description": "higher starts first; FIFO within a priority"},
}
_staging = _object(
    {
        k: _num
        for k in (
            "bytes_downloaded",
            "files_downloaded",
            "cache_hits",
            "download_seconds",
            "bytes_uploaded",
            "files_uploaded",
            "upload_seconds",
        )
    }
)
_seconds = {"type": "number", "description": "seconds"}
_maybe_num = _nullable("number")
_usage_sums = {
    "gpu_seconds": _num,
    "cpu_seconds": _num,
    "memory_gib_seconds": _num,
    "cpu_used_seconds": _maybe_num,
    "waiting_seconds": _seconds,
    "staging_in_seconds": _seconds,
    "training_seconds": _seconds,
    "storing_seconds": _seconds,
}
_learner_usage = _object(
    {
        "learner": _int,
        "gpu_seconds": _num,
        "cpu_seconds": _num,
        "memory_gib_seconds": _num,
        "cpu_used_seconds": _maybe_num,
        "memory_peak_bytes": _nullable("integer"),
        "gpu_utilization": {**_maybe_num, "description": "percent, mean of NVML's samples"},
    }
)
_run_usage = _object(
    {
        **_usage_sums,
        "run_id": _str,
        "name": _str,
        "owner_uid": _int,
        "owner_name": _str,
        "experiment_id": _nullable("string"),
        "framework": _str,
        "status": _status,
        "error_code": _nullable("string"),
        "final": {**_bool, "description": "the run has ended: the figures no longer change"},
        "gpus": _int,
        "cpus": _num,
        "memory": _int,
        "submitted": _time,
        "allocated": _time,
        "ended": _time,
        "allocated_seconds": _seconds,
        "memory_peak_bytes": _nullable("integer"),
        "gpu_utilization": _maybe_num,
        "bytes_staged_in": {**_int, "description": "training data downloaded"},
        "bytes_staged_out": {**_int, "description": "results and logs uploaded"},
        "learners": _array(_learner_usage),
    }
)
_usage_line = _object({"key": _str, "runs": _int, **_usage_sums})
_experiment_summary = {
    "id": {"type": "string", "examples": ["experiment-a1b2c3d4e"]},
    "name": _str,
    "description": _nullable("string"),
    "status": _status,
    "owner": _nullable("string"),
    "objective": _object(
        {"name": _str, "goal": {"enum": ["maximize", "minimize"]}, "metric": _nullable("string")}
    ),
    "method": _str,
    "trials": _int,
    "counts": {"type": "object", "additionalProperties": _int, "description": "by status"},
    "best_run": _nullable("string"),
    "best_hyperparameters": _nullable("object"),
    "best_value": _nullable("number"),
    "submitted": _time,
    "completed": _time,
}
_trial = _object(
    {
        "id": _str,
        "status": _status,
        "error_code": _error_code,
        "status_message": _str,
        "hyperparameters": {"type": "object"},
        "objective_value": _nullable("number"),
        "last_step": _nullable("integer"),
        "halted_early": _bool,
    },
    {"curve": {**_array(_array(_num)), "description": "[step, value] pairs"}},
)

SCHEMAS = {
    "Error": _object(
        {
            "error": _object(
                {"message": _str},
                {
                    "code": {"type": "string", "enum": sorted(c.value for c in Code)},
                    "problems": _array(_ref("Problem")),
                    "warnings": {
                        **_array(_str),
                        "description": "what submit would also have said about the manifest",
                    },
                },
            )
        }
    ),
    "Problem": _object(
        {
            "field": {"type": "string", "description": "path such as framework.command"},
            "line": _nullable("integer"),
            "message": _str,
        }
    ),
    "Health": _object({"status": {"const": "ok"}}),
    "Status": _object(
        {
            "version": _str,
            "pid": _int,
            "uptime_seconds": _num,
            "state_dir": _str,
            "socket": _str,
            "drop_dir": _str,
            "docker": _object({"ok": _bool, "detail": _str}),
            "disk": _object(
                {
                    "ok": _bool,
                    "free": {**_int, "description": "bytes"},
                    "reserve_held": _bool,
                    "detail": _str,
                }
            ),
            "store": _object(
                {
                    "mode": {"enum": ["bundled", "external"]},
                    "endpoint": _str,
                    "ok": _bool,
                    "detail": _str,
                },
                {"pid": _nullable("integer"), "restarts": _int},
            ),
            "gpus": _object(
                {"source": _str, "count": _int, "driver": _str, "error": _str},
            ),
            "capacity": _object(
                {
                    "cpus": _num,
                    "memory": _int,
                    "cpus_used": _num,
                    "memory_used": _int,
                    "gpus_used": _int,
                }
            ),
            "runs": {"type": "object", "additionalProperties": _int, "description": "by status"},
        }
    ),
    "Doctor": _object(
        {
            "checks": _array(
                _object(
                    {
                        "name": _str,
                        "status": {"enum": ["ok", "warn", "fail"]},
                        "detail": _str,
                        "fix": _str,
                    }
                )
            )
        }
    ),
    "Gpus": _object(
        {
            "gpus": _array(
                _object(
                    {
                        "index": _int,
                        "uuid": _str,
                        "name": _str,
                        "memory_total": _int,
                        "memory_used": _int,
                        "processes": _array(_int),
                        "simulated": _bool,
                        "run": {**_nullable("string"), "description": "the run holding it"},
                        "busy": _bool,
                    }
                )
            )
        }
    ),
    "Submitted": _object(
        {"id": _str, "status": {"const": "QUEUED"}, "warnings": _array(_str)},
    ),
    "RunSummary": _object(_run_summary),
    "Run": _object(
        {
            **_run_summary,
            "staging": _staging,
            "description": _nullable("string"),
            "hyperparameters": _nullable("object"),
            "manifest": {"type": "string", "description": "manifest.yml as submitted"},
            "buckets": {
                **_array(
                    _object(
                        {
                            "use": {"enum": ["training data", "results"]},
                            "manifest": _str,
                            "store": _str,
                        }
                    )
                ),
                "description": "the run's buckets: the manifest's name and the store's",
            },
            "warnings": {**_array(_str), "description": "what submit said about the manifest"},
            "history": _array(_object({"time": _str, "status": _str, "message": _str})),
            "usage": {
                **_run_usage,
                "description": "allocated from allocation to results stored, per phase",
            },
        }
    ),
    "DashboardUrl": _object(
        {"url": {**_str, "description": "with the caller's token"}, "user": _str}
    ),
    "Usage": _object(
        {
            "since": _time,
            "until": _time,
            "by": {"enum": ["owner", "day", "experiment", "framework"]},
            "everyone": {**_bool, "description": "every user's runs (root, admin group)"},
            "groups": _array(_usage_line),
            "total": _usage_line,
            "runs": _array(_run_usage),
        }
    ),
    "RunList": _object(
        {"runs": _array(_ref("RunSummary")), "total": _int, "limit": _int, "offset": _int}
    ),
    "Deleted": _object({"id": _str, "deleted": {"const": True}, "objects_removed": _int}),
    "Files": _object(
        {
            "id": _str,
            "location": {"type": "string", "description": "s3://bucket/prefix/ or a folder"},
            "files": _array(
                _object({"path": _str, "size": _int, "source": {"enum": ["store", "local"]}})
            ),
        }
    ),
    "MetricPoint": _object(
        {
            "seq": {"type": "integer", "description": "pass as `after` to get only newer"},
            "step": _nullable("integer"),
            "name": _str,
            "value": _num,
            "time": _nullable("string"),
        }
    ),
    "Metrics": _object({"id": _str, "status": _status, "points": _array(_ref("MetricPoint"))}),
    "ExperimentCreated": _object(
        {"id": _str, "trials": _int, "runs": _array(_str), "warnings": _array(_str)}
    ),
    "ExperimentSummary": _object(_experiment_summary),
    "Experiment": _object({**_experiment_summary, "runs": _array(_trial)}),
    "ExperimentList": _object({"experiments": _array(_ref("ExperimentSummary"))}),
    "Buckets": _object({"buckets": _array(_object({"name": _str, "created": _time}))}),
    "Objects": _object(
        {
            "bucket": _str,
            "prefix": _str,
            "objects": _array(
                _object({"key": _str, "size": _int, "etag": _str, "modified": _time, "dir": _bool})
            ),
            "part_size": {"type": "integer", "description": "the part size of uploads' ETags"},
            "exists": _bool,
            "warnings": {**_array(_str), "description": "the bucket's name was mapped"},
        }
    ),
    "Uploaded": _object(
        {"bucket": _str, "key": _str, "size": _int, "etag": _str, "warnings": _array(_str)}
    ),
    "OpenAPI": _object({"openapi": _str, "info": {"type": "object"}, "paths": {"type": "object"}}),
}


def _body(body: str, texts: tuple[str, ...]) -> dict:
    if body.startswith("multipart"):
        parts = {name: {"type": "string"} for name in texts}
        parts["model"] = {"type": "string", "contentMediaType": "application/zip"}
        schema = {"type": "object", "properties": parts, "required": [texts[0]]}
        kind = "multipart/form-data"
    else:
        schema, kind = {"type": "string", "format": "binary"}, "application/octet-stream"
    return {"description": body, "required": True, "content": {kind: {"schema": schema}}}


def _success(route: Endpoint) -> dict:
    if route.schema:
        content = {"application/json": {"schema": _ref(route.schema)}}
        if route.streams:  # follow=1 streams the same records as JSON lines
            content["application/x-ndjson"] = {"schema": {"type": "string"}}
    else:
        content = {route.returns: {"schema": {"type": "string"}}}
    return {"description": "success", "content": content}


def document(endpoints: Iterable[Endpoint]) -> dict:
    paths: dict[str, dict] = {}
    for e in endpoints:
        r = e.route  # method, path and query parameters: the table dlaasctl shares
        op: dict = {"summary": r.summary, "operationId": r.name}
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in r.path_params
        ]
        params += [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": q.description,
                "schema": q.schema,
            }
            for n, q in r.query.items()
        ]
        if params:
            op["parameters"] = params
        if e.body:
            op["requestBody"] = _body(e.body, e.parts)
        error = {"application/json": {"schema": _ref("Error")}}
        op["responses"] = {
            str(e.ok): _success(e),
            **{str(s): {"description": ERRORS[s], "content": error} for s in sorted(e.errors)},
        }
        paths.setdefault(r.template, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dlaasd",
            "version": __version__,
            "description": "Deep learning as a service on one machine, over a Unix socket. "
            "Every error is JSON (components/schemas/Error); a method a path does not "
            "have answers 405, an unknown path 404.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
