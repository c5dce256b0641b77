"""The OpenAPI 3.1 document, built from the API's route table so the two cannot drift."""

from __future__ import annotations

import re

from . import __version__
from .codes import ERROR_CODES, STATUSES

_nullable_str = {"type": ["string", "null"]}
SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message"],
                "properties": {
                    "message": {"type": "string"},
                    "code": {"type": "string", "enum": sorted(ERROR_CODES)},
                    "problems": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Problem"},
                    },
                    "warnings": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "what submit would also have said about the manifest",
                    },
                },
            }
        },
    },
    "Problem": {
        "type": "object",
        "properties": {
            "field": {"type": "string", "description": "path such as framework.command"},
            "line": {"type": ["integer", "null"]},
            "message": {"type": "string"},
        },
    },
    "Run": {
        "type": "object",
        "required": ["id", "name", "status"],
        "properties": {
            "id": {"type": "string", "examples": ["training-a1b2c3d4e"]},
            "name": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "error_code": {"type": ["string", "null"], "enum": [*sorted(ERROR_CODES), None]},
            "status_message": {"type": "string"},
            "owner": _nullable_str,
            "owner_uid": {"type": "integer"},
            "gpus": {"type": "array", "items": {"type": "string"}, "description": "GPU UUIDs"},
            "cpus": {"type": "number"},
            "memory": {"type": "integer", "description": "bytes"},
            "exit_code": {"type": ["integer", "null"]},
            "submitted": _nullable_str,
            "started": _nullable_str,
            "completed": _nullable_str,
            "results": {"type": ["string", "null"], "description": "s3://bucket/prefix/"},
            "staging": {
                "type": "object",
                "properties": {
                    k: {"type": "number"}
                    for k in (
                        "bytes_downloaded",
                        "files_downloaded",
                        "cache_hits",
                        "download_seconds",
                        "bytes_uploaded",
                        "files_uploaded",
                        "upload_seconds",
                    )
                },
            },
            "buckets": {
                "type": "array",
                "description": "the run's buckets: the manifest's name and the store's",
                "items": {
                    "type": "object",
                    "properties": {
                        "use": {"type": "string", "enum": ["training data", "results"]},
                        "manifest": {"type": "string"},
                        "store": {"type": "string"},
                    },
                },
            },
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "what submit said about the manifest",
            },
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "time": {"type": "string"},
                        "status": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
}


def document(routes) -> dict:
    paths: dict[str, dict] = {}
    for r in routes:
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", r.path)
        op: dict = {
            "summary": r.summary,
            "operationId": r.handler.__name__ + "_" + r.method.lower(),
        }
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"\{(\w+)\}", path)
        ]
        params += [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": desc,
                "schema": {"type": "string"},
            }
            for n, desc in r.query.items()
        ]
        if params:
            op["parameters"] = params
        if r.body:
            kind = (
                "multipart/form-data"
                if r.body.startswith("multipart")
                else "application/octet-stream"
            )
            op["requestBody"] = {
                "description": r.body,
                "required": True,
                "content": {
                    kind: {
                        "schema": {"type": "object"}
                        if kind.startswith("multipart")
                        else {"type": "string", "format": "binary"}
                    }
                },
            }
        ok = "201" if r.method == "POST" and path == "/v1/runs" else "200"
        if r.returns == "application/json":
            schema = (
                {"$ref": "#/components/schemas/Run"}
                if path == "/v1/runs/{id}"
                else {"type": "object"}
            )
        else:
            schema = {"type": "string"}
        op["responses"] = {
            ok: {"description": "success", "content": {r.returns: {"schema": schema}}},
            "4XX": {
                "description": "refused; the body says why and how to fix it",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        }
        paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dlaasd",
            "version": __version__,
            "description": "Deep learning as a service on one machine, over a Unix socket.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
